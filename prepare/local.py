"""
Any corpus on disk becomes a source. Inputs are files, globs or directories, read in the order given (each glob or
directory sorted) through the `datasets` builders, streaming (nothing is cached or copied):

    .txt .text .md           "text" builder: one document per file, or per blank-line-separated block
                             with --split_paragraphs
    .jsonl .ndjson .json     "json" builder: one object per line, or a JSON array; --text_field names the text
    .parquet                 "parquet" builder: --text_field names the column
    any of them + .gz .bz2 .xz (except .parquet)

Invalid UTF-8 bytes are replaced by U+FFFD and counted. Examples:

    python prepare/local.py --input corpus.jsonl --text_field text --out data/mycorpus
    python prepare/local.py --input 'books/*.txt' --split_paragraphs --tokenizer bytes --out data/books
    python prepare/local.py --input dolma/c4 --max_tokens 4.3B --out data/c4     # a directory

--format=chat: the records are conversations (JSON lines, JSON arrays or parquet; `messages` with role/content, or
ShareGPT `conversations` with from/value), rendered with the model directory's chat template, masked and packed
into windows of block_size + 1 tokens (prepare/chat.py says how):

    python prepare/local.py --format=chat --input chats.jsonl --tokenizer models/tiny-llama --block_size 256 \
        --out data/mychat [--loss_on assistant|last_assistant|all] [--messages_field NAME] [--chat_template FILE]
"""
import bz2
import codecs
import concurrent.futures
import glob
import gzip
import itertools
import json
import logging
import lzma
import os
import sys

from tqdm import tqdm

import chat
from common import (INVALID_UTF8, UserError, base_parser, decode_utf8, ignore_sigint, prepare_source,
                    removed_on_failure, run_main, warn)
from hub import dataset_texts, import_datasets
from configurator import is_inside  # the repository root is on sys.path: common.py

BUILDERS = {'.txt': 'text', '.text': 'text', '.md': 'text', '.jsonl': 'json', '.ndjson': 'json', '.json': 'json',
            '.parquet': 'parquet'}
OPENERS = {'.gz': gzip.open, '.bz2': bz2.open, '.xz': lzma.open}


def split_name(path):
    """'a/b.jsonl.gz' -> ('json', gzip.open); (None, None) for a file type we do not read."""
    stem, ext = os.path.splitext(path.lower())
    opener = OPENERS.get(ext)
    if opener is not None:
        stem, ext = os.path.splitext(stem)
    builder = BUILDERS.get(ext)
    if builder == 'parquet' and opener is not None:
        return None, None  # parquet compresses inside the file
    return builder, opener or open


def expand_inputs(patterns, out):
    """Files named by --input, in order: globs and directories sorted, duplicates dropped; clear errors. `out` may
    not be inside an input directory, nor hold an input: a re-run would read the output (meta.json, ...) as input."""
    files, seen = [], {}
    for pattern in patterns:
        if os.path.isdir(pattern):
            if is_inside(out, pattern):
                raise UserError(f'--out {out} is inside --input {pattern}: a re-run would read the output as input; '
                                f'choose an --out outside it')
            found = sorted(os.path.join(root, f) for root, _, names in os.walk(pattern) for f in names
                           if split_name(f)[0])
            if not found:
                raise UserError(f'{pattern} is a directory with no .txt/.jsonl/.json/.parquet files in it')
        elif any(c in pattern for c in '*?['):
            found = sorted(f for f in glob.glob(pattern, recursive=True) if os.path.isfile(f))
            if not found:
                raise UserError(f"no file matches --input '{pattern}'")
        elif os.path.isfile(pattern):
            found = [pattern]
        else:
            raise UserError(f'{pattern}: no such file')
        for f in found:  # one file under two spellings (a/../a, a symbolic link) is read once, as the first
            real = os.path.realpath(f)
            if real not in seen:
                seen[real] = f
                files.append(f)
            elif seen[real] != f:
                warn(f'--input {f} is the same file as {seen[real]}: read once')
    for f in files:
        if is_inside(f, out):
            raise UserError(f'--input {f} is inside --out {out}: the output would replace its own input; choose '
                            f'another --out')
        if not os.path.isfile(f):  # os.walk lists a broken symbolic link as a name
            raise UserError(f'{f} is a broken symbolic link (or not a regular file): fix or remove it')
        if split_name(f)[0] is None:
            raise UserError(f'{f}: unknown file type; use .txt, .jsonl, .json or .parquet (optionally .gz/.bz2/.xz), '
                            f'or convert it to one of those')
        if os.path.getsize(f) == 0:
            raise UserError(f'{f} is empty')
    return files


