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
import json
import math
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

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
    meta = json.loads(meta_bytes)
    dtype = np.dtype(meta.get('dtype', 'uint16'))
    source = dict(name=name, dir=data_dir, meta=meta, meta_sha256=hashlib.sha256(meta_bytes).hexdigest())
    for split in ('train', 'val'):
        path = os.path.join(data_dir, f'{split}.bin')
        if not os.path.isfile(path) or os.path.getsize(path) == 0:
            raise UserError(f"{path} is missing or empty: re-run the prepare script for {data_dir}")
        source[split] = np.memmap(path, dtype=dtype, mode='r')
    return source


def read_windows(data, windows, block_size):
    """Rows of block_size + 1 tokens starting at window * block_size, as an int64 array (inputs + labels)."""
    starts = np.asarray(windows, dtype=np.int64) * block_size
    return data[starts[:, None] + np.arange(block_size + 1)].astype(np.int64)


def load_step(t, plan, pool, generic, target, block_size, micro_batch, rank_micro_steps, rank, pin):
    """This rank's share of step t's global batch: a list of (x, y, is_target) per micro-step.
    Rank r takes micro-batches r*G .. r*G+G-1 of the global batch, so the global batch is the same for any
    world size (G = gradient_accumulation_steps / world_size)."""
    is_target, ids = schedule.step_batch(plan, t)
    lo, hi = rank * rank_micro_steps * micro_batch, (rank + 1) * rank_micro_steps * micro_batch
    is_target, ids = is_target[lo:hi], ids[lo:hi]
    rows = np.empty((hi - lo, block_size + 1), dtype=np.int64)
    if is_target.any():
        rows[is_target] = read_windows(target['train'], pool[ids[is_target]], block_size)
    if (~is_target).any():
        rows[~is_target] = read_windows(generic['train'], ids[~is_target], block_size)
    batch = torch.from_numpy(rows)
    flags = torch.from_numpy(is_target)
    if pin:
        batch, flags = batch.pin_memory(), flags.pin_memory()
    return [(batch[m * micro_batch:(m + 1) * micro_batch, :-1], batch[m * micro_batch:(m + 1) * micro_batch, 1:],
             flags[m * micro_batch:(m + 1) * micro_batch]) for m in range(rank_micro_steps)]


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
    c = config
    if c['arch'] not in ('gpt2', 'llama'):
        raise UserError(f"arch={c['arch']!r} must be 'gpt2' or 'llama'")
    if c['n_embd'] % c['n_head']:
        raise UserError(f"n_embd={c['n_embd']} must be divisible by n_head={c['n_head']}")
    if c['gradient_accumulation_steps'] % world:
        raise UserError(f"gradient_accumulation_steps={c['gradient_accumulation_steps']} must be divisible by the "
                        f"number of ranks ({world}): S = batch_size * gradient_accumulation_steps is global")
    for key in ('log_interval', 'val_tokens'):
        if c[key] < 1:
            raise UserError(f"{key}={c[key]} must be at least 1")
    for key in ('eval_interval', 'checkpoint_interval', 'spike_eval_steps', 'spike_eval_interval'):
        if c[key] < 0:
            raise UserError(f"{key}={c[key]} must be 0 or more")
    if c['dtype'] not in ('auto', 'float32', 'bfloat16', 'float16'):
        raise UserError(f"dtype={c['dtype']!r} must be 'auto', 'float32', 'bfloat16' or 'float16'")
    if c['device'] != 'auto' and c['device'].startswith('cuda') and not torch.cuda.is_available():
        raise UserError(f"device={c['device']!r} but no CUDA GPU is visible: use device='cpu' or 'auto'")
    if c['init_from'] not in ('scratch', 'resume') and not os.path.exists(c['init_from']):
        raise UserError(f"init_from={c['init_from']!r} is not 'scratch', 'resume' or an existing checkpoint path")
    if not all(isinstance(k, int) and 0 < k <= c['max_iters'] for k in c['checkpoint_steps']):
        raise UserError(f"checkpoint_steps={c['checkpoint_steps']} must be steps between 1 and max_iters")


