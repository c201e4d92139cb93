"""
A chat dataset on the Hugging Face Hub becomes a chat source (prepare/chat.py: rendered with the model directory's
chat template, loss-masked, packed into windows of block_size + 1 tokens). The default is the replay source of the
paper's chat result, OpenHermes-2.5 (teknium/OpenHermes-2.5, ShareGPT `conversations`), streamed:

    python prepare/hub_chat.py --tokenizer DIR --block_size 2048 --max_tokens 64M --out data/openhermes
    python prepare/hub_chat.py --dataset HuggingFaceH4/ultrachat_200k --split train_sft --val_split test_sft \\
        --tokenizer DIR --block_size 2048 --out data/ultrachat                      # `messages` records

DIR is a model directory with a tokenizer.json and a chat template (e.g. from `hf download
meta-llama/Llama-3.1-8B-Instruct --local-dir DIR`). OpenHermes-2.5 has no validation split: val is the first
conversations of the stream. Its revision is not pinned here (no commit of it was at hand offline): meta.json
records the revision asked for (main by default); pass --revision COMMIT for a reproducible source.
"""
import os
import sys

import chat
from common import EMPTY_VAL_SPLIT, UserError, base_parser, removed_on_failure, run_main
from hub import hub_error, import_datasets

DATASET, REVISION, SPLIT = 'teknium/OpenHermes-2.5', 'main', 'train'


def hub_records(path, split, load):
    """(where, record) of a Hub dataset split, streamed; Hub failures as one-line errors (hub_error)."""
    try:
        stream = import_datasets().load_dataset(path, split=split, streaming=True, **load)
        for index, record in enumerate(stream):
            yield f'{path} ({split}) row {index}', record
    except UserError:
        raise
    except Exception as e:
        err = hub_error(e, path, None)
        if err is None:
            raise
        raise err from None


def with_a_val_example(records, args):
    """The --val_split stream, refused at its end where it held no example with a loss token (val.bin would be
    empty). Records are encoded here only until the first one with a loss token: a good split costs one."""
    loaded, found, count = None, False, 0
    for where, record in records:
        count += 1
        if not found:
            loaded = loaded or chat.chat_templates.load_chat(args.tokenizer, args.chat_template, args.date,
                                                             args.end_of_turn)
            _, mask, _ = next(chat.encode_examples([(where, record)], loaded, args.block_size, args.loss_on,
                                                   args.messages_field))
            found = bool(mask.any())
        yield where, record
    if not found:
        what = (f'examples (--val_split {args.val_split} of {args.dataset} is empty)' if not count else
                f'example with a loss token under --loss_on={args.loss_on} (none of the {count:,} of --val_split '
                f'{args.val_split} has one)')
        raise UserError(EMPTY_VAL_SPLIT.format(what=what, change='pass another --val_split, or leave it out to hold '
                                                                 'val out of the start of --split'))


def main(argv):
    p = base_parser(__doc__, tokenizer=None, max_tokens='0', out=os.path.join('data', 'openhermes'))
    p.add_argument('--dataset', default=DATASET, help='Hub dataset id (default: %(default)s)')
    p.add_argument('--config', default=None, help='dataset config (default: none)')
    p.add_argument('--revision', default=REVISION, help='commit, tag or branch (default: %(default)s)')
    p.add_argument('--data_dir', default=None, help='directory inside the dataset (default: none)')
    p.add_argument('--split', default=SPLIT, help='the split to read (default: %(default)s)')
    p.add_argument('--val_split', default=None,
                   help='a validation split to take val from (default: none, val is the start of --split)')
    p.add_argument('--block_size', type=int, required=True,
                   help='the block_size train.py will use; windows are block_size + 1 tokens')
    p.add_argument('--loss_on', choices=chat.chat_templates.LOSS_ON, default='assistant',
                   help="which tokens are labels: every assistant turn's (default), the last one's, or all")
    p.add_argument('--messages_field', default='messages',
                   help='the field with the turns (default: messages; records with "conversations" are ShareGPT)')
    p.add_argument('--chat_template', default=None, rule='an existing file',
                   help="a jinja file to use instead of the model directory's chat template")
    p.add_argument('--date', default=chat.chat_templates.CHAT_DATE,
                   help="the date the template's strftime_now sees (default: %(default)s)")
    p.add_argument('--end_of_turn', default=None,
                   help='the token that ends an assistant turn (default: found from the template)')
    argv = sys.argv[1:] if argv is None else argv
    args = p.parse_args(argv)
    if not args.dataset.strip():
        raise UserError(f'--dataset is empty: give a Hub dataset id (default: {DATASET})')
    if not args.tokenizer:
        raise UserError('--tokenizer=MODEL_DIR is required: the model directory whose chat template and '
                        'tokenizer.json render the conversations')
    if args.val_split == args.split:
        raise UserError(f'--val_split {args.val_split} is --split itself: its conversations would be in val and in '
                        f'train; pass another validation split, or leave --val_split out to hold val out of the '
                        f'start of --split')
    load = {k: v for k, v in dict(name=args.config, revision=args.revision, data_dir=args.data_dir).items()
            if v is not None}
    source = dict(hub=args.dataset, config=args.config, revision=args.revision, data_dir=args.data_dir,
                  split=args.split, val_split=args.val_split, messages_field=args.messages_field)
    val_records = with_a_val_example(hub_records(args.dataset, args.val_split, load), args) if args.val_split \
        else None
    with removed_on_failure(args.out):
        return chat.prepare_chat_source(
            hub_records(args.dataset, args.split, load), args.out, source, __file__, argv, args.tokenizer,
            args.block_size, loss_on=args.loss_on, messages_field=args.messages_field,
            chat_template=args.chat_template, date=args.date, end_of_turn=args.end_of_turn,
            max_tokens=args.max_tokens, val_tokens=args.val_tokens, force=args.force, val_records=val_records)


if __name__ == '__main__':
    run_main(main)