def count_invalid_utf8(path, opener=open, chunk=1 << 24):
    """Invalid UTF-8 sequences in a (possibly compressed) file, read in chunks through common's counting error
    handler; also its decoded size in bytes."""
    decoder, before, size = codecs.getincrementaldecoder('utf-8')('prepare.count'), INVALID_UTF8[0], 0
    with opener(path, 'rb') as f:
        while True:
            block = f.read(chunk)
            size += len(block)
            decoder.decode(block, final=not block)
            if not block:
                return INVALID_UTF8[0] - before, size


READ_ERRORS = (OSError, EOFError, lzma.LZMAError)  # a corrupt or truncated file, compressed or not


def cannot_read(path, e):
    return f'{path} cannot be read ({e})'


class TooDeep(ValueError):
    pass


def parse_json(text):
    """json.loads, with nesting too deep for Python's parser (a RecursionError) as invalid JSON."""
    try:
        return json.loads(text)
    except RecursionError:
        raise TooDeep('nested too deeply') from None


def check_file(path, text_field):
    """(invalid UTF-8 sequences, error or None) for one input, from its raw bytes: the builders replace invalid
    bytes but cannot count them, and they report a missing field without naming the file."""
    builder, opener = split_name(path)
    if builder == 'parquet':
        import pyarrow.parquet as pq
        try:
            meta = pq.read_metadata(path)
        except Exception as e:
            return 0, f'{path} is not a readable parquet file ({e})'
        names = meta.schema.to_arrow_schema().names
        if text_field not in names:
            return 0, f"{path} has no column '{text_field}' (columns: {', '.join(names)}); pass --text_field NAME"
        return 0, (f'{path} has no rows' if meta.num_rows == 0 else None)
    try:
        invalid, size = count_invalid_utf8(path, opener)
    except READ_ERRORS as e:
        return 0, cannot_read(path, e)
    if size == 0:
        return 0, f'{path} is empty'
    if builder == 'json':
        with opener(path, 'rt', encoding='utf-8', errors='replace') as f:
            first = next((line for line in f if line.strip()), '')
        try:
            record = parse_json(first)
        except TooDeep as e:  # pyarrow's JSON reader crashes on such a line (a segmentation fault): refused here
            return invalid, f'{path} is not valid JSON (its first record is {e})'
        except ValueError:
            record = None  # a JSON array or a pretty-printed file: the field is checked while reading
        if isinstance(record, dict) and text_field not in record:
            return invalid, (f"{path} has no field '{text_field}' in its first record (fields: "
                             f"{', '.join(record)}); pass --text_field NAME")
    return invalid, None


def check_files(files, text_field, workers):
    """check_file over all inputs, in parallel processes (it reads every byte); {path: invalid count}."""
    results = []
    with tqdm(total=len(files), unit='file', desc='checking inputs', file=sys.stderr, mininterval=0.5) as bar:
        if workers > 1 and len(files) > 1:
            with concurrent.futures.ProcessPoolExecutor(min(workers, len(files)), initializer=ignore_sigint) as pool:
                for result in pool.map(check_file, files, itertools.repeat(text_field)):
                    results.append(result)
                    bar.update(1)
        else:
            for f in files:
                results.append(check_file(f, text_field))
                bar.update(1)
    for invalid, error in results:
        if error:
            raise UserError(error)
    return {f: invalid for f, (invalid, _) in zip(files, results) if invalid}


def input_bytes(files):
    """The inputs' bytes where they are about the size of their text (uncompressed text and JSON files; JSON's
    markup makes it somewhat larger), for prepare's ETA; None where it is unknown (compressed files, parquet)."""
    known = all(split_name(f) in (('text', open), ('json', open)) for f in files)
    return sum(os.path.getsize(f) for f in files) if known else None


