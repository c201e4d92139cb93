"""
sources.py: a run's two token sources on disk: opening and checking them, and how many windows each split holds.
numpy only, no torch: train.py opens its sources here, and schedule.py and sweep.py count a split's windows with the
same checks, so a broken directory gets the same error line from each. data.py's loader reads the windows.

A source is a directory made by prepare/: train.bin and val.bin (flat token ids) and meta.json (tokenizer,
vocab_size, dtype, ...). A "window" w of a split is block_size inputs plus the shifted labels, block_size + 1 tokens:
- a text source (meta.json has no `format`): tokens [w*block_size, w*block_size + block_size + 1), consecutive
  windows sharing the token at their seam (schedule.py's docstring);
- a chat source (`format: "chat"`, packed by prepare/ for one block_size B): tokens [w*(B+1), (w+1)*(B+1)), whole
  examples packed into each window and padded, no seam shared. Beside each {split}.bin, {split}.mask.bin (uint8 per
  token: 1 where the token is a training label, i.e. the loss on predicting it from the tokens before it counts)
  and {split}.starts.bin (uint8 per token: 1 at the first token of every example and of a window's padding run).
Window ids address whole windows either way, so schedule.py plans both kinds alike.
"""
import hashlib
import json
import os

import numpy as np

from configurator import UserError
from tokenizer import same_tokenizer


def open_source(name, data_dir):
    """A source = train/val memmaps + meta.json. Errors name the directory and what to do."""
    meta_path = os.path.join(data_dir, 'meta.json')
    if not os.path.isdir(data_dir):
        raise UserError(f"{name}_dir={data_dir!r} does not exist: build it with prepare/ (e.g. python "
                        f"prepare/demo.py) or point {name}_dir at a prepared source")
    if not os.path.isfile(meta_path):
        raise UserError(f"{meta_path} is missing: {data_dir} is not a prepared source (see prepare/)")
    with open(meta_path, 'rb') as f:
        meta_bytes = f.read()
    try:
        meta = json.loads(meta_bytes)
        dtype = np.dtype(meta.get('dtype', 'uint16'))
        ok = dtype.kind == 'u' and isinstance(meta.get('vocab_size'), int) and meta['vocab_size'] > 0
    except (ValueError, TypeError, AttributeError):
        ok = False
    if not ok:
        raise UserError(f"{meta_path} is not a valid meta.json (needs a positive int vocab_size and an unsigned "
                        f"dtype): re-run the prepare script for {data_dir}")
    if meta['vocab_size'] > np.iinfo(dtype).max + 1:
        raise UserError(f"{meta_path}: vocab_size {meta['vocab_size']} does not fit its dtype {dtype} (ids up to "
                        f"{np.iinfo(dtype).max}): re-run the prepare script for {data_dir}")
    if meta.get('format', 'text') not in ('text', 'chat'):
        raise UserError(f"{meta_path}: format {meta['format']!r} is not 'chat' (a text source has no format key): "
                        f"re-run the prepare script for {data_dir}")
    packed = meta.get('block_size')
    if meta.get('format') == 'chat' and not (isinstance(packed, int) and packed > 0
                                             and meta.get('window_stride') == packed + 1):
        raise UserError(f"{meta_path}: a chat source needs a positive int block_size and window_stride = "
                        f"block_size + 1 (has {packed!r}, {meta.get('window_stride')!r}): re-run the prepare script "
                        f"for {data_dir}")
    source = dict(name=name, dir=data_dir, meta=meta, meta_sha256=hashlib.sha256(meta_bytes).hexdigest())
    for split in ('train', 'val'):
        path = os.path.join(data_dir, f'{split}.bin')
        if not os.path.isfile(path) or os.path.getsize(path) == 0:
            raise UserError(f"{path} is missing or empty: re-run the prepare script for {data_dir}")
        if os.path.getsize(path) % dtype.itemsize:  # a torn copy or the wrong dtype in meta.json
            raise UserError(f"{path} has {os.path.getsize(path)} bytes, not a whole number of {dtype} tokens: "
                            f"re-run the prepare script for {data_dir}")
        source[split] = np.memmap(path, dtype=dtype, mode='r')
        if is_chat(source):
            open_chat_split(source, split)
    return source


def is_chat(source):
    return source['meta'].get('format') == 'chat'


def open_chat_split(source, split):
    """A chat split's loss mask and example starts (one uint8 per token of its .bin), as source[split + '_mask']
    and source[split + '_starts']; its token count must be whole windows of block_size + 1."""
    n, stride = len(source[split]), source['meta']['window_stride']
    where = f"{source['dir']}/{split}.bin"
    if n % stride:
        raise UserError(f"{where} has {n} tokens, not whole windows of window_stride={stride} (meta.json): re-run "
                        f"the prepare script for {source['dir']}")
    for kind in ('mask', 'starts'):
        path = os.path.join(source['dir'], f'{split}.{kind}.bin')
        if not os.path.isfile(path) or os.path.getsize(path) != n:
            size = f"has {os.path.getsize(path)} bytes" if os.path.isfile(path) else "is missing"
            raise UserError(f"{path} {size}, but a chat source needs one byte per token of {where} ({n}): re-run "
                            f"the prepare script for {source['dir']}")
        source[f'{split}_{kind}'] = np.memmap(path, dtype=np.uint8, mode='r')


