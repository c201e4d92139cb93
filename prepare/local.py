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
"""
import bz2
import concurrent.futures
import glob
import gzip
import itertools
import json
import lzma
import os
import sys

from tqdm import tqdm

from common import UserError, base_parser, count_invalid_utf8, prepare_source, run_main
from hub import dataset_texts, import_datasets

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


def expand_inputs(patterns):
    """Files named by --input, in order: globs and directories sorted, duplicates dropped; clear errors."""
    files, seen = [], set()
    for pattern in patterns:
        if os.path.isdir(pattern):
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
        files += [f for f in found if not (f in seen or seen.add(f))]
    for f in files:
        if split_name(f)[0] is None:
            raise UserError(f'{f}: unknown file type; use .txt, .jsonl, .json or .parquet (optionally .gz/.bz2/.xz), '
                            f'or convert it to one of those')
        if os.path.getsize(f) == 0:
            raise UserError(f'{f} is empty')
    return files


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
    except (OSError, EOFError, lzma.LZMAError) as e:
        return 0, f'{path} cannot be read ({e})'
    if size == 0:
        return 0, f'{path} is empty'
    if builder == 'json':
        with opener(path, 'rt', encoding='utf-8', errors='replace') as f:
            first = next((line for line in f if line.strip()), '')
        try:
            record = json.loads(first)
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
            with concurrent.futures.ProcessPoolExecutor(min(workers, len(files))) as pool:
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
                                              f'({type(e).__name__}: {str(e)[:300]})'))


def main(argv):
    p = base_parser(__doc__)
    p.add_argument('--input', nargs='+', required=True, help='files, globs (quote them) or directories')
    p.add_argument('--out', required=True, help='output directory, e.g. data/mycorpus')
    p.add_argument('--text_field', default='text', help='JSON field / parquet column with the text (default: text)')
    p.add_argument('--split_paragraphs', action='store_true',
                   help='.txt: one document per blank-line-separated block instead of one per file')
    args = p.parse_args(argv)
    files = expand_inputs(args.input)
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


if __name__ == '__main__':
    run_main(main)
