"""
schedule.py: everything that decides WHICH SEQUENCES each optimizer step sees and WHAT THE LEARNING RATE IS.
Pure Python + numpy (no torch); train.py only executes what this file decides. Read it top to bottom.

Symbols (the paper's, next to our config names):
    N = max_iters                      optimizer steps
    S = batch_size * gradient_accumulation_steps   sequences per step, over all ranks
    U = target_tokens // block_size    unique target sequences (a fixed pool, drawn once)
    e = target_epochs                  times each pool sequence is seen
    γ = U*e / (N*S)                    share of all sequence slots that are target
    ρ = replay_fraction                generic share of stage 2
    α = stage2_allocation              share of the target slots that go to stage 2 (the rest: stage 1)
    δ = stage2_fraction                stage-2 length / N
Give two of (ρ, α, δ); the third follows from δ(1−ρ) = γα. δ = 1 means no stage 1 (target spread over the whole
run, as the paper's reference runs); δ = 0 means no stage 2.

What step t sees:
  1. Stage 2 is the last L2 = max(round(δN), ceil(K2/S)) steps; stage 1 the first L1 = N − L2.
     K2 = round(α·U·e) target sequences go to stage 2, K1 = U·e − K2 to stage 1, exactly.
  2. Inside a stage of L steps holding K target sequences, its j-th step gets floor((j+1)K/L) − floor(jK/L) of them
     (as even as integers allow), and inside a step the k target slots of S are spread the same way.
     DEVIATION from the paper: it mixes exactly per block of 2048 sequences with random placement inside a
     block; we spread deterministically per step, so any step's composition is a pure function of (config, t).
  3. Target slots take pool sequences in order of a running counter c = 0, 1, ...: epoch c // U visits the
     pool in its own data_seed permutation, so every epoch sees each pool sequence exactly once; the counter
     runs on across the stage boundary.
  4. Generic slots take windows of the generic train split in a data_seed permutation, without replacement,
     starting after generic_offset windows (a run started from another run's checkpoint continues that run's
     cursor, so replay is fresh data, as the paper never repeats C4). If the split runs out it is reshuffled
     and the plan warns.
A "window" w of a split is tokens [w*block_size, w*block_size + block_size + 1): block_size inputs plus the
shifted labels, so consecutive windows never share an input token.

Learning rate: `lr_schedule` ∈ {cosine, wsd, constant}, linear warmup over max(1, round(warmup_fraction·L))
steps (the LR of the first update is peak/warmup, never 0), then cosine to min_lr, or WSD: stable, then linear to
min_lr over the last cooldown_fraction of the schedule. mode='midtrain': one schedule over all N steps, one
optimizer. mode='finetune': stage 2 restarts the schedule at stage2_learning_rate and resets the optimizer.
`stage2_schedule` ('restart'|'continue') and `reset_optimizer` override the mode's defaults (ablations).

Usage: python schedule.py [config.py ...] [--key=value ...] [--format=json] [--show_step=t]
"""
import functools
import hashlib
import json
import math
import os
import sys

import numpy as np

from configurator import UserError, load_config, run_main

# Keys whose whole effect on training is captured by the per-step records below (composition, ids, LR, optimizer
# reset, evals) or that only say where things go. Every OTHER key must match for two runs to share a prefix.
PER_STEP_KEYS = {'max_iters', 'target_tokens', 'target_epochs', 'replay_fraction', 'stage2_allocation', 'stage2_fraction',
                 'mode', 'reset_optimizer', 'stage2_schedule', 'lr_schedule', 'learning_rate',
                 'stage2_learning_rate', 'min_lr', 'warmup_fraction', 'cooldown_fraction', 'eval_interval',
                 'spike_eval_interval', 'spike_eval_steps'}
IO_KEYS = {'out_dir', 'checkpoint_interval', 'checkpoint_steps', 'init_from', 'resume_from', 'force_resume',
           'stop_after', 'wandb_log', 'wandb_project', 'wandb_run_name'}


def round_half_up(x):
    """Round to the nearest integer, halves up (Python's round() rounds halves to even)."""
    return int(math.floor(x + 0.5))


def spread(total, slots, index):
    """How many of `total` items land in slot `index` of `slots` when spread as evenly as integers allow.
    Works on numpy arrays of indices too. The first `index` slots hold floor(index*total/slots) items."""
    return (index + 1) * total // slots - index * total // slots