def check_sources(generic, target, config, plan):
    bs = config['block_size']
    for key in ('tokenizer', 'vocab_size'):
        if generic['meta'].get(key) != target['meta'].get(key):
            raise UserError(f"generic_dir and target_dir use different {key}s ({generic['meta'].get(key)!r} vs "
                            f"{target['meta'].get(key)!r}): prepare both with the same tokenizer")
    for source in (generic, target):
        if len(source['train']) < bs + 1 and not (source is target and plan['U'] == 0):
            raise UserError(f"{source['dir']}/train.bin has {len(source['train'])} tokens, fewer than one "
                            f"block_size={bs} sequence: lower block_size or prepare more data")
        if val_windows(source, config) < 1:
            raise UserError(f"{source['dir']}/val.bin has {len(source['val'])} tokens and val_tokens="
                            f"{config['val_tokens']}: validation needs at least block_size+1={bs + 1}")


def fingerprint(config, generic, target):
    """What fixes the data order: schedule keys, seeds, sizes and each source's meta.json."""
    out = {k: config[k] for k in FINGERPRINT_KEYS}
    for source in (generic, target):
        out[f"{source['name']}_meta_sha256"] = source['meta_sha256']
        out[f"{source['name']}_train_tokens"] = len(source['train'])
    return out


def check_resume(checkpoint, config, plan, this_fingerprint, path):
    """A resume of this run must keep the schedule, seeds and data (the fingerprint). A fork (resume_from =
    another run's checkpoint) may change the future, but its first `step` steps and its data must be the
    checkpoint's: the prefix hash says whether this run would have reached exactly that state."""
    step = checkpoint['step']
    changed = [k for k in this_fingerprint if checkpoint['fingerprint'].get(k) != this_fingerprint[k]]
    if config['resume_from']:
        changed = [k for k in changed if k.endswith(('_meta_sha256', '_train_tokens'))]
        if schedule.prefix_hashes(config, plan, upto=step)[-1] != checkpoint['prefix_hash']:
            changed.append(f"the plan of the first {step} steps")
    if changed and not config['force_resume']:
        raise UserError(f"cannot resume from {path}: changed since it was saved: {', '.join(changed)}; "
                        f"use --force_resume=True to resume anyway")


def load_checkpoint(path):
    # weights_only=True: loading a checkpoint can never run code from the file
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:
        raise UserError(f"cannot load checkpoint {path}: {type(e).__name__}: {e}")


def check_architecture(checkpoint, config, path):
    saved = checkpoint['config']
    changed = [f"{k}: {saved.get(k)!r} -> {config[k]!r}" for k in MODEL_KEYS if saved.get(k) != config[k]]
    if changed:
        raise UserError(f"checkpoint {path} has another architecture ({'; '.join(changed)}): set the model keys "
                        f"to the checkpoint's")