def local_documents(files, text_field, split_paragraphs, replace_json):
    """Documents of the files, through the datasets builders, consecutive files of one type in one stream."""
    datasets = import_datasets()
    # its error about a line that is no JSON object comes back as our one-line error: not a log line before it
    logging.getLogger('datasets.packaged_modules.json.json').setLevel(logging.CRITICAL)
    for builder, group in itertools.groupby(files, key=lambda f: split_name(f)[0]):
        group = [os.path.abspath(f) for f in group]
        named = os.path.relpath(group[0]) + (f' (and {len(group) - 1} more)' if len(group) > 1 else '')
        field, kwargs = text_field, {}
        if builder == 'text':
            field = 'text'  # the text builder's one column
            kwargs = dict(sample_by='paragraph' if split_paragraphs else 'document', encoding_errors='replace')
        elif builder == 'json' and replace_json:
            # The json builder applies encoding_errors only when the encoding is not spelled 'utf-8'; 'utf-8-sig'
            # is UTF-8 too (and drops a byte-order mark), so this makes it replace invalid bytes instead of failing.
            kwargs = dict(encoding='utf-8-sig', encoding_errors='replace')
        elif builder == 'parquet':
            kwargs = dict(columns=[text_field])
        yield from dataset_texts(
            lambda: datasets.load_dataset(builder, data_files=group, split='train', streaming=True, **kwargs),
            field, named, lambda e: UserError(f"could not read {named} with the datasets '{builder}' builder "
                                              f'({type(e).__name__}: {" ".join(str(e).split())[:300]})'))


def json_records(path, opener, report):
    """(where, record) of a JSON lines file (read line by line) or a JSON array (read whole), told apart by the
    first character, as parsed by json; where is path:line or path[index]. A UTF-8 byte-order mark in front is
    dropped (as utf-8-sig does); invalid UTF-8 is replaced, counted; a corrupt compressed file is one line."""
    try:
        yield from _json_records(path, opener, report)
    except READ_ERRORS as e:
        raise UserError(cannot_read(path, e)) from None


def _json_records(path, opener, report):
    def decoded(raw):
        text, invalid = decode_utf8(raw)
        report['utf8_replaced'] = report.get('utf8_replaced', 0) + invalid
        return text

    with opener(path, 'rb') as f:
        head = f.read(1 << 16)
        bom = len(codecs.BOM_UTF8) if head.startswith(codecs.BOM_UTF8) else 0
        if head[bom:].lstrip().startswith(b'['):
            try:
                records = parse_json(decoded((head + f.read())[bom:]))
            except ValueError as e:
                raise UserError(f'{path} is not valid JSON ({e})') from None
            yield from ((f'{path}[{i}]', r) for i, r in enumerate(records))
            return
        f.seek(0)
        first = True
        for number, raw in enumerate(f, 1):
            line = decoded(raw[bom:] if number == 1 else raw)
            if not line.strip():
                continue
            try:
                record = parse_json(line)
            except ValueError as e:
                # a first line like "{" that the parser ran out of: a pretty-printed document, not JSON Lines
                spread = first and line.lstrip().startswith('{') and getattr(e, 'pos', 0) >= len(line.rstrip())
                hint = (': the file looks like one JSON document spread over several lines, but a JSON input must '
                        'have one JSON object per line (JSON Lines), or be a JSON array') if spread else ''
                raise UserError(f'{path}:{number} is not valid JSON ({e}){hint}') from None
            first = False
            yield f'{path}:{number}', record


def parquet_records(path):
    """(where, record) of a parquet file's rows, as pyarrow gives them (nested fields as lists and dicts)."""
    import pyarrow.parquet as pq
    try:
        rows = pq.ParquetFile(path)
    except Exception as e:
        raise UserError(f'{path} is not a readable parquet file ({e})') from None
    index = 0
    for batch in rows.iter_batches(batch_size=256):
        for record in batch.to_pylist():
            yield f'{path} row {index}', record
            index += 1


def chat_records(files, report):
    """Every input file's records, in order."""
    for path in files:
        builder, opener = split_name(path)
        if builder == 'text':
            raise UserError(f'{path}: --format=chat reads conversations from .jsonl/.json/.parquet files, not text')
        yield from parquet_records(path) if builder == 'parquet' else json_records(path, opener, report)


CHAT_ONLY = ('block_size', 'loss_on', 'messages_field', 'chat_template', 'date', 'end_of_turn')