# ---------------------------------------------------------------------------------------------------------------
# 1. Resolve the stages: (ρ, α, δ) -> stage lengths and exact target counts
# ---------------------------------------------------------------------------------------------------------------

def make_plan(config, target_windows=None, generic_windows=None):
    """Check the schedule keys and return the plan: a dict of plain numbers that fixes every step.
    target_windows / generic_windows: how many windows each train split has (train.py knows; schedule.py's CLI
    reads them from the data dirs when present). Without them, ids are pool ids and generic stream positions."""
    c = config
    for key in ('max_iters', 'batch_size', 'gradient_accumulation_steps', 'block_size'):
        if c[key] < 1:
            raise UserError(f"{key}={c[key]} must be at least 1")
    for key in ('target_tokens', 'generic_offset'):
        if c[key] < 0:
            raise UserError(f"{key}={c[key]} must be 0 or more")
    for key in ('replay_fraction', 'stage2_allocation', 'stage2_fraction', 'warmup_fraction', 'cooldown_fraction'):
        value = c[key]
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not 0 <= value <= 1):
            raise UserError(f"{key}={value!r} must be a number between 0 and 1")
    if c['mode'] not in ('midtrain', 'finetune'):
        raise UserError(f"mode={c['mode']!r} must be 'midtrain' or 'finetune'")
    if c['lr_schedule'] not in ('cosine', 'wsd', 'constant'):
        raise UserError(f"lr_schedule={c['lr_schedule']!r} must be 'cosine', 'wsd' or 'constant'")
    if c['stage2_schedule'] not in (None, 'restart', 'continue'):
        raise UserError(f"stage2_schedule={c['stage2_schedule']!r} must be 'restart', 'continue' or None")
    if c['reset_optimizer'] is not None and not isinstance(c['reset_optimizer'], bool):
        raise UserError(f"reset_optimizer={c['reset_optimizer']!r} must be True, False or None")

    N = c['max_iters']
    S = c['batch_size'] * c['gradient_accumulation_steps']
    U = c['target_tokens'] // c['block_size']
    if c['target_tokens'] > 0 and U == 0:
        raise UserError(f"target_tokens={c['target_tokens']} is less than one sequence of block_size="
                        f"{c['block_size']} tokens")
    e = c['target_epochs'] if U > 0 else 0
    if U > 0 and e < 1:
        raise UserError(f"target_epochs={c['target_epochs']} must be at least 1")
    T = U * e  # target slots in the whole run, counting repeats
    if T > N * S:
        raise UserError(f"target_tokens//block_size * target_epochs = {T} target sequences do not fit in "
                        f"max_iters * batch_size * gradient_accumulation_steps = {N * S} slots")
    gamma = T / (N * S)
    rho, alpha, delta = resolve_rho_alpha_delta(c['replay_fraction'], c['stage2_allocation'],
                                                c['stage2_fraction'], gamma)

    # Exact integer counts. Stage 2 is never shorter than its target sequences need.
    K2 = round_half_up(alpha * T)
    K1 = T - K2
    L2 = min(N, max(round_half_up(delta * N), -(-K2 // S)))
    L1 = N - L2
    if K1 > L1 * S:
        raise UserError(f"stage 1 needs {K1} target sequences but has only {L1 * S} slots after rounding "
                        f"(stage2_fraction={delta:.6g}, stage2_allocation={alpha:.6g}): lower stage2_fraction "
                        f"or raise stage2_allocation")
    warnings = []
    rho_realised = 1 - K2 / (L2 * S) if L2 > 0 else None
    if L2 > 0 and abs(rho_realised - rho) > 0.01:
        warnings.append(f"rounding moved ρ (replay_fraction) from {rho:.4f} to {rho_realised:.4f}: stage 2 has "
                        f"{L2} steps x {S} sequences for {K2} target sequences")

    finetune = c['mode'] == 'finetune'
    stage2_schedule = c['stage2_schedule'] or ('restart' if finetune else 'continue')
    reset = finetune if c['reset_optimizer'] is None else c['reset_optimizer']
    two_stages = L1 > 0 and L2 > 0  # a reset needs something before it

    generic_total = N * S - T
    plan = dict(
        N=N, S=S, U=U, e=e, T=T, gamma=gamma, rho=rho, alpha=alpha, delta=delta,
        stage1_steps=L1, stage2_steps=L2, stage2_start=L1, stage1_target=K1, stage2_target=K2,
        rho_realised=rho_realised, generic_total=generic_total,
        # 'restart' gives stage 2 its own schedule at stage2_learning_rate; with no stage 1 (δ = 1, e.g. fine-tuning
        # from another run's checkpoint) that is the whole run
        restart_schedule=L2 > 0 and stage2_schedule == 'restart',
        reset_optimizer=two_stages and reset,
        lr_schedule=c['lr_schedule'], learning_rate=c['learning_rate'],
        stage2_learning_rate=c['stage2_learning_rate'], min_lr=c['min_lr'],
        warmup_fraction=c['warmup_fraction'], cooldown_fraction=c['cooldown_fraction'],
        eval_interval=c['eval_interval'], spike_eval_interval=c['spike_eval_interval'],
        spike_eval_steps=c['spike_eval_steps'],
        data_seed=c['data_seed'], generic_offset=c['generic_offset'], block_size=c['block_size'],
        target_windows=target_windows, generic_windows=generic_windows, warnings=warnings,
    )
    if target_windows is not None and U > target_windows:
        raise UserError(f"target_tokens={c['target_tokens']} asks for {U} unique target sequences but the target "
                        f"train split holds only {target_windows} windows of block_size={c['block_size']}")
    if generic_windows is not None and generic_total > 0:
        if generic_windows < 1:
            raise UserError(f"the generic train split is shorter than one window of block_size={c['block_size']}")
        plan['generic_epochs'] = (c['generic_offset'] + generic_total) / generic_windows
        if plan['generic_epochs'] > 1:
            warnings.append(f"the generic train split repeats: this run needs {generic_total} generic windows "
                            f"after generic_offset={c['generic_offset']}, the split has {generic_windows} "
                            f"({plan['generic_epochs']:.2f} epochs; the paper never repeats generic data)")
    return plan


def resolve_rho_alpha_delta(rho, alpha, delta, gamma):
    """Given two of (ρ, α, δ) (None = not given) and γ, return all three, or raise naming the keys."""
    given = sum(v is not None for v in (rho, alpha, delta))
    if gamma == 0:  # no target data: plain pre-training; a given δ still places a (generic-only) stage 2
        return 1.0, 0.0, (delta or 0.0)
    if given < 2:
        raise UserError("give two of replay_fraction (ρ), stage2_allocation (α), stage2_fraction (δ); "
                        "δ(1−ρ) = γα gives the third")
    if given == 3:
        if abs(delta * (1 - rho) - gamma * alpha) > 1e-6:
            raise UserError(f"replay_fraction={rho}, stage2_allocation={alpha}, stage2_fraction={delta} are "
                            f"inconsistent: δ(1−ρ) = {delta * (1 - rho):.6g} but γα = {gamma * alpha:.6g} "
                            f"(γ={gamma:.6g}); give only two")
    elif delta is None:
        if rho == 1:
            if alpha > 0:
                raise UserError(f"replay_fraction=1 leaves no room for the target data that stage2_allocation="
                            f"{alpha} puts in stage 2")
            raise UserError("replay_fraction=1 with stage2_allocation=0 does not fix the stage-2 length: "
                            "give stage2_fraction")
        delta = gamma * alpha / (1 - rho)
    elif alpha is None:
        alpha = delta * (1 - rho) / gamma
        if alpha > 1 + 1e-9:
            raise UserError(f"stage2_fraction={delta} with replay_fraction={rho} needs {alpha:.3g}x all target "
                            f"data in stage 2: lower stage2_fraction or raise replay_fraction")
        alpha = min(alpha, 1.0)
    else:  # rho is None
        if delta == 0:
            if alpha > 0:
                raise UserError(f"stage2_fraction=0 leaves no stage 2 for stage2_allocation={alpha}")
            rho = 1.0
        else:
            rho = 1 - gamma * alpha / delta
            if rho < -1e-9:
                raise UserError(f"stage2_fraction={delta} is too short for its target data: stage 2 needs "
                                f"δ ≥ γα = {gamma * alpha:.6g} (stage2_allocation={alpha})")
            rho = max(rho, 0.0)
    if delta > 1 + 1e-9:
        raise UserError(f"replay_fraction={rho} and stage2_allocation={alpha} give stage2_fraction "
                        f"δ = γα/(1−ρ) = {delta:.4g} > 1: lower replay_fraction or stage2_allocation")
    delta = min(delta, 1.0)
    if rho == 1 and alpha > 0:
        raise UserError(f"replay_fraction=1 leaves no room for the target data that stage2_allocation={alpha} "
                        "puts in stage 2")
    stage1_weight = gamma * (1 - alpha) / (1 - delta) if delta < 1 else (math.inf if alpha < 1 else 0.0)
    if stage1_weight > 1 + 1e-9:
        raise UserError(f"stage 1 would be {stage1_weight:.3g}x target data (weight γ(1−α)/(1−δ) must be at "
                        f"most 1): raise stage2_allocation or lower stage2_fraction")
    return rho, alpha, delta


# ---------------------------------------------------------------------------------------------------------------
# 2. What step t sees
# ---------------------------------------------------------------------------------------------------------------

def stage_of(plan, t):
    return 1 if t < plan['stage2_start'] else 2


def targets_before(plan, t):
    """Target sequences fed in steps 0..t-1 (O(1): the spreading rule has a closed-form prefix sum)."""
    s, L2 = plan['stage2_start'], plan['stage2_steps']
    if t <= s:
        return t * plan['stage1_target'] // s if s else 0
    return plan['stage1_target'] + (t - s) * plan['stage2_target'] // L2


def step_batch(plan, t):
    """The global batch of step t: (is_target, ids), two arrays of S. ids are target pool ids (0..U-1) where
    is_target, else generic window indices (or generic stream positions when the plan has no data sizes)."""
    S = plan['S']
    first_target = targets_before(plan, t)
    n_target = targets_before(plan, t + 1) - first_target
    is_target = spread(n_target, S, np.arange(S)) == 1
    ids = np.empty(S, dtype=np.int64)
    ids[is_target] = target_pool_ids(plan, first_target, n_target)
    first_generic = plan['generic_offset'] + t * S - first_target
    ids[~is_target] = generic_windows(plan, first_generic, S - n_target)
    return is_target, ids


def target_pool_ids(plan, first, count):
    """Pool ids for target counter values first..first+count-1; epoch c//U visits the pool in its own order."""
    U = plan['U']
    counters = np.arange(first, first + count)
    out = np.empty(count, dtype=np.int64)
    for epoch in np.unique(counters // U) if count else []:
        here = counters // U == epoch
        out[here] = epoch_order(plan['data_seed'], U, int(epoch))[counters[here] % U]
    return out


def generic_windows(plan, first, count):
    """Generic windows for stream positions first..first+count-1: a data_seed permutation of the split,
    reshuffled if the split runs out. Without a known split size, the stream positions themselves."""
    positions = np.arange(first, first + count)
    W = plan['generic_windows']
    if W is None:
        return positions
    out = np.empty(count, dtype=np.int64)
    for epoch in np.unique(positions // W) if count else []:
        here = positions // W == epoch
        out[here] = generic_order(plan['data_seed'], W, int(epoch))[positions[here] % W]
    return out


@functools.lru_cache(maxsize=8)
def epoch_order(data_seed, U, epoch):
    return np.random.default_rng([data_seed, 1, epoch]).permutation(U)


@functools.lru_cache(maxsize=4)
def generic_order(data_seed, W, epoch):
    return np.random.default_rng([data_seed, 2, epoch]).permutation(W)


@functools.lru_cache(maxsize=4)
def target_pool(data_seed, target_windows, U):
    """Window indices of the U pool sequences in the target train split: drawn once, sorted, never redrawn."""
    return np.sort(np.random.default_rng([data_seed, 0]).choice(target_windows, U, replace=False))


# ---------------------------------------------------------------------------------------------------------------
# 3. Learning rate, optimizer resets, evaluations
# ---------------------------------------------------------------------------------------------------------------

def schedule_lr(kind, i, length, peak, min_lr, warmup_fraction, cooldown_fraction):
    """LR at step i of one schedule of `length` steps: linear warmup, then constant / cosine / WSD."""
    warmup = min(length, max(1, round_half_up(warmup_fraction * length)))
    if i < warmup:
        return peak * (i + 1) / warmup
    if kind == 'constant':
        return peak
    if kind == 'cosine':
        progress = (i - warmup) / max(1, length - warmup)
        return min_lr + (peak - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
    decay_start = max(warmup, length - round_half_up(cooldown_fraction * length))  # wsd
    if i < decay_start:
        return peak
    return peak + (min_lr - peak) * (i - decay_start) / max(1, length - decay_start)


def lr_at(plan, t):
    """The learning rate of step t."""
    s = plan['stage2_start']
    if plan['restart_schedule'] and t >= s:
        i, length, peak = t - s, plan['N'] - s, plan['stage2_learning_rate']
    else:
        i, length, peak = t, (s if plan['restart_schedule'] else plan['N']), plan['learning_rate']
    return schedule_lr(plan['lr_schedule'], i, length, peak, plan['min_lr'], plan['warmup_fraction'],
                       plan['cooldown_fraction'])


def resets_optimizer_at(plan, t):
    """True at the first step of stage 2 when the optimizer state is thrown away there (fine-tuning)."""
    return plan['reset_optimizer'] and t == plan['stage2_start']


def evals_at(plan, k):
    """True if a full validation pass runs after k completed steps (k = 0..N): every eval_interval, at the end,
    and every spike_eval_interval for spike_eval_steps after stage 2 starts (the initial loss spike)."""
    if k == plan['N'] or (plan['eval_interval'] > 0 and k % plan['eval_interval'] == 0):
        return True
    s = plan['stage2_start']
    since = k - s
    return (plan['spike_eval_steps'] > 0 and plan['stage2_steps'] > 0 and s > 0
            and 0 <= since <= plan['spike_eval_steps'] and since % max(1, plan['spike_eval_interval']) == 0)


# ---------------------------------------------------------------------------------------------------------------
# 4. Prefix hashes: two runs whose hashes agree at k reach the same state after k steps (sweep.py forks on this)
# ---------------------------------------------------------------------------------------------------------------

def prefix_hashes(config, plan, upto=None):
    """h[k] for k = 0..upto (default N): a digest of everything that decides the state after k steps and the
    log up to it: the config keys not covered per step, then for each step t < k its stage, LR, optimizer
    reset, eval before it, and the ids it feeds, and finally whether an eval runs at k."""
    upto = plan['N'] if upto is None else upto
    fixed = {k: v for k, v in sorted(config.items()) if k not in PER_STEP_KEYS | IO_KEYS}
    running = hashlib.sha256(json.dumps(fixed, sort_keys=True, default=str).encode())
    hashes = []
    for t in range(upto + 1):
        closing = running.copy()
        closing.update(b'E' if evals_at(plan, t) else b'-')
        hashes.append(closing.hexdigest())
        if t < upto:
            is_target, ids = step_batch(plan, t)
            running.update(f"{t}|{stage_of(plan, t)}|{lr_at(plan, t)!r}|{resets_optimizer_at(plan, t)}|"
                           f"{evals_at(plan, t)}|".encode())
            running.update(is_target.tobytes())
            running.update(ids[~is_target].tobytes())
            if is_target.any():  # the target windows themselves, so runs with other pool sizes can share a prefix
                if plan['target_windows'] is None:
                    running.update(f"U={plan['U']}|".encode())
                    running.update(ids[is_target].tobytes())
                else:
                    running.update(target_pool(plan['data_seed'], plan['target_windows'], plan['U'])
                                   [ids[is_target]].tobytes())
    return hashes


# ---------------------------------------------------------------------------------------------------------------
# 5. The command line: print the plan, or one step
# ---------------------------------------------------------------------------------------------------------------

def split_windows(data_dir, block_size):
    """Windows of block_size (+1 label token) in data_dir/train.bin, from meta.json's dtype; None if absent."""
    meta_path, bin_path = os.path.join(data_dir, 'meta.json'), os.path.join(data_dir, 'train.bin')
    if not (os.path.isfile(meta_path) and os.path.isfile(bin_path)):
        return None
    with open(meta_path) as f:
        itemsize = np.dtype(json.load(f).get('dtype', 'uint16')).itemsize
    return max(0, (os.path.getsize(bin_path) // itemsize - 1) // block_size)


def summarize(config, plan):
    """The plan as one JSON-able dict: what the CLI prints."""
    N, s = plan['N'], plan['stage2_start']
    key_steps = sorted({0, max(0, s - 1), s, N - 1} - {N})
    out = {k: plan[k] for k in ('N', 'S', 'U', 'e', 'T', 'gamma', 'rho', 'alpha', 'delta', 'rho_realised',
                                'stage1_steps', 'stage2_steps', 'stage2_start', 'stage1_target', 'stage2_target',
                                'generic_total', 'restart_schedule', 'reset_optimizer', 'warnings')}
    out.update(block_size=plan['block_size'], tokens_per_step=plan['S'] * plan['block_size'],
               target_tokens_unique=plan['U'] * plan['block_size'],
               stage1_target_share=plan['stage1_target'] / (plan['stage1_steps'] * plan['S'])
               if plan['stage1_steps'] else None,
               stage2_target_share=plan['stage2_target'] / (plan['stage2_steps'] * plan['S'])
               if plan['stage2_steps'] else None,
               generic_epochs=plan.get('generic_epochs'), mode=config['mode'], lr_schedule=plan['lr_schedule'],
               lr_at_key_steps={t: lr_at(plan, t) for t in key_steps},
               eval_steps=[k for k in range(N + 1) if evals_at(plan, k)])
    return out


def describe_step(plan, t):
    is_target, ids = step_batch(plan, t)
    return dict(step=t, stage=stage_of(plan, t), lr=lr_at(plan, t), reset_optimizer=resets_optimizer_at(plan, t),
                n_target=int(is_target.sum()), n_generic=int((~is_target).sum()),
                target_pool_ids=ids[is_target].tolist(),
                target_windows=(target_pool(plan['data_seed'], plan['target_windows'], plan['U'])
                                [ids[is_target]].tolist() if plan['target_windows'] else None),
                generic_windows=ids[~is_target].tolist() if plan['generic_windows'] is not None else None,
                generic_stream_positions=None if plan['generic_windows'] is not None else ids[~is_target].tolist(),
                slots_target=np.flatnonzero(is_target).tolist())


def print_text(summary):
    p = summary
    print(f"{p['N']} steps x {p['S']} sequences x {p['block_size']} tokens = {p['N'] * p['tokens_per_step']:,} "
          f"tokens; mode {p['mode']}, LR {p['lr_schedule']}")
    print(f"target: U={p['U']} unique sequences x e={p['e']} epochs = {p['T']} sequences, "
          f"γ={p['gamma']:.6g}; ρ={p['rho']:.4g} α={p['alpha']:.4g} δ={p['delta']:.4g}")
    s = p['stage2_start']
    if p['stage1_steps']:
        print(f"stage 1: steps 0..{s - 1} ({p['stage1_steps']} steps), {p['stage1_target']} target sequences "
              f"(share {p['stage1_target_share']:.4g})")
    if p['stage2_steps']:
        print(f"stage 2: steps {s}..{p['N'] - 1} ({p['stage2_steps']} steps), {p['stage2_target']} target "
              f"sequences (share {p['stage2_target_share']:.4g}, realised ρ={p['rho_realised']:.4g}); "
              f"LR schedule {'restarts' if p['restart_schedule'] else 'continues'}, optimizer "
              f"{'reset' if p['reset_optimizer'] else 'kept'}")
    epochs = f", {p['generic_epochs']:.3g} generic epochs" if p['generic_epochs'] is not None else ""
    print(f"total: {p['T']} target + {p['generic_total']} generic sequences{epochs}")
    print("LR at key steps: " + ", ".join(f"{t}: {lr:.4g}" for t, lr in p['lr_at_key_steps'].items()))
    ev = p['eval_steps']
    print(f"evals after {len(ev)} step counts: {ev[:8]}{' ...' if len(ev) > 8 else ''}")
    for w in p['warnings']:
        print(f"warning: {w}")


def main():
    config = load_config(sys.argv[1:], extra_keys={'format': 'text', 'show_step': -1})
    plan = make_plan(config, split_windows(config['target_dir'], config['block_size']),
                     split_windows(config['generic_dir'], config['block_size']))
    if config['show_step'] >= 0:
        if config['show_step'] >= plan['N']:
            raise UserError(f"show_step={config['show_step']} is past the last step {plan['N'] - 1}")
        out = describe_step(plan, config['show_step'])
    else:
        out = summarize(config, plan)
    if config['format'] == 'json':
        print(json.dumps(out))
    elif config['show_step'] >= 0:
        for key, value in out.items():
            print(f"{key}: {value}")
    else:
        print_text(out)


if __name__ == '__main__':
    run_main(main)