def text_windows(n_tokens, block_size):
    """Whole windows (block_size inputs + 1 label token) in n_tokens tokens of a text split: consecutive windows
    share only the label token at their seam."""
    return max(0, (n_tokens - 1) // block_size)


def count_windows(source, n_tokens, block_size):
    """Whole windows in n_tokens tokens of a split: text windows share a seam token, chat windows do not."""
    return n_tokens // (block_size + 1) if is_chat(source) else text_windows(n_tokens, block_size)


def train_windows(source, block_size):
    return count_windows(source, len(source['train']), block_size)


def val_windows(source, config):
    """How many whole windows the fixed validation set has: the first val_tokens tokens of val.bin."""
    return count_windows(source, min(config['val_tokens'], len(source['val'])), config['block_size'])


def sampled_slices(tokens, chunks=16, size=4096):
    """16 evenly spaced slices of a split (~100 KB read): what the fingerprint hashes and the id check scans."""
    return [tokens[start:start + size] for start in np.linspace(0, max(0, len(tokens) - size), chunks).astype(np.int64)]


def check_packing(source, block_size):
    """A chat source was packed for this run's block_size (a text source fits any)."""
    packed = source['meta'].get('block_size')
    if is_chat(source) and packed != block_size:
        raise UserError(f"{source['name']}_dir={source['dir']!r} was packed for block_size={packed} (its "
                        f"meta.json), but this run has block_size={block_size}: run with --block_size={packed} "
                        f"or prepare the chat data again with --block_size={block_size}")


def split_windows(name, data_dir, block_size):
    """The windows of block_size in a source's train split, for schedule.make_plan, checked as train.py checks the
    source alone (open_source, check_packing); None while data_dir has no meta.json or train.bin (the plan then
    gives pool ids and generic stream positions)."""
    if not all(os.path.isfile(os.path.join(data_dir, f)) for f in ('meta.json', 'train.bin')):
        return None
    source = open_source(name, data_dir)
    check_packing(source, block_size)
    return train_windows(source, block_size)


def split_sizes(config):
    """(target_windows, generic_windows) of a run's train splits, as schedule.make_plan takes them (None: no data
    yet)."""
    return tuple(split_windows(name, config[f'{name}_dir'], config['block_size']) for name in ('target', 'generic'))


def open_sources(config):
    """A run's generic and target sources (open_source), checked to fit each other and this run: same tokenizer,
    enough tokens for a window, validation windows. (Token ids against the model's vocabulary: check_token_ids.)"""
    generic, target = open_source('generic', config['generic_dir']), open_source('target', config['target_dir'])
    block_size = config['block_size']
    for source in (generic, target):
        check_packing(source, block_size)
    for key, same in (('tokenizer', same_tokenizer(generic['meta'], target['meta'])),  # by fingerprint if any
                      ('vocab_size', generic['meta'].get('vocab_size') == target['meta'].get('vocab_size'))):
        if not same:
            raise UserError(f"generic_dir and target_dir use different {key}s ({generic['meta'].get(key)!r} vs "
                            f"{target['meta'].get(key)!r}): prepare both with the same tokenizer")
    for source in (generic, target):
        if len(source['train']) < block_size + 1 and not (source is target and config['target_tokens'] == 0):
            raise UserError(f"{source['dir']}/train.bin has {len(source['train'])} tokens, fewer than one "
                            f"block_size={block_size} sequence: lower block_size or prepare more data")
        if val_windows(source, config) < 1:
            raise UserError(f"{source['dir']}/val.bin has {len(source['val'])} tokens and val_tokens="
                            f"{config['val_tokens']}: validation needs at least block_size+1={block_size + 1}")
    return generic, target


def check_token_ids(source, vocab_size, val_tokens):
    """Every id < vocab_size, without reading a multi-GB train split at each start: prepare/ records the largest id
    of each split in meta.json (max_token_id); the validation tokens a run reads are checked in full, and the train
    split's sampled slices (those the fingerprint hashes) too, for data made without that record."""
    meta = source['meta']
    recorded = meta.get('max_token_id')
    found = [("meta.json's max_token_id", recorded)] if isinstance(recorded, int) else []
    found += [(f"val.bin's first {val_tokens} tokens", int(source['val'][:val_tokens].max()))]
    found += [('train.bin', int(max(s.max() for s in sampled_slices(source['train']))))]
    for where, largest in found:
        if largest >= vocab_size:
            raise UserError(f"{source['dir']}: {where} holds token id {largest}, but the model's vocabulary has "
                            f"{vocab_size} ids: the data was prepared with another tokenizer or is corrupt; "
                            f"re-run its prepare script")