def save_checkpoint(path, state):
    """Atomic: write a temporary file, fsync, rename over the old one. A kill or a full disk mid-save leaves the
    previous checkpoint in place and loadable."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, 'wb') as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
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

    # --- data and plan (checked before the model exists) ---
    generic = open_source('generic', config['generic_dir'])
    target = open_source('target', config['target_dir'])
    bs = config['block_size']
    windows = lambda source: max(0, (len(source['train']) - 1) // bs)
    checkpoint, start_step = None, 0
    if config['init_from'] not in ('scratch', 'resume'):  # weights of another run; this run's own plan
        path = config['init_from']
        path = os.path.join(path, 'ckpt.pt') if os.path.isdir(path) else path
        checkpoint = load_checkpoint(path)
        check_architecture(checkpoint, config, path)
        if config['generic_offset'] == 0:  # continue that run's generic cursor: replay is fresh data
            config['generic_offset'] = checkpoint['generic_cursor']
    plan = schedule.make_plan(config, windows(target), windows(generic))
    check_sources(generic, target, config, plan)
    pool = schedule.target_pool(config['data_seed'], windows(target), plan['U']) if plan['U'] else np.zeros(0, int)
    this_fingerprint = fingerprint(config, generic, target)
    resume_path = None
    if config['init_from'] == 'resume':
        resume_path = config['resume_from'] or os.path.join(out_dir, 'ckpt.pt')
        if not os.path.isfile(resume_path):
            raise UserError(f"init_from='resume' but {resume_path} does not exist: start with init_from='scratch'")
        checkpoint = load_checkpoint(resume_path)
        check_architecture(checkpoint, config, resume_path)
        start_step = checkpoint['step']
        check_resume(checkpoint, config, plan, this_fingerprint, resume_path)
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

    def new_optimizer():
        return model.configure_optimizers(config['weight_decay'], config['learning_rate'],
                                          (config['beta1'], config['beta2']), config['adam_eps'], device_type)
    optimizer = new_optimizer()
    if config['init_from'] == 'resume':
        optimizer.load_state_dict(checkpoint['optimizer'])
        torch.set_rng_state(checkpoint['rng_cpu'])
        if device_type == 'cuda' and 'rng_cuda' in checkpoint:
            torch.cuda.set_rng_state(checkpoint['rng_cuda'])
    raw_model = model
    use_compile = config['compile'] if config['compile'] != 'auto' else device_type == 'cuda'
    if use_compile:
        model = torch.compile(model)
    if ddp:
        model = DDP(model, device_ids=[local_rank] if device_type == 'cuda' else None)
    device_name = torch.cuda.get_device_name(device) if device_type == 'cuda' else 'cpu'

    # --- log: keep what came before the checkpoint (for a fork: the parent's), append from here ---
    log_path = os.path.join(out_dir, 'log.jsonl')
    if master:
        os.makedirs(out_dir, exist_ok=True)
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

    def state(step):
        """Everything a resume needs; RNG states as tensors so torch.load(weights_only=True) can read it."""
        window = sums.clone()
        if world > 1:
            dist.all_reduce(window)
        s = dict(model=raw_model.state_dict(), optimizer=optimizer.state_dict(), step=step, config=config,
                 fingerprint=this_fingerprint, prefix_hash=schedule.prefix_hashes(config, plan, upto=step)[-1],
                 generic_cursor=config['generic_offset'] + step * S - schedule.targets_before(plan, step),
                 rng_cpu=torch.get_rng_state(), log_sums=window.cpu(), last_log_step=last_log_step)
        if device_type == 'cuda':
            s['rng_cuda'] = torch.cuda.get_rng_state(device)
        return s

    def checkpoint_now(step):
        wanted = [name for name, due in (
            ('ckpt.pt', (config['checkpoint_interval'] and step % config['checkpoint_interval'] == 0)
             or step == plan['stage2_start'] or step == N),
            (f'ckpt_{step}.pt', step in config['checkpoint_steps'])) if due]
        if wanted:
            s = state(step)
            if not torch.isfinite(s['log_sums']).all():  # never replace the last good checkpoint with a diverged
                return                                   # model (the sums are reduced: every rank agrees)
            if master:
                for name in wanted:
                    save_checkpoint(os.path.join(out_dir, name), s)

    load_args = (plan, pool, generic, target, bs, micro_batch, rank_micro_steps, rank, device_type == 'cuda')
    prefetch = ThreadPoolExecutor(max_workers=1)  # reads step t+1's windows while step t computes
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
        fed = []
        for m, (x, y, is_target) in enumerate(batch):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            is_target = is_target.to(device, non_blocking=True)
            if ddp:
                model.require_backward_grad_sync = m == rank_micro_steps - 1
            with ctx:
                _, loss = model(x, y)
            scaler.scale(loss.mean() / rank_micro_steps).backward()
            with torch.no_grad():
                per_seq, tgt = loss.detach().double(), is_target.double()
                sums += torch.stack([per_seq.sum(), (per_seq * tgt).sum(), tgt.sum(),
                                     (per_seq * (1 - tgt)).sum(), (1 - tgt).sum()])
            if config['log_batch_ids']:
                fed.append(torch.stack([x[:, 0], is_target.long()], 1).cpu())
        if config['grad_clip'] > 0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(raw_model.parameters(), config['grad_clip'])
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

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
            if not math.isfinite(window[0]):
                raise UserError(f"loss is {window[0]} at step {t} (steps {last_log_step + 1}..{t}); stopping. "
                                f"The last good checkpoint is in {out_dir}")
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
