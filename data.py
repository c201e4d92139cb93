"""
data.py: a run's two token sources on disk, and the loader that reads the windows schedule.py picks.

A source is a directory made by prepare/: train.bin and val.bin (flat token ids) and meta.json (tokenizer,
vocab_size, dtype, ...). A "window" w of a split is tokens [w*block_size, w*block_size + block_size + 1): block_size
inputs plus the shifted labels (schedule.py's docstring).
"""
import hashlib
import json
import os
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

import schedule
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
    source = dict(name=name, dir=data_dir, meta=meta, meta_sha256=hashlib.sha256(meta_bytes).hexdigest())
    for split in ('train', 'val'):
        path = os.path.join(data_dir, f'{split}.bin')
        if not os.path.isfile(path) or os.path.getsize(path) == 0:
            raise UserError(f"{path} is missing or empty: re-run the prepare script for {data_dir}")
        if os.path.getsize(path) % dtype.itemsize:  # a torn copy or the wrong dtype in meta.json
            raise UserError(f"{path} has {os.path.getsize(path)} bytes, not a whole number of {dtype} tokens: "
                            f"re-run the prepare script for {data_dir}")
        source[split] = np.memmap(path, dtype=dtype, mode='r')
    return source


def train_windows(source, block_size):
    return schedule.count_windows(len(source['train']), block_size)


def val_windows(source, config):
    """How many whole windows the fixed validation set has: the first val_tokens tokens of val.bin."""
    return schedule.count_windows(min(config['val_tokens'], len(source['val'])), config['block_size'])


def sampled_slices(tokens, chunks=16, size=4096):
    """16 evenly spaced slices of a split (~100 KB read): what the fingerprint hashes and the id check scans."""
    return [tokens[start:start + size] for start in np.linspace(0, max(0, len(tokens) - size), chunks).astype(np.int64)]


def open_sources(config):
    """A run's generic and target sources (open_source), checked to fit each other and this run: same tokenizer,
    enough tokens for a window, validation windows. (Token ids against the model's vocabulary: check_token_ids.)"""
    generic, target = open_source('generic', config['generic_dir']), open_source('target', config['target_dir'])
    block_size = config['block_size']
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
    found = [(f"meta.json's max_token_id", recorded)] if isinstance(recorded, int) else []
    found += [(f"val.bin's first {val_tokens} tokens", int(source['val'][:val_tokens].max()))]
    found += [('train.bin', int(max(s.max() for s in sampled_slices(source['train']))))]
    for where, largest in found:
        if largest >= vocab_size:
            raise UserError(f"{source['dir']}: {where} holds token id {largest}, but the model's vocabulary has "
                            f"{vocab_size} ids: the data was prepared with another tokenizer or is corrupt; "
                            f"re-run its prepare script")


# ---------------------------------------------------------------------------------------------------------------
# the loader: the plan's windows from two memmaps into one int64 tensor per step
# ---------------------------------------------------------------------------------------------------------------

def window_view(tokens, block_size):
    """A split as a (windows, block_size + 1) array, without copying: row w is tokens [w*block_size,
    w*block_size + block_size + 1). Picking windows is then a gather of whole rows (a memcpy each), not an
    element-wise index over windows x (block_size + 1): 3-4x faster at block_size 1024."""
    n = schedule.count_windows(len(tokens), block_size)
    return np.lib.stride_tricks.as_strided(tokens, shape=(n, block_size + 1), writeable=False,
                                           strides=(block_size * tokens.itemsize, tokens.itemsize))


def read_windows(tokens, windows, block_size):
    """Rows of block_size + 1 tokens starting at window * block_size, as an int64 array (inputs + labels)."""
    return window_view(tokens, block_size)[np.asarray(windows, dtype=np.int64)].astype(np.int64)


class StepBatches:
    """schedule.step_batch(plan, t), made `chunk` steps at a time. The same calls cost ~4x more one per step,
    between compute steps that leave the caches cold, than in one warm burst: on a tiny CPU model that was the
    whole cost of replay over a single-source loader (docs/benchmarks.md). Each step is handed out once; asking
    for it again computes it again."""
    def __init__(self, plan, chunk=64):
        self.plan, self.chunk, self.ready = plan, chunk, {}

    def __call__(self, t):
        if t not in self.ready:
            self.ready = {s: schedule.step_batch(self.plan, s) for s in range(t, min(t + self.chunk, self.plan['N']))}
        return self.ready.pop(t)


def load_step(t, step_batches, pool, generic, target, micro_batch, rank_micro_steps, rank, pin):
    """This rank's share of step t's global batch: a list of (rows, is_target) per micro-step, rows = (micro_batch,
    block_size + 1) int64 inputs + labels; train_step slices x = rows[:, :-1], y = rows[:, 1:] on the device.
    step_batches: a StepBatches of the plan; generic, target: window_view()s of the two train splits (made once).
    Rank r takes micro-batches r*G .. r*G+G-1 of the global batch, so the global batch is the same for any
    world size (G = gradient_accumulation_steps / world_size).
    Both sources are gathered straight into one int64 tensor, pinned when `pin`, and every micro-step's rows are
    contiguous: a non_blocking copy of a non-contiguous or pageable tensor goes through a pageable staging copy
    and can block the host until the device catches up."""
    is_target, ids = step_batches(t)
    lo, hi = rank * rank_micro_steps * micro_batch, (rank + 1) * rank_micro_steps * micro_batch
    is_target, ids = is_target[lo:hi], ids[lo:hi]
    batch = torch.empty((hi - lo, generic.shape[1]), dtype=torch.int64, pin_memory=pin)
    rows = batch.numpy()
    n_target = np.count_nonzero(is_target)
    if n_target == 0:
        rows[:] = generic[ids]
    elif n_target == len(ids):
        rows[:] = target[pool[ids]]
    else:
        rows[is_target] = target[pool[ids[is_target]]]
        is_generic = ~is_target
        rows[is_generic] = generic[ids[is_generic]]
    flags = torch.from_numpy(is_target)
    if pin:
        flags = flags.pin_memory()
    return list(zip(batch.split(micro_batch), flags.split(micro_batch)))


class InlineExecutor:
    """ThreadPoolExecutor's submit/shutdown, run at once in the caller's thread."""
    def submit(self, fn, *args):
        future = Future()
        future.set_result(fn(*args))
        return future

    def shutdown(self):
        pass


def prefetcher(threaded):
    """Where load_step runs. threaded (cuda): a worker thread makes step t+1's batch while the device computes step
    t and the main thread only queues kernels. Inline (cpu): in the loop itself, as nanoGPT does, since the
    device is the very cores the thread would run on, and a second Python thread costs a GIL and core hand-off per
    step, more than the loading itself on small models (docs/benchmarks.md)."""
    return ThreadPoolExecutor(max_workers=1) if threaded else InlineExecutor()


def loader(plan, pool, generic, target, config, rank, world, pin):
    """load_step with everything but the step bound: loader(t) is this rank's batch of step t."""
    args = (StepBatches(plan), pool, window_view(generic['train'], config['block_size']),
            window_view(target['train'], config['block_size']), config['batch_size'],
            config['gradient_accumulation_steps'] // world, rank, pin)
    return lambda t: load_step(t, *args)
