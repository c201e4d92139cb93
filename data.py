"""
data.py: the loader: the windows schedule.py picks for each step, read from a run's two sources (sources.py: what a
source and a window are) into one int64 tensor per step, on a worker thread or inline.
"""
import collections
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch

import schedule
from sources import is_chat, text_windows


def window_view(tokens, block_size, stride=None):
    """A split as a (windows, block_size + 1) array, without copying: row w is tokens [w*stride,
    w*stride + block_size + 1), stride = block_size (text, the default) or block_size + 1 (chat). Picking windows is
    then a gather of whole rows (a memcpy each), not an element-wise index over windows x (block_size + 1): 3-4x
    faster at block_size 1024."""
    stride = stride or block_size
    n = text_windows(len(tokens), block_size) if stride == block_size else len(tokens) // stride
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