def main(argv):
    p = base_parser(__doc__)
    p.add_argument('--input', nargs='+', action='extend', required=True,
                   help='files, globs (quote them) or directories, several after one --input or --input repeated; '
                        'all are read, in order')
    p.add_argument('--out', required=True, help='output directory, e.g. data/mycorpus')
    p.add_argument('--text_field', default='text', help='JSON field / parquet column with the text (default: text)')
    p.add_argument('--split_paragraphs', action='store_true',
                   help='.txt: one document per blank-line-separated block instead of one per file')
    p.add_argument('--format', choices=['text', 'chat'], default='text',
                   help='text: documents (default); chat: conversations, packed with loss masks (see above; '
                        'rendered in one process, --workers does not apply)')
    p.add_argument('--block_size', type=int, default=None,
                   help='chat: the block_size train.py will use; windows are block_size + 1 tokens')
    p.add_argument('--loss_on', choices=chat.chat_templates.LOSS_ON, default=None,
                   help="chat: which tokens are labels: every assistant turn's (default), the last assistant "
                        "turn's, or all")
    p.add_argument('--messages_field', default=None, help='chat: the field with the turns (default: messages; '
                                                          'records with "conversations" instead are ShareGPT)')
    p.add_argument('--chat_template', default=None, rule='an existing file',
                   help="chat: a jinja file to use instead of the model directory's chat template")
    p.add_argument('--date', default=None, help=f"chat: the date the template's strftime_now sees (default: "
                                                f"{chat.chat_templates.CHAT_DATE})")
    p.add_argument('--end_of_turn', default=None,
                   help="chat: the token that ends an assistant turn (default: found from the template)")
    args = p.parse_args(argv)
    given = [f'--{k}' for k in CHAT_ONLY if getattr(args, k) is not None]
    if args.format == 'text' and given:
        raise UserError(f"{', '.join(given)} only apply with --format=chat")
    if args.format == 'chat':
        return chat_main(args, argv)
    files = expand_inputs(args.input, args.out)
    # What the output depends on: the files as they are now (a changed file is a new source) and the options.
    source = dict(files=[dict(path=os.path.abspath(f), bytes=os.path.getsize(f), mtime_ns=os.stat(f).st_mtime_ns)
                         for f in files], text_field=args.text_field, split_paragraphs=args.split_paragraphs)
    report = dict(notes=[])

    def documents():  # checked lazily, so a re-run with nothing to do reads no input
        invalid = check_files(files, args.text_field, args.workers)
        report.update(utf8_replaced=sum(invalid.values()), input_bytes=input_bytes(files))
        if invalid:
            report['notes'].append(f'replaced {sum(invalid.values()):,} invalid UTF-8 sequence(s) with U+FFFD in '
                                   f'{len(invalid)} file(s): ' + ', '.join(f'{f} ({n})' for f, n in
                                                                            list(invalid.items())[:5]))
        replace_json = any(split_name(f)[0] == 'json' for f in invalid)
        yield from local_documents(files, args.text_field, args.split_paragraphs, replace_json)

    prepare_source(documents(), args.out, source, __file__, argv, tokenizer=args.tokenizer,
                   max_tokens=args.max_tokens, val_tokens=args.val_tokens, workers=args.workers, force=args.force,
                   report=report)


def chat_main(args, argv):
    if args.split_paragraphs:
        raise UserError('--split_paragraphs only applies to text; --format=chat reads conversations')
    if args.block_size is None:
        raise UserError('--format=chat needs --block_size=B (the block_size train.py will use): windows are packed '
                        'for it')
    files = expand_inputs(args.input, args.out)
    messages_field = args.messages_field or 'messages'
    source = dict(files=[dict(path=os.path.abspath(f), bytes=os.path.getsize(f), mtime_ns=os.stat(f).st_mtime_ns)
                         for f in files], messages_field=messages_field)
    report = dict(notes=[])
    with removed_on_failure(args.out):
        chat.prepare_chat_source(chat_records(files, report), args.out, source, __file__, argv, args.tokenizer,
                                 args.block_size, loss_on=args.loss_on or 'assistant', messages_field=messages_field,
                                 chat_template=args.chat_template, date=args.date or chat.chat_templates.CHAT_DATE,
                                 end_of_turn=args.end_of_turn, max_tokens=args.max_tokens,
                                 val_tokens=args.val_tokens, force=args.force, report=report)


if __name__ == '__main__':
    run_main(main)
