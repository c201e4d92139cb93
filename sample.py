"""
sample.py: text from a checkpoint, decoded with the tokenizer its data was prepared with (the checkpoint's record
of it): gpt2, bytes, or a model directory's tokenizer.json. The samples are drawn together, one batch, with the
model's KV cache (temperature and top-k sampling; --temperature=0 is greedy).

    python sample.py out/tiny --start="def " --num_samples=2 --max_new_tokens=200
    python sample.py out/tiny/ckpt_20.pt --start=FILE:prompt.txt --temperature=0.8 --top_k=50
    python sample.py out/chat --chat --start="What is replay?"   (a chat model: --start is the user's message,
        rendered with the tokenizer directory's chat template and its generation prompt; prints the reply)

The run directory (its newest checkpoint) or a checkpoint comes first; --out_dir=RUN and --ckpt=PATH name it too
(nanoGPT's habit; default: out). Options: --key=value or --key value (--help lists them).
"""
import os

import numpy as np
import torch

import chat_template
import checkpoint
import layout
import runtime
from configurator import UserError, check_rule, parse_options, run_main
from generate import generate
from model import checkpoint_model_config
from tokenizer import get_tokenizer

OPTIONS = dict(
    out_dir='out',          # the run whose newest checkpoint to read (or give it first, without --out_dir)
    ckpt='',                # or an explicit checkpoint (a file, or a sharded ckpt*.dcp directory)
    start='\n',             # the prompt, or FILE:path to read it from a file
    num_samples=2,
    max_new_tokens=200,
    temperature=0.8,        # < 1 sharpens, > 1 flattens the distribution
    top_k=200,              # keep only the k likeliest tokens (0 = all)
    seed=1337,
    device='auto',
    tokenizer='',           # override the run's tokenizer: 'gpt2', 'bytes' or a model directory with tokenizer.json
    chat=False,             # --start is a user message: render it with the chat template, print the reply
)
RULES = dict(num_samples='at least 1', max_new_tokens='at least 1', temperature='0 or more',
             top_k='0 or more', seed='a whole number from 0 to 2**64 - 1', device='a torch device',
             source='a checkpoint', ckpt='a checkpoint')
USAGE = "python sample.py [RUN_DIR_OR_CHECKPOINT] [--start=TEXT] [--num_samples=N] [--max_new_tokens=N]"


def tokenizer_name(saved):
    """The tokenizer the run's data was prepared with, as the checkpoint records it: a model directory, else its name
    (checkpoints older than tokenizer_meta record the name alone)."""
    recorded = saved.get('tokenizer_meta') or {}
    name = recorded.get('tokenizer_path') or recorded.get('tokenizer') or saved['tokenizer']
    if not name:
        raise UserError("the checkpoint does not record the tokenizer of its data (its meta.json named none): pass "
                        "--tokenizer=gpt2, --tokenizer=bytes or --tokenizer=MODEL_DIR")
    return name


def main(argv):
    options = parse_options(argv, OPTIONS, positional=['source?'], usage=USAGE, rules=RULES, doc=__doc__)
    given = [options[k] for k in ('source', 'ckpt') if options[k]] + ([options['out_dir']] if any(
        a == '--out_dir' or a.startswith('--out_dir=') for a in argv) else [])
    if len(given) > 1:
        raise UserError(f"the checkpoint is named twice ({', '.join(given)}): give the run or checkpoint once")
    source = given[0] if given else options['out_dir']
    check_rule('out_dir', source, 'a checkpoint')  # the default 'out' too, once no other source is given
    path = layout.checkpoint_at(source)
    if not os.path.exists(path):
        raise UserError(f"checkpoint {path} not found: train first or pass --ckpt=PATH")
    saved = checkpoint.load_checkpoint(path, weights=True)  # a corrupt one is one error line; loading runs no code
    device = runtime.pick_device(options['device'])
    model_config = checkpoint_model_config(saved)

    name = options['tokenizer'] or tokenizer_name(saved)
    if name not in ('gpt2', 'bytes') and not os.path.isdir(name):
        raise UserError(f"tokenizer {name!r} of the run cannot be decoded here: pass --tokenizer=gpt2, bytes or a "
                        f"model directory with its tokenizer.json")
    tokenizer = get_tokenizer(name)
    if tokenizer['vocab_size'] > model_config.vocab_size:  # its ids past the model's would index no embedding
        raise UserError(f"tokenizer {name!r} has {tokenizer['vocab_size']} tokens, more than the "
                        f"{model_config.vocab_size} of the model in {path}: pass the tokenizer it was trained with "
                        f"(--tokenizer=gpt2, bytes or a model directory; default: the run's own)")
    start = options['start']
    if start.startswith('FILE:'):
        try:
            with open(start[5:], encoding='utf-8') as f:
                start = f.read()
        except OSError as e:
            raise UserError(f"cannot read the prompt file {start[5:]}: {e.strerror}") from None
        except UnicodeDecodeError as e:
            raise UserError(f"cannot read the prompt file {start[5:]}: not UTF-8 text ({e.reason} at byte "
                            f"{e.start})") from None
    if options['chat']:
        ids, stop = chat_prompt(name, start, saved)
    else:
        ids, _ = tokenizer['encode']([start])
        ids = ids[:-1]  # drop the end-of-text that ends every encoded document (a BOS in front stays)
        if len(ids) == 0:
            raise UserError(f"--start={start!r} is no tokens in the {name} tokenizer (it adds no BOS): give a "
                            f"prompt, e.g. the default --start='\\n'")
    model = runtime.build_model(model_config, device, options['seed'], saved['model']).eval()
    prompt = torch.tensor(ids.astype('int64'), device=device)[None]
    torch.manual_seed(options['seed'])
    # every sample in one batch, decoded with the KV cache (generate.generate_rows)
    out = generate(model, prompt.expand(options['num_samples'], -1), options['max_new_tokens'],
                   temperature=options['temperature'], top_k=options['top_k'] or None)
    for row in out.tolist():
        if options['chat']:  # the reply alone, up to its end of turn
            reply = row[prompt.shape[1]:]
            row = reply[:next((i for i, token in enumerate(reply) if token in stop), len(reply))]
        print(tokenizer['decode'](row))
        print('---------------')


def chat_prompt(model_dir, message, saved):
    """The ids of a user message rendered with the generation prompt (chat_template.py: as transformers renders it;
    special tokens as the template writes them, none added again), and the ids that end the reply: the template's
    end-of-turn token and end-of-sequence."""
    if not os.path.isdir(model_dir):
        raise UserError(f"--chat needs a tokenizer model directory with a chat template; the run's tokenizer is "
                        f"{model_dir!r}: pass --tokenizer=MODEL_DIR")
    chat = chat_template.load_chat(model_dir)
    text, _ = chat_template.render_chat(chat, [dict(role='user', content=message)], add_generation_prompt=True,
                                        where='--start')
    tok = chat['tokenizer']
    stop = {chat['eot_token']} | ({tok.token_to_id(chat['end_of_turn'])} if chat['end_of_turn'] else set())
    return np.array(tok.encode(text, add_special_tokens=False).ids), stop


if __name__ == '__main__':
    run_main(main)
