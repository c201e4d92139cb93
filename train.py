"""
train.py: executes the plan that schedule.py makes. Single process:
    python train.py config/tiny.py --max_iters=100
DDP on one node (S = batch_size * gradient_accumulation_steps stays global, so the data is the same on any
number of ranks):
    torchrun --standalone --nproc_per_node=8 train.py config/flan_replay.py
Every step t: ask schedule.py which sequences and which LR, read those windows from the two memmaps, split the
global batch over ranks and micro-steps, forward/backward, clip, step. Nothing here decides what data is seen.

Outputs in out_dir: log.jsonl (one JSON record per line; keys in README "Log format"), summary.json at the end,
ckpt.pt (latest, replaced atomically), ckpt_<step>.pt for checkpoint_steps.
"""
import contextlib
import hashlib
import importlib.util
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import schedule
from configurator import UserError, load_config, run_main
from model import GPT, model_config_from

# keys that fix the data order and LR; a resume that changes one is refused (unless force_resume=True)
FINGERPRINT_KEYS = sorted(schedule.PER_STEP_KEYS | {'batch_size', 'gradient_accumulation_steps', 'block_size',
                                                     'target_tokens', 'data_seed', 'seed', 'generic_offset'})
MODEL_KEYS = ('arch', 'n_layer', 'n_head', 'n_embd', 'intermediate_size', 'bias', 'block_size')
CHECKPOINT_KEYS = ('model', 'optimizer', 'scaler', 'step', 'config', 'fingerprint', 'prefix_hash', 'generic_cursor',
                   'rng_cpu', 'log_sums', 'last_log_step', 'tokenizer', 'vocab_size')


# ---------------------------------------------------------------------------------------------------------------
# data: two memmapped sources, windows of block_size + 1 tokens
# ---------------------------------------------------------------------------------------------------------------

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


