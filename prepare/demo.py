"""
The offline demo corpus: a generic and a target source from real text that every machine running this project
already has, the Python installation itself. No network, deterministic for a given Python version.

    generic   the standard library's source code: every .py file under sysconfig's stdlib directory, except
              pydoc_data (the target), pdb.py (its docstrings repeat the target's debugger topic), tests,
              site-packages and the build-specific _sysconfigdata*/config-* files (CPython 3.11.7: 11.3M byte
              tokens, 727 documents; 2 empty files are skipped)
    target    the prose of the Python Language Reference that pydoc shows (pydoc_data/topics.py), one document per
              topic, all of it (CPython 3.11.7: 466K byte tokens, 79 documents)

Apart from pdb.py, the reference prose lives only in pydoc_data, so no target text is in the generic source
(tests/test_prepare.py checks that no line of its prose occurs there). Documents are shuffled with a fixed seed,
so that val (the first documents) samples the whole source rather than the alphabetically first modules.
meta.json records the Python version and a sha256 of the documents.

    python prepare/demo.py                                   # bytes -> data/demo_generic, data/demo_target
                                                             # val: 65536 tokens per source (16384 with gpt2)
    python prepare/demo.py --tokenizer gpt2 --generic_out data/demo_generic_gpt2 --target_out data/demo_target_gpt2
"""
import hashlib
import os
import platform
import random
import sys
import sysconfig

from common import UserError, base_parser, decode_utf8, prepare_source, run_main, warn
from configurator import is_inside  # the repository root is on sys.path: common.py

SEED = 1337
SKIP_DIRS = {'pydoc_data', 'site-packages', 'dist-packages', '__pycache__', 'test', 'tests', 'idle_test'}
SKIP_FILES = {'pdb.py'}  # its docstrings are the debugger commands' documentation, which topics.py holds too
MIN_GENERIC_BYTES = 3_000_000  # what the CPU demo needs: its byte-level model sees a few million tokens


def stdlib_files(stdlib):
    """The standard library's .py files, sorted; directories pruned by SKIP_DIRS."""
    for root, dirs, names in os.walk(stdlib):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith('config-'))
        for name in sorted(names):
            if name.endswith('.py') and name not in SKIP_FILES and not name.startswith('_sysconfigdata'):
                yield os.path.join(root, name)


def generic_documents(stdlib):
    """(relative path, text) per stdlib module, and the invalid UTF-8 sequences replaced (0 on CPython)."""
    docs, invalid = [], 0
    for path in stdlib_files(stdlib):
        with open(path, 'rb') as f:
            text, bad = decode_utf8(f.read())
        docs.append((os.path.relpath(path, stdlib), text))
        invalid += bad
    return docs, invalid


def target_documents():
    try:
        from pydoc_data.topics import topics
    except ImportError:
        raise UserError('this Python has no pydoc_data.topics (some distributions strip it): install the full '
                        'standard library, or use prepare/local.py on text you have') from None
    return sorted(topics.items()), 0


def main(argv):
    p = base_parser(__doc__, tokenizer='bytes', val_tokens=None)
    p.add_argument('--generic_out', default=os.path.join('data', 'demo_generic'),
                   help='generic source directory (default: %(default)s)')
    p.add_argument('--target_out', default=os.path.join('data', 'demo_target'),
                   help='target source directory (default: %(default)s)')
    args = p.parse_args(argv)
    if os.path.abspath(args.generic_out) == os.path.abspath(args.target_out):
        raise UserError(f'--generic_out and --target_out are the same directory ({args.target_out}): give two')
    for inner, outer in (('target_out', 'generic_out'), ('generic_out', 'target_out')):
        if is_inside(getattr(args, inner), getattr(args, outer)):  # replacing the outer one would delete it
            raise UserError(f'--{inner}={getattr(args, inner)} lies inside --{outer}={getattr(args, outer)}: give '
                            f'two separate directories')
    if args.val_tokens is None:  # ~64 KB of text per source: 65536 bytes, or ~16K tokens of a BPE tokenizer
        args.val_tokens = 65536 if args.tokenizer == 'bytes' else 16384
    stdlib = sysconfig.get_paths()['stdlib']
    for role, out, (docs, invalid) in (('generic', args.generic_out, generic_documents(stdlib)),
                                        ('target', args.target_out, target_documents())):
        if not docs:
            raise UserError(f'no {role} documents found in {stdlib}: is this a full Python installation?')
        random.Random(SEED).shuffle(docs)  # in place; same order for the same Python version
        size, sha = sum(len(t.encode()) for _, t in docs), hashlib.sha256()
        for name, text in docs:
            sha.update(f'{name}\0{text}\0'.encode('utf-8', 'replace'))
        source = dict(demo=role, python=platform.python_version(), implementation=sys.implementation.name,
                      stdlib=stdlib, what='stdlib .py files' if role == 'generic' else 'pydoc_data.topics',
                      documents=len(docs), shuffle_seed=SEED, sha256=sha.hexdigest())
        meta = prepare_source((text for _, text in docs), out, source, __file__, argv, tokenizer=args.tokenizer,
                              max_tokens=args.max_tokens, val_tokens=args.val_tokens, workers=args.workers,
                              force=args.force, report=dict(utf8_replaced=invalid, input_bytes=size))
        if role == 'generic' and size < MIN_GENERIC_BYTES:
            warn(f'the generic source has under {MIN_GENERIC_BYTES:,} bytes of text ({meta["train"]["tokens"]:,} '
                 f'train tokens): this Python installation looks stripped; the CPU demo may overfit')


if __name__ == '__main__':
    run_main(main)
