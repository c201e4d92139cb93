"""
data.py: a run's two token sources on disk, and the loader that reads the windows schedule.py picks.

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
import collections
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


def count_windows(source, n_tokens, block_size):
    """Whole windows in n_tokens tokens of a split: text windows share a seam token, chat windows do not."""
    return n_tokens // (block_size + 1) if is_chat(source) else schedule.count_windows(n_tokens, block_size)


def train_windows(source, block_size):
    return count_windows(source, len(source['train']), block_size)


def val_windows(source, config):
    """How many whole windows the fixed validation set has: the first val_tokens tokens of val.bin."""
    return count_windows(source, min(config['val_tokens'], len(source['val'])), config['block_size'])


def sampled_slices(tokens, chunks=16, size=4096):
    """16 evenly spaced slices of a split (~100 KB read): what the fingerprint hashes and the id check scans."""
    return [tokens[start:start + size] for start in np.linspace(0, max(0, len(tokens) - size), chunks).astype(np.int64)]


def open_sources(config):
    """A run's generic and target sources (open_source), checked to fit each other and this run: same tokenizer,
    enough tokens for a window, validation windows. (Token ids against the model's vocabulary: check_token_ids.)"""
    generic, target = open_source('generic', config['generic_dir']), open_source('target', config['target_dir'])
    block_size = config['block_size']
    for source in (generic, target):
        packed = source['meta'].get('block_size')
        if is_chat(source) and packed != block_size:
            raise UserError(f"{source['name']}_dir={source['dir']!r} was packed for block_size={packed} (its "
                            f"meta.json), but this run has block_size={block_size}: run with --block_size={packed} "
                            f"or prepare the chat data again with --block_size={block_size}")
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

def window_view(tokens, block_size, stride=None):
    """A split as a (windows, block_size + 1) array, without copying: row w is tokens [w*stride,
    w*stride + block_size + 1), stride = block_size (text, the default) or block_size + 1 (chat). Picking windows is
    then a gather of whole rows (a memcpy each), not an element-wise index over windows x (block_size + 1): 3-4x
    faster at block_size 1024."""
    stride = stride or block_size
    n = schedule.count_windows(len(tokens), block_size) if stride == block_size else len(tokens) // stride
    return np.lib.stride_tricks.as_strided(tokens, shape=(n, block_size + 1), writeable=False,
                                           strides=(stride * tokens.itemsize, tokens.itemsize))


def read_windows(tokens, windows, block_size):
    """Rows of block_size + 1 tokens starting at window * block_size, as an int64 array (inputs + labels)."""
    return window_view(tokens, block_size)[np.asarray(windows, dtype=np.int64)].astype(np.int64)


def split_views(source, split, block_size):
    """(tokens, mask, starts) window_view()s of a split; mask and starts are None for a text source."""
    if not is_chat(source):
        return window_view(source[split], block_size), None, None
    return tuple(window_view(source[f'{split}{kind}'], block_size, block_size + 1)
                 for kind in ('', '_mask', '_starts'))


def chat_rows(views, windows):
    """The label mask and the example starts of some windows of a split's split_views(), as bool arrays (rows,
    block_size): label j (token j + 1 of the window) counts where loss_mask[j]; input j starts an example where
    starts[j]. A text window: every label counts, one example from its first token."""
    tokens, mask, starts = views
    if mask is None:
        loss_mask = np.ones((len(windows), tokens.shape[1] - 1), dtype=bool)
        first = np.zeros_like(loss_mask)
        first[:, 0] = True
        return loss_mask, first
    return mask[windows, 1:].astype(bool), starts[windows, :-1].astype(bool)


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


# What a chat run's micro-step carries: rows (m, B+1) int64 inputs + labels, is_target (m,), loss_mask and starts
# (m, B) bool (chat_rows), and two counts of the whole step (every micro-step and rank), for the loss's
# normalisation in train.train_step: its loss tokens, and its windows holding at least one loss token.
ChatMicroStep = collections.namedtuple('ChatMicroStep', 'rows is_target loss_mask starts step_loss_tokens '
                                                        'step_loss_windows')


def load_chat_step(t, step_batches, pool, generic, target, micro_batch, rank_micro_steps, rank, pin):
    """load_step for a run with a chat source (generic, target: split_views() of the train splits): this rank's
    ChatMicroSteps of step t. Every rank reads the loss masks of the whole step's windows (S x block_size bytes),
    so the step's loss-token count is known on the host, with no device sync."""
    is_target, ids = step_batches(t)
    windows = ids.copy()
    windows[is_target] = pool[ids[is_target]]
    masks, starts = np.empty((2, len(ids), generic[0].shape[1] - 1), dtype=bool)
    for views, rows in ((target, is_target), (generic, ~is_target)):
        if rows.any():
            masks[rows], starts[rows] = chat_rows(views, windows[rows])
    counts = masks.sum(axis=1)
    step_loss_tokens, step_loss_windows = int(counts.sum()), int(np.count_nonzero(counts))
    lo, hi = rank * rank_micro_steps * micro_batch, (rank + 1) * rank_micro_steps * micro_batch
    batch = torch.empty((hi - lo, generic[0].shape[1]), dtype=torch.int64, pin_memory=pin)
    mine = is_target[lo:hi]
    batch.numpy()[mine] = target[0][windows[lo:hi][mine]]
    batch.numpy()[~mine] = generic[0][windows[lo:hi][~mine]]
    tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in (mine, masks[lo:hi], starts[lo:hi])]
    if pin:
        tensors = [x.pin_memory() for x in tensors]
    return [ChatMicroStep(*parts, step_loss_tokens, step_loss_windows)
            for parts in zip(batch.split(micro_batch), *(x.split(micro_batch) for x in tensors))]


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
    """load_step with everything but the step bound: loader(t) is this rank's batch of step t (load_chat_step's
    when either source is chat; text-only runs keep load_step)."""
    block_size, chat = config['block_size'], is_chat(generic) or is_chat(target)
    views = ((split_views(generic, 'train', block_size), split_views(target, 'train', block_size)) if chat else
             (window_view(generic['train'], block_size), window_view(target['train'], block_size)))
    args = (StepBatches(plan), pool, *views, config['batch_size'], config['gradient_accumulation_steps'] // world,
            rank, pin)
    return (lambda t: load_chat_step(t, *args)) if chat else (lambda t: load_step(t, *args))