def window_view(data, block_size):
    """A split as a (windows, block_size + 1) array, without copying: row w is tokens [w*block_size,
    w*block_size + block_size + 1). Picking windows is then a gather of whole rows (a memcpy each), not an
    element-wise index over windows x (block_size + 1): 3-4x faster at block_size 1024."""
    n = max(0, (len(data) - 1) // block_size)
    return np.lib.stride_tricks.as_strided(data, shape=(n, block_size + 1), writeable=False,
                                           strides=(block_size * data.itemsize, data.itemsize))


def read_windows(data, windows, block_size):
    """Rows of block_size + 1 tokens starting at window * block_size, as an int64 array (inputs + labels)."""
    return window_view(data, block_size)[np.asarray(windows, dtype=np.int64)].astype(np.int64)


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


def train_step(model, optimizer, scaler, ctx, batch, sums, grad_clip, keep_ids=False):
    """One optimizer step on load_step's micro-steps; adds the step's loss sums (all, target, target count,
    generic, generic count) to `sums`, on the device. No host-device sync: copies are non-blocking and the loss
    stays on the device until a log reads `sums` (exceptions: keep_ids, for tests, and float16's GradScaler, which
    reads its inf check). bench.py times this same function. Returns, with keep_ids, a (first token, is_target)
    tensor per micro-step, on the host."""
    device, fed = sums.device, []
    for m, (rows, is_target) in enumerate(batch):
        rows, is_target = rows.to(device, non_blocking=True), is_target.to(device, non_blocking=True)
        if isinstance(model, DDP):
            model.require_backward_grad_sync = m == len(batch) - 1
        with ctx:
            _, loss = model(rows[:, :-1], rows[:, 1:])
        scaler.scale(loss.mean() / len(batch)).backward()
        with torch.no_grad():
            per_seq, tgt = loss.detach().double(), is_target.double()
            sums += torch.stack([per_seq.sum(), (per_seq * tgt).sum(), tgt.sum(),
                                 (per_seq * (1 - tgt)).sum(), (1 - tgt).sum()])
        if keep_ids:
            fed.append(torch.stack([rows[:, 0], is_target.long()], 1).cpu())
    if grad_clip > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return fed


def val_windows(source, config):
    """How many whole windows the fixed validation set has: the first val_tokens tokens of val.bin."""
    return (min(config['val_tokens'], len(source['val'])) - 1) // config['block_size']


@torch.no_grad()
def evaluate(model, source, config, ctx, device, rank, world):
    """Token-averaged cross entropy over the fixed held-out set: every window of the first val_tokens tokens of
    val.bin, once, in order (not random batches), so final numbers are reproducible. Ranks split the windows."""
    n = val_windows(source, config)
    mine = np.arange(rank, n, world)
    total = torch.zeros(2, device=device, dtype=torch.float64)  # loss sum, sequence count
    model.eval()
    for i in range(0, len(mine), config['batch_size']):
        rows = torch.from_numpy(read_windows(source['val'], mine[i:i + config['batch_size']],
                                             config['block_size'])).to(device)
        with ctx:
            _, loss = model(rows[:, :-1], rows[:, 1:])
        total[0] += loss.double().sum()
        total[1] += loss.numel()
    model.train()
    if world > 1:
        dist.all_reduce(total)
    return (total[0] / total[1]).item()  # every window has block_size tokens: sequence mean == token mean


# ---------------------------------------------------------------------------------------------------------------
# checking a run before any compute: data, config, checkpoints
# ---------------------------------------------------------------------------------------------------------------

def check_config(config, world):
    """Values the configurator's type check cannot judge. NaN fails every comparison below, so it is caught too."""
    c = config

    def need(ok, key, what):
        if not ok:
            raise UserError(f"{key}={c[key]!r} must be {what}")
    for key in ('n_layer', 'n_head', 'n_embd', 'log_interval', 'val_tokens'):
        need(c[key] >= 1, key, "at least 1")
    for key in ('eval_interval', 'checkpoint_interval', 'spike_eval_steps', 'spike_eval_interval',
                'intermediate_size', 'seed', 'data_seed'):
        need(c[key] >= 0, key, "0 or more")
    for key in ('learning_rate', 'stage2_learning_rate', 'adam_eps', 'norm_eps', 'init_std', 'rope_theta'):
        need(0 < c[key] < math.inf, key, "a positive number")
    for key in ('min_lr', 'weight_decay', 'grad_clip'):
        need(0 <= c[key] < math.inf, key, "0 or more")
    for key in ('beta1', 'beta2', 'dropout'):
        need(0 <= c[key] < 1, key, "in [0, 1)")
    need(c['arch'] in ('gpt2', 'llama'), 'arch', "'gpt2' or 'llama'")
    if c['n_embd'] % c['n_head']:
        raise UserError(f"n_embd={c['n_embd']} must be divisible by n_head={c['n_head']}")
    if c['gradient_accumulation_steps'] % world:
        raise UserError(f"gradient_accumulation_steps={c['gradient_accumulation_steps']} must be divisible by the "
                        f"number of ranks ({world}): S = batch_size * gradient_accumulation_steps is global")
    need(c['dtype'] in ('auto', 'float32', 'bfloat16', 'float16'), 'dtype',
         "'auto', 'float32', 'bfloat16' or 'float16'")
    need(c['backend'] in ('auto', 'nccl', 'gloo'), 'backend', "'auto', 'nccl' or 'gloo'")
    if c['device'] != 'auto':
        try:
            torch.device(c['device'])
        except RuntimeError:
            raise UserError(f"device={c['device']!r} is not a torch device: use 'auto', 'cpu' or 'cuda'") from None
        if c['device'].startswith('cuda') and not torch.cuda.is_available():
            raise UserError(f"device={c['device']!r} but no CUDA GPU is visible: use device='cpu' or 'auto'")
    if c['init_from'] not in ('scratch', 'resume') and not os.path.exists(c['init_from']):
        raise UserError(f"init_from={c['init_from']!r} is not 'scratch', 'resume' or an existing checkpoint path")
    if c['resume_from'] and c['init_from'] != 'resume':
        raise UserError(f"resume_from={c['resume_from']!r} is only read with init_from='resume' (init_from is "
                        f"{c['init_from']!r})")
    if not all(isinstance(k, int) and 0 < k <= c['max_iters'] for k in c['checkpoint_steps']):
        raise UserError(f"checkpoint_steps={c['checkpoint_steps']} must be steps between 1 and max_iters")
    if os.path.exists(c['out_dir']) and not os.path.isdir(c['out_dir']):
        raise UserError(f"out_dir={c['out_dir']!r} is a file, not a directory")
    if c['wandb_log'] and importlib.util.find_spec('wandb') is None:
        raise UserError("wandb_log=True but wandb is not installed: pip install wandb, or --wandb_log=False")


def check_sources(generic, target, config):
    bs = config['block_size']
    for key in ('tokenizer', 'vocab_size'):
        if generic['meta'].get(key) != target['meta'].get(key):
            raise UserError(f"generic_dir and target_dir use different {key}s ({generic['meta'].get(key)!r} vs "
                            f"{target['meta'].get(key)!r}): prepare both with the same tokenizer")
    for source in (generic, target):
        if len(source['train']) < bs + 1 and not (source is target and config['target_tokens'] == 0):
            raise UserError(f"{source['dir']}/train.bin has {len(source['train'])} tokens, fewer than one "
                            f"block_size={bs} sequence: lower block_size or prepare more data")
        if val_windows(source, config) < 1:
            raise UserError(f"{source['dir']}/val.bin has {len(source['val'])} tokens and val_tokens="
                            f"{config['val_tokens']}: validation needs at least block_size+1={bs + 1}")


def sample_sha256(tokens, chunks=16, size=4096):
    """A hash of 16 evenly spaced slices of a split: catches data re-prepared at the same size, reading ~100 KB."""
    h = hashlib.sha256()
    for start in np.linspace(0, max(0, len(tokens) - size), chunks).astype(np.int64):
        h.update(tokens[start:start + size].tobytes())
    return h.hexdigest()


def fingerprint(config, generic, target):
    """What fixes the data order and the logged numbers: schedule keys, seeds, and each source's meta.json, split
    sizes and sampled contents."""
    out = {k: config[k] for k in FINGERPRINT_KEYS}
    for s in (generic, target):
        out[f"{s['name']}_data"] = dict(meta_sha256=s['meta_sha256'], train_tokens=len(s['train']),
                                        val_tokens=len(s['val']), sample_sha256=sample_sha256(s['train']))
    return out


def describe_change(key, old, new):
    if isinstance(new, dict):  # a source: name what differs (sizes with numbers, hashes by name)
        old = old if isinstance(old, dict) else {}
        names = {'meta_sha256': 'meta.json', 'sample_sha256': 'contents'}
        parts = [f"{f} {old.get(f)} -> {v}" if f.endswith('tokens') else names[f]
                 for f, v in new.items() if old.get(f) != v]
        return f"{key.replace('_data', '_dir')} data ({', '.join(parts)})"
    return f"{key} {old!r} -> {new!r}"


def check_resume(checkpoint, config, plan, this_fingerprint, path):
    """A resume of this run must keep the schedule, seeds and data (the fingerprint). A fork (resume_from =
    another run's checkpoint) may change the future, but its first `step` steps and its data must be the
    checkpoint's: the prefix hash says whether this run would have reached exactly that state."""
    step, saved = checkpoint['step'], checkpoint['fingerprint']
    changed = [k for k in this_fingerprint if saved.get(k) != this_fingerprint[k]]
    if config['resume_from']:
        changed = [k for k in changed if k.endswith('_data')]
    changed = [describe_change(k, saved.get(k), this_fingerprint[k]) for k in changed]
    if config['resume_from'] and schedule.prefix_hashes(config, plan, upto=step)[-1] != checkpoint['prefix_hash']:
        changed.append(f"the plan of the first {step} steps")
    if changed and not config['force_resume']:
        raise UserError(f"cannot resume from {path}: changed since it was saved: {'; '.join(changed)}. "
                        f"Restore them, or use --force_resume=True to resume anyway")


def first_line(e):
    """An exception as one short line: torch's messages can run to a page."""
    text = (str(e).strip().splitlines() or [''])[0]
    return f"{type(e).__name__}: {text.split('. ')[0] if len(text) > 160 else text}"


def load_checkpoint(path):
    # weights_only=True: loading a checkpoint can never run code from the file
    try:
        checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:
        raise UserError(f"cannot load checkpoint {path} ({first_line(e)}): it is corrupt or not a checkpoint; "
                        f"use another one, or start with init_from='scratch'") from None
    missing = [k for k in CHECKPOINT_KEYS if k not in checkpoint] if isinstance(checkpoint, dict) else ['all']
    if missing:
        raise UserError(f"{path} is not a checkpoint written by this train.py (missing: {', '.join(missing)})")
    return checkpoint


def check_architecture(checkpoint, config, path, meta):
    """Weights load only into the same shapes, and mean something only with the same tokenizer."""
    saved = dict(checkpoint['config'], tokenizer=checkpoint['tokenizer'], vocab_size=checkpoint['vocab_size'])
    now = dict(config, tokenizer=meta.get('tokenizer'), vocab_size=meta['vocab_size'])
    changed = [f"{k} {saved.get(k)!r} -> {now[k]!r}" for k in MODEL_KEYS + ('tokenizer', 'vocab_size')
               if saved.get(k) != now[k]]
    if changed:
        raise UserError(f"checkpoint {path} does not fit this model or data ({'; '.join(changed)}): set the model "
                        f"keys to the checkpoint's, or use data prepared with its tokenizer")


def save_checkpoint(path, state):
    """Atomic: write a temporary file, fsync, rename over the old one. A kill or a full disk mid-save leaves the
    previous checkpoint in place and loadable (a killed save leaves a .tmp file; main() removes those)."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, 'wb') as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch.save reports a failed write (full disk) as a RuntimeError
        try:
            free = f"; {shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free / 2**20:.0f} MiB free there"
        except OSError:
            free = ''
        raise UserError(f"cannot write checkpoint {path} ({first_line(e)}{free}): "
                        f"the previous checkpoint is unchanged; free space, then resume with "
                        f"--init_from=resume") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    dir_fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def kept_log_records(path, step):
    """Log lines written before the state after `step` completed steps was checkpointed: evals at <= step, train
    and batch records of steps < step. A torn last line (a kill mid-write) is dropped."""
    kept = []
    if os.path.isfile(path):
        with open(path) as f:
            for line in f:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    break
                if record['step'] < step or (record['kind'] == 'eval' and record['step'] == step):
                    kept.append(line if line.endswith('\n') else line + '\n')
    return kept


def git_commit():
    try:
        return subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=os.path.dirname(os.path.abspath(__file__)),
                              capture_output=True, text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


# ---------------------------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------------------------

def main():
    config = load_config(sys.argv[1:])

    # ranks come only from torchrun's environment
    ddp = int(os.environ.get('RANK', -1)) != -1
    rank, local_rank, world = ((int(os.environ['RANK']), int(os.environ['LOCAL_RANK']),
                                int(os.environ['WORLD_SIZE'])) if ddp else (0, 0, 1))
    check_config(config, world)
    device = config['device']
    if device == 'auto':
        device = f'cuda:{local_rank}' if torch.cuda.is_available() else 'cpu'
    elif device == 'cuda' and ddp:
        device = f'cuda:{local_rank}'
    device_type = 'cuda' if device.startswith('cuda') else 'cpu'
    if ddp:
        backend = config['backend'] if config['backend'] != 'auto' else ('nccl' if device_type == 'cuda' else 'gloo')
        dist.init_process_group(backend=backend)
    if device_type == 'cuda':
        torch.cuda.set_device(device)
    master = rank == 0
    out_dir = config['out_dir']

    # --- data, checkpoint and plan, all checked before the model exists ---
    generic = open_source('generic', config['generic_dir'])
    target = open_source('target', config['target_dir'])
    check_sources(generic, target, config)
    bs = config['block_size']
    windows = lambda source: max(0, (len(source['train']) - 1) // bs)
    checkpoint, start_step, resume_path = None, 0, None
    if config['init_from'] == 'resume':
        resume_path = config['resume_from'] or os.path.join(out_dir, 'ckpt.pt')
        if not os.path.isfile(resume_path):
            raise UserError(f"init_from='resume' but {resume_path} does not exist: start with init_from='scratch'")
        checkpoint = load_checkpoint(resume_path)
        check_architecture(checkpoint, config, resume_path, generic['meta'])
        start_step = checkpoint['step']
        if config['generic_offset'] == 0:  # a run started from another run's weights keeps the cursor it took
            config['generic_offset'] = checkpoint['config']['generic_offset']
    elif config['init_from'] != 'scratch':  # weights of another run; this run's own plan
        path = config['init_from']
        path = os.path.join(path, 'ckpt.pt') if os.path.isdir(path) else path
        checkpoint = load_checkpoint(path)
        check_architecture(checkpoint, config, path, generic['meta'])
        if config['generic_offset'] == 0:  # continue that run's generic cursor: replay is fresh data
            config['generic_offset'] = checkpoint['generic_cursor']
    plan = schedule.make_plan(config, windows(target), windows(generic))
    pool = schedule.target_pool(config['data_seed'], windows(target), plan['U']) if plan['U'] else np.zeros(0, int)
    this_fingerprint = fingerprint(config, generic, target)
    if resume_path:
        check_resume(checkpoint, config, plan, this_fingerprint, resume_path)
    if master:
        try:
            os.makedirs(out_dir, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create out_dir={out_dir!r}: {e.strerror}") from None
        for name in os.listdir(out_dir):
            # a killed save's temporary file is never loaded; an older summary.json would say "finished"
            if (name.startswith('ckpt') and '.pt.tmp' in name) or name == 'summary.json':
                os.remove(os.path.join(out_dir, name))
    for warning in plan['warnings']:
        if master:
            print(f"warning: {warning}")

    # --- model and optimizer ---
    torch.manual_seed(config['seed'])
    vocab_size = generic['meta']['vocab_size']
    model = GPT(model_config_from(config, vocab_size)).to(device)
    if checkpoint is not None:
        model.load_state_dict(checkpoint['model'])
    dtype = config['dtype']
    if dtype == 'auto':
        dtype = ('bfloat16' if torch.cuda.is_bf16_supported() else 'float16') if device_type == 'cuda' else 'float32'
    ctx = (contextlib.nullcontext() if dtype == 'float32'
           else torch.autocast(device_type=device_type, dtype=getattr(torch, dtype)))
    scaler = torch.amp.GradScaler(device_type, enabled=(dtype == 'float16'))

    raw_model = model  # `model` becomes the compiled / DDP wrapper below; the optimizer needs the module itself

    def new_optimizer():
        return raw_model.configure_optimizers(config['weight_decay'], config['learning_rate'],
                                              (config['beta1'], config['beta2']), config['adam_eps'], device_type)
    optimizer = new_optimizer()
    if config['init_from'] == 'resume':
        optimizer.load_state_dict(checkpoint['optimizer'])
        torch.set_rng_state(checkpoint['rng_cpu'])
        scaler.load_state_dict(checkpoint['scaler'])
        if device_type == 'cuda' and 'rng_cuda' in checkpoint:
            torch.cuda.set_rng_state(checkpoint['rng_cuda'])
    use_compile = config['compile'] if config['compile'] != 'auto' else device_type == 'cuda'
    if use_compile:
        model = torch.compile(model)
    if ddp:
        model = DDP(model, device_ids=[local_rank] if device_type == 'cuda' else None)
    device_name = torch.cuda.get_device_name(device) if device_type == 'cuda' else 'cpu'

    # --- log: keep what came before the checkpoint (for a fork: the parent's), append from here ---
    log_path = os.path.join(out_dir, 'log.jsonl')
    if master:
        if config['init_from'] == 'resume':
            kept = kept_log_records(os.path.join(os.path.dirname(os.path.abspath(resume_path)), 'log.jsonl'),
                                    start_step)
        else:
            kept = []
        with open(log_path + '.tmp', 'w') as f:
            f.writelines(kept)
        os.replace(log_path + '.tmp', log_path)
    log_file = open(log_path, 'a') if master else None

    def log(record, line=None):
        if master:
            log_file.write(json.dumps(record) + '\n')
            log_file.flush()
            if line:
                print(line, flush=True)
            if config['wandb_log']:
                wandb.log({k: v for k, v in record.items() if isinstance(v, (int, float))}, step=record['step'])
    if master and config['wandb_log']:
        import wandb
        wandb.init(project=config['wandb_project'], name=config['wandb_run_name'] or None, config=config)

    # --- the loop ---
    N, S = plan['N'], plan['S']
    micro_batch = config['batch_size']
    rank_micro_steps = config['gradient_accumulation_steps'] // world
    # running sums since the last train log, on the device: loss over all / target / generic sequences, counts
    sums = torch.zeros(5, device=device, dtype=torch.float64)
    if checkpoint is not None and config['init_from'] == 'resume' and master:
        sums.copy_(checkpoint['log_sums'])  # the log window that was open at the checkpoint
    last_log_step = checkpoint['last_log_step'] if config['init_from'] == 'resume' else -1
    final_val = {}

    # steps in the newest out_dir/ckpt.pt this run can stand on (a fork's first checkpoint is another run's)
    last_good = start_step if resume_path and not config['resume_from'] else None

    def state(step):
        """Everything a resume needs; RNG states as tensors so torch.load(weights_only=True) can read it. Also
        whether it is healthy: the open log window's losses and all weights finite (a step with a finite loss can
        still blow up the weights). Both go in one reduce, so every rank agrees."""
        # a tensor's sum is non-finite iff an element is (short of ~1e38 weights); no per-element temporaries
        weights = torch.stack([p.detach().sum().double() for p in raw_model.parameters()]).sum()
        window = torch.cat([sums, weights.view(1)])
        if world > 1:
            dist.all_reduce(window)
        window = window.cpu()
        s = dict(model=raw_model.state_dict(), optimizer=optimizer.state_dict(), scaler=scaler.state_dict(),
                 step=step, config=config, fingerprint=this_fingerprint,
                 prefix_hash=schedule.prefix_hashes(config, plan, upto=step)[-1],
                 generic_cursor=config['generic_offset'] + step * S - schedule.targets_before(plan, step),
                 rng_cpu=torch.get_rng_state(), log_sums=window[:5].clone(), last_log_step=last_log_step,
                 tokenizer=generic['meta'].get('tokenizer'), vocab_size=vocab_size)
        if device_type == 'cuda':
            s['rng_cuda'] = torch.cuda.get_rng_state(device)
        return s, bool(torch.isfinite(window).all())

    def checkpoint_now(step):
        nonlocal last_good
        wanted = [name for name, due in (
            ('ckpt.pt', (config['checkpoint_interval'] and step % config['checkpoint_interval'] == 0)
             or step == plan['stage2_start'] or step == N),
            (f'ckpt_{step}.pt', step in config['checkpoint_steps'])) if due]
        if wanted:
            s, healthy = state(step)
            if not healthy:  # never replace the last good checkpoint with a diverged model
                if master:
                    print(f"warning: not checkpointing after {step} steps: non-finite loss or weights", flush=True)
                return
            if master:
                for name in wanted:
                    save_checkpoint(os.path.join(out_dir, name), s)
            if 'ckpt.pt' in wanted:
                last_good = step

    def diverged(what):
        kept = (f"{out_dir}/ckpt.pt (after {last_good} steps) is the last good checkpoint: resume from it with a "
                f"lower learning rate and --force_resume=True" if last_good is not None
                else "no checkpoint was saved before it")
        return UserError(f"{what}; stopping. {kept}")

    load_args = (StepBatches(plan), pool, window_view(generic['train'], bs), window_view(target['train'], bs),
                 micro_batch, rank_micro_steps, rank, device_type == 'cuda')
    prefetch = prefetcher(device_type == 'cuda')  # cuda: reads step t+1's windows while step t computes
    upcoming = prefetch.submit(load_step, start_step, *load_args) if start_step < N else None
    t0 = time.time()
    window_start = time.time()
    if master:
        print(f"run {out_dir}: {N} steps x {S} sequences x {bs} tokens, U={plan['U']} target sequences x "
              f"e={plan['e']}, stage 2 from step {plan['stage2_start']}, {raw_model.get_num_params() / 1e6:.2f}M "
              f"non-embedding params, device {device_name}, dtype {dtype}"
              + (f", resuming at step {start_step}" if start_step else ""), flush=True)
    for t in range(start_step, N + 1):
        # after t completed steps: evaluate, then checkpoint (a resume at t starts right here, past both)
        if t > start_step or t == 0:
            if schedule.evals_at(plan, t):
                eval_start = time.time()
                val = {f'val_loss_{s["name"]}': evaluate(model, s, config, ctx, device, rank, world)
                       for s in (target, generic)}
                log(dict(kind='eval', step=t, stage=schedule.stage_of(plan, max(t - 1, 0)), **val),
                    f"eval after {t} steps: target {val['val_loss_target']:.4f}, generic "
                    f"{val['val_loss_generic']:.4f}")
                final_val = val
                window_start += time.time() - eval_start  # ms/step counts training only
                if not all(map(math.isfinite, val.values())):  # reduced in evaluate(): all ranks stop together
                    raise diverged(f"the validation loss is {val['val_loss_target']} (target), "
                                   f"{val['val_loss_generic']} (generic) after {t} steps")
            if t > 0:
                checkpoint_now(t)
        if t == N:
            break

        batch = upcoming.result()
        upcoming = prefetch.submit(load_step, t + 1, *load_args) if t + 1 < N else None
        if schedule.resets_optimizer_at(plan, t):  # fine-tuning: stage 2 starts with fresh AdamW moments
            optimizer = new_optimizer()
        lr = schedule.lr_at(plan, t)
        for group in optimizer.param_groups:
            group['lr'] = lr
        fed = train_step(model, optimizer, scaler, ctx, batch, sums, config['grad_clip'], config['log_batch_ids'])

        if config['log_batch_ids']:  # tests only: what this step actually fed, in global order
            fed = torch.cat(fed).tolist()
            if world > 1:
                gathered = [None] * world
                dist.all_gather_object(gathered, fed)
                fed = [row for part in gathered for row in part]
            log(dict(kind='batch', step=t, first_tokens=[r[0] for r in fed], is_target=[r[1] for r in fed]))

        if (t + 1) % config['log_interval'] == 0 or t == N - 1 or t == plan['stage2_start'] - 1:
            window = sums.clone()
            if world > 1:
                dist.all_reduce(window)  # one reduce per log; it also carries the NaN check to every rank
            window = window.tolist()
            steps = t - last_log_step
            if not math.isfinite(window[0]):  # every rank has the reduced window: all stop here together
                raise diverged(f"the training loss is {window[0]} at step {t + 1}/{N} (the mean over steps "
                               f"{last_log_step + 2}..{t + 1})")
            now = time.time()
            ms = (now - window_start) * 1000 / steps
            mfu = raw_model.estimate_mfu(S * bs * 1000 / ms / world, device_name)  # per device
            done_target = schedule.targets_before(plan, t + 1)
            record = dict(kind='train', step=t, stage=schedule.stage_of(plan, t), lr=lr,
                          loss=window[0] / (window[2] + window[4]),
                          loss_target=window[1] / window[2] if window[2] else None,
                          loss_generic=window[3] / window[4] if window[4] else None,
                          steps=steps, target_seqs=done_target, generic_seqs=(t + 1) * S - done_target,
                          tokens_target=done_target * bs, tokens_generic=((t + 1) * S - done_target) * bs,
                          ms_per_step=ms, mfu=mfu, elapsed_s=now - t0)
            by_source = ', '.join(f"{name} {record['loss_' + name]:.4f}" for name in ('target', 'generic')
                                  if record['loss_' + name] is not None)
            log(record, f"step {t + 1}/{N} | stage {record['stage']} | loss {record['loss']:.4f} ({by_source}) "
                f"| lr {lr:.3g} | {ms:.1f} ms/step"
                + (f" | mfu {100 * mfu:.1f}%" if mfu is not None else ""))
            sums.zero_()
            last_log_step = t
            window_start = time.time()
    prefetch.shutdown()
    if master and not final_val:  # resumed after the final eval: take it from the log
        with open(log_path) as f:
            final_val = [{k: v for k, v in r.items() if k.startswith('val_loss')}
                         for r in map(json.loads, f) if r['kind'] == 'eval'][-1]

    if master:
        sources = {s['name']: dict(dir=s['dir'], meta_sha256=s['meta_sha256'], meta=s['meta'],
                                   train_tokens=len(s['train']), val_tokens=len(s['val'])) for s in (generic, target)}
        summary = dict(config=config, plan=schedule.summarize(config, plan),
                       final=dict(step=N, **final_val),
                       sequences=dict(target=plan['T'], generic=plan['generic_total']),
                       tokens=dict(target=plan['T'] * bs, generic=plan['generic_total'] * bs),
                       generic_cursor_end=config['generic_offset'] + plan['generic_total'],
                       git_commit=git_commit(), versions=dict(python=platform.python_version(),
                                                              torch=torch.__version__, numpy=np.__version__),
                       device=device_name, world_size=world, sources=sources, wall_s=time.time() - t0)
        with open(os.path.join(out_dir, 'summary.json.tmp'), 'w') as f:
            json.dump(summary, f, indent=1)
        os.replace(os.path.join(out_dir, 'summary.json.tmp'), os.path.join(out_dir, 'summary.json'))
        print(f"done: final val loss target {final_val.get('val_loss_target', float('nan')):.4f}, generic "
              f"{final_val.get('val_loss_generic', float('nan')):.4f}; {out_dir}/summary.json", flush=True)
        log_file.close()
    if ddp:
        dist.destroy_process_group()


if __name__ == '__main__':
    run_main(main)
