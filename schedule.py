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

THE PLAN IS A LIST OF STAGES. A stage has L steps, exactly K target sequences, optionally a ramp (its target share
moves linearly from its first step to its last), an LR schedule that restarts or continues the previous stage's,
and whether the optimizer is reset at its start. Three ways to write one:
  - the paper's keys give two stages (paper_stages): give two of (ρ, α, δ); the third follows from δ(1−ρ) = γα.
    Stage 2 is the last L2 = max(round(δN), ceil(K2/S)) steps, stage 1 the first L1 = N − L2; K2 = round(α·U·e)
    target sequences go to stage 2, K1 = U·e − K2 to stage 1, exactly. δ = 1 means no stage 1 (target spread over
    the whole run, as the paper's reference runs); δ = 0 means no stage 2. mode='midtrain': one LR schedule over
    all N steps, one optimizer; mode='finetune': stage 2 restarts the schedule at stage2_learning_rate and resets
    the optimizer (`stage2_schedule` and `reset_optimizer` override either, for ablations).
  - mode='mixed' (config/finetune_replay.py): ONE stage in which every step mixes the target with replay at share
    ρ, one LR schedule (α = δ = 1). max_iters=0 derives N = ⌈U·e / (S·(1 − ρ))⌉, so every ρ sees the same target
    data and only adds replay (the paper's 8B protocol); with max_iters given, ρ = 1 − γ.
  - `stages = [dict(...), ...]` gives any list (stages_from_list; config/three_stage.py, config/replay_ramp.py).

What step t sees:
  1. t falls in the stage whose steps [start, start + L) hold it.
  2. Inside a stage of L steps holding K target sequences, the first j steps hold floor(K·W(j)/W(L)) of them,
     W(j) = the summed weights of steps 0..j-1: every weight 1 without a ramp (so step j gets
     floor((j+1)K/L) − floor(jK/L): as even as integers allow), linear from a to b with a ramp a:b. The counts are
     exact integers summing to K, from a closed form (integer arithmetic), and inside a step the k target slots
     of S are spread the same even way.
     DEVIATION from the paper: it mixes exactly per block of 2048 sequences with random placement inside a
     block; we spread deterministically per step, so any step's composition is a pure function of (config, t).
  3. Target slots take pool sequences in order of a running counter c = 0, 1, ...: epoch c // U visits the
     pool in its own data_seed permutation, so every epoch sees each pool sequence exactly once; the counter
     runs on across stage boundaries.
  4. Generic slots take windows of the generic train split in a data_seed permutation, without replacement,
     starting after generic_offset windows (a run started from another run's checkpoint continues that run's
     cursor, so replay is fresh data, as the paper never repeats C4). If the split runs out it is reshuffled
     and the plan warns.
A "window" w of a split is tokens [w*block_size, w*block_size + block_size + 1): block_size inputs plus the
shifted labels, so consecutive windows never share an input token.

Learning rate: a schedule starts at the first stage and at every stage that restarts it, and runs over that stage
and the stages that continue it: `lr_schedule` ∈ {cosine, wsd, constant}, linear warmup over
max(1, round(warmup_fraction·L)) steps (the LR of the first update is peak/warmup, never 0), then cosine to min_lr,
or WSD: stable, then linear to min_lr over the last cooldown_fraction of the schedule.

Usage: python schedule.py [config.py ...] [--key=value ...] [--format=json] [--show_step=t]
"""
import bisect
import difflib
import functools
import hashlib
import json
import math
import os
from fractions import Fraction

import numpy as np

from configurator import UserError, check_rule, is_choice, load_config, run_main
from sources import split_sizes

# THE PLAN, make_plan's dict of plain numbers (summarize() adds what the CLI and summary.json show):
#   N, S, U, e, T = U·e, gamma, generic_total = N·S − T; stages (below); generic_offset (windows used before step 0)
#   eval_interval, spike_eval_interval, spike_eval_steps, data_seed, block_size: the config's
#   target_windows, generic_windows: the train splits' sizes in windows (None: unknown, ids are positions);
#   generic_epochs: passes over the generic split (only with generic_windows); warnings; mode: 'midtrain' |
#   'finetune' | 'mixed' | 'stages' (a list)
#   the paper's two-stage summary (results.csv, plots and efficiency.py read it; all None for a stage list):
#   rho, alpha, delta (ρ, α, δ as given or derived), rho_realised (stage 2's generic share after rounding),
#   stage1_steps, stage2_steps, stage2_start, stage1_target, stage2_target (L1, L2, L1, K1, K2), restart_schedule,
#   reset_optimizer (whether stage 2 restarts the LR schedule, resets the optimizer)
# A STAGE, built once by stage() (place() fills in the last three):
#   steps, target            L steps holding exactly K target sequences
#   ramp                     None, or integers (a, b): the target share moves linearly from a to b (a ratio)
#   lr                       the LR schedule it starts (lr_settings), or None: it continues the previous one
#   reset_optimizer          fresh AdamW moments at its first step
#   spike_evals              the dense evals of spike_eval_* after its start
#   start, targets_before    its first step, and the target sequences fed before it
#   schedule                 the LR schedule it runs in: lr_settings + the schedule's start and length
TWO_STAGE_KEYS = ('rho', 'alpha', 'delta', 'rho_realised', 'stage1_steps', 'stage2_steps', 'stage2_start',
                  'stage1_target', 'stage2_target', 'restart_schedule', 'reset_optimizer')
LR_KEYS = ('lr_schedule', 'learning_rate', 'min_lr', 'warmup_fraction', 'cooldown_fraction')
LR_KINDS = ('cosine', 'wsd', 'constant')


def round_half_up(x):
    """Round to the nearest integer, halves up (Python's round() rounds halves to even)."""
    return int(math.floor(x + 0.5))


def exact(x):
    """A number as the fraction it was written as (0.9 -> 9/10, not the binary float's 0.90000000000000002...)."""
    return Fraction(x).limit_denominator(10**6)


def spread(total, slots, index):
    """How many of `total` items land in slot `index` of `slots` when spread as evenly as integers allow (index
    may be a numpy array). The first `index` slots hold floor(index*total/slots) items."""
    return (index + 1) * total // slots - index * total // slots


# ---- 1. The stages: from the paper's (ρ, α, δ), one mixed stage, or a list; exact integer steps and targets ----

def make_plan(config, target_windows=None, generic_windows=None, generic_offset=None):
    """Check the schedule keys and return the plan: a dict of plain numbers that fixes every step.
    target_windows / generic_windows: how many windows each train split has (train.py knows; schedule.py's CLI
    reads them from the data dirs when present). Without them, ids are pool ids and generic stream positions.
    generic_offset: generic windows used before step 0 when not config['generic_offset'] (train.py passes the
    cursor of the checkpoint a run starts from)."""
    c = config
    derive_steps = c['stages'] is None and c['mode'] == 'mixed' and c['max_iters'] == 0
    check_keys(c, CONFIG_RULES, skip=('max_iters',) if derive_steps else ())
    S = c['batch_size'] * c['gradient_accumulation_steps']
    U = c['target_tokens'] // c['block_size']
    check_target_data(c, U)
    e = c['target_epochs'] if U > 0 else 0
    T = U * e  # target slots in the whole run, counting repeats
    N = mixed_steps(c, S, T) if derive_steps else c['max_iters']
    generic_offset = c['generic_offset'] if generic_offset is None else generic_offset
    check_fits(T, N * S, generic_offset)
    generic_total = N * S - T
    plan = dict(N=N, S=S, U=U, e=e, T=T, gamma=T / (N * S), generic_total=generic_total, generic_offset=generic_offset,
                target_windows=target_windows, generic_windows=generic_windows,
                **{k: c[k] for k in ('eval_interval', 'spike_eval_interval', 'spike_eval_steps', 'data_seed',
                                     'block_size')})
    if c['stages'] is None:
        stages, summary = paper_stages(c, N, S, T, plan['gamma'])
    else:  # no single ρ, α, δ
        stages, summary = stages_from_list(c, N, S, T), dict(dict.fromkeys(TWO_STAGE_KEYS), warnings=[], mode='stages')
    check_stages_fit(stages, S)
    plan.update(stages=place(stages, N), **summary)
    check_splits(c, plan)
    if generic_windows is not None and generic_total > 0:
        plan['generic_epochs'] = epochs = (generic_offset + generic_total) / generic_windows
        if epochs > 1:
            plan['warnings'].append(f"the generic train split repeats: this run needs {generic_total} generic "
                                    f"windows after generic_offset={generic_offset}, the split has {generic_windows}"
                                    f" ({epochs:.2f} epochs; the paper never repeats generic data)")
    return plan


def stage(steps, target, lr=None, reset_optimizer=False, spike_evals=False, ramp=None):
    """A stage, with the fields above (place() fills in where it is and its LR schedule)."""
    return dict(steps=steps, target=target, ramp=ramp, lr=lr, reset_optimizer=reset_optimizer,
                spike_evals=spike_evals, start=None, targets_before=None, schedule=None)


def lr_settings(config, overrides=None):
    """A new LR schedule: kind, peak, min_lr, warmup and cooldown fractions (the config's, or a stage's own)."""
    return {**{k: config[k] for k in LR_KEYS}, **(overrides or {})}


def paper_stages(c, N, S, T, gamma):
    """The paper's two stages from (ρ, α, δ), mode and the ablation keys, or mode='mixed''s one stage; and the
    plan's two-stage summary of them."""
    check_keys(c, PAPER_RULES)
    mixed, finetune = c['mode'] == 'mixed', c['mode'] == 'finetune'
    if mixed:
        rho, alpha, delta = check_mixed(c, N, S, T, gamma), 1.0, 1.0
    else:
        rho, alpha, delta = resolve_rho_alpha_delta(c['replay_fraction'], c['stage2_allocation'],
                                                    c['stage2_fraction'], gamma)
    # Exact integer counts. Stage 2 is never shorter than its target sequences need.
    K2 = round_half_up(alpha * T)
    K1 = T - K2
    L2 = min(N, max(round_half_up(delta * N), -(-K2 // S)))
    L1 = N - L2
    check_stage1(K1, L1 * S, alpha, delta)
    rho_realised = 1 - K2 / (L2 * S) if L2 > 0 else None
    warnings = [f"rounding moved ρ (replay_fraction) from {rho:.4f} to {rho_realised:.4f}: "
                f"{'the stage' if mixed else 'stage 2'} has {L2} steps x {S} sequences for {K2} target sequences"
                ] if L2 > 0 and abs(rho_realised - rho) > 0.01 else []
    # 'restart' gives stage 2 its own schedule at stage2_learning_rate; with no stage 1 (δ = 1, e.g. fine-tuning
    # from another run's checkpoint) that is the whole run
    restart = L2 > 0 and (c['stage2_schedule'] or ('restart' if finetune else 'continue')) == 'restart'
    reset = L1 > 0 and L2 > 0 and (finetune if c['reset_optimizer'] is None else c['reset_optimizer'])
    if mixed:
        stages = [stage(N, T, lr_settings(c))]
    else:  # the spike evals follow stage 2's start whatever the mode: the paper studies the spike there
        stage2_lr = lr_settings(c, dict(learning_rate=c['stage2_learning_rate'])) if restart else None
        stages = [stage(L1, K1, lr_settings(c)), stage(L2, K2, stage2_lr, reset_optimizer=reset, spike_evals=True)]
    return stages, dict(rho=rho, alpha=alpha, delta=delta, rho_realised=rho_realised, stage1_steps=L1,
                        stage2_steps=L2, stage2_start=L1, stage1_target=K1, stage2_target=K2,
                        restart_schedule=restart, reset_optimizer=reset, warnings=warnings, mode=c['mode'])


def mixed_steps(c, S, T):
    """max_iters=0 in mode='mixed': the fewest steps whose slots hold all T = U·e target sequences at replay share
    ρ, N = ⌈T / (S·(1 − ρ))⌉, in exact integers. Every ρ then sees the same target data and only adds replay."""
    check_derived_steps(c, T)
    keep = 1 - exact(c['replay_fraction'])  # the target share 1 − ρ
    return -(-T * keep.denominator // (S * keep.numerator))


def stages_from_list(c, N, S, T):
    """`stages`: a list of dicts, each giving a stage's length, its target sequences, and optionally a ramp, an LR
    schedule of its own, an optimizer reset and spike evals (STAGE_RULES; docs/schedule.md says what each means)."""
    specs, restarts = c['stages'], check_stage_list(c)
    lengths = [spec['steps'] if 'steps' in spec else round_half_up(spec['fraction'] * N) if 'fraction' in spec
               else None for spec in specs]
    fill_the_rest(lengths, N, 'steps', 'steps or fraction', f"max_iters={N}")
    targets, ramps = map(list, zip(*[stage_target(spec, steps, S, T) for spec, steps in zip(specs, lengths)]))
    fill_the_rest(targets, T, 'target sequences', 'target, allocation or replay_fraction',
                  f"target_tokens//block_size * target_epochs = {T}")
    stages = []
    for i, (spec, restart) in enumerate(zip(specs, restarts)):
        reset = spec.get('reset_optimizer', False)
        lr = lr_settings(c, {k: spec[k] for k in LR_KEYS if k in spec}) if restart else None
        stages.append(stage(lengths[i], targets[i], lr, reset, spec.get('spike_evals', i > 0 and (reset or restart)),
                            ramps[i]))
    return stages


def stage_target(spec, steps, S, T):
    """(exact target count or None for "the rest", ramp as coprime integers (a, b) or None) of one stage."""
    rho, ramp = spec.get('replay_fraction'), spec.get('ramp')
    if isinstance(rho, (list, tuple)):  # ρ from its first step to its last: a ramp of the target share
        ramp, rho = (1 - rho[0], 1 - rho[1]), (rho[0] + rho[1]) / 2
    if ramp is not None:  # exact rationals, then coprime integers; 1:1 is no ramp
        a, b = (exact(r) for r in ramp)
        a, b = (int(x * math.lcm(a.denominator, b.denominator)) for x in (a, b))
        ramp = (a // math.gcd(a, b), b // math.gcd(a, b)) if a != b else None
    if rho is not None:  # a stage that takes the rest of the steps has them by now
        return round_half_up((1 - rho) * steps * S), ramp
    return (round_half_up(spec['allocation'] * T) if 'allocation' in spec else spec.get('target')), ramp


def place(stages, N):
    """Fills in each stage's first step, the target sequences before it, and the LR schedule it runs in."""
    start, before, schedule = 0, 0, None
    for s in stages:
        if s['lr'] is not None:
            schedule = dict(s['lr'], start=start, length=0)
        schedule['length'] += s['steps']
        s.update(start=start, targets_before=before, schedule=schedule)
        start, before = start + s['steps'], before + s['target']
    assert start == N
    return stages


# ---- 2. What step t sees --------------------------------------------------------------------------------------

def stage_index(plan, t):
    """The index in plan['stages'] of the stage that holds step t (for t = N: the last stage)."""
    return bisect.bisect_right([s['start'] for s in plan['stages']], t) - 1


def stage_of(plan, t):
    """Step t's stage, counted from 1 (a stage of 0 steps keeps its number: the paper's stage 2 is stage 2)."""
    return stage_index(plan, t) + 1


def stage_targets_before(s, j):
    """Target sequences in the first j steps of stage s: floor(K·W(j)/W(L)) with weights 1 (no ramp) or linear
    from a to b, W(j) = sum of the first j weights; in integers: 2(L−1)·W(j) = 2(L−1)a·j + (b−a)·j(j−1)."""
    L, K = s['steps'], s['target']
    if L == 0:
        return 0
    if s['ramp'] is None or L == 1:
        return j * K // L
    a, b = s['ramp']
    return K * (2 * (L - 1) * a * j + (b - a) * j * (j - 1)) // (L * (L - 1) * (a + b))


def stage_step_targets(s, j):
    return stage_targets_before(s, j + 1) - stage_targets_before(s, j)


def targets_before(plan, t):
    """Target sequences fed in steps 0..t-1 (O(1) in t: the spreading rule has a closed-form prefix sum)."""
    s = plan['stages'][stage_index(plan, t)]
    return s['targets_before'] + stage_targets_before(s, t - s['start'])


def generic_cursor(plan, t):
    """Generic windows used after t steps, counting generic_offset: where a run started from this one's weights
    after t steps continues (so its replay is fresh data)."""
    return plan['generic_offset'] + t * plan['S'] - targets_before(plan, t)


def step_batch(plan, t):
    """The global batch of step t: (is_target, ids), two arrays of S. ids are target pool ids (0..U-1) where
    is_target, else generic window indices (the stream positions themselves when the plan has no split size)."""
    S, U, W, seed = plan['S'], plan['U'], plan['generic_windows'], plan['data_seed']
    first_target = targets_before(plan, t)
    n_target = targets_before(plan, t + 1) - first_target
    first_generic, n_generic = generic_cursor(plan, t), S - n_target
    is_target = spread(n_target, S, np.arange(S)) == 1
    ids = np.empty(S, dtype=np.int64)
    ids[is_target] = in_permutations(seed, 1, U, first_target, n_target)
    ids[~is_target] = (np.arange(first_generic, first_generic + n_generic) if W is None else
                       in_permutations(seed, 2, W, first_generic, n_generic))
    return is_target, ids


def in_permutations(data_seed, stream, size, first, count):
    """epoch_order(c // size)[c % size] for the counters c = first..first+count-1: every epoch visits the target
    pool (stream 1) or the generic split (stream 2, reshuffled when it runs out) once, in its own order."""
    if count and first // size == (first + count - 1) // size:  # one epoch (nearly always): a slice
        return epoch_order(data_seed, stream, size, first // size)[first % size:first % size + count].astype(np.int64)
    counters = np.arange(first, first + count)
    out = np.empty(count, dtype=np.int64)
    for epoch in np.unique(counters // size) if count else []:
        here = counters // size == epoch
        out[here] = epoch_order(data_seed, stream, size, int(epoch))[counters[here] % size]
    return out


@functools.lru_cache(maxsize=8)
def epoch_order(data_seed, stream, size, epoch):
    return np.random.default_rng([data_seed, stream, epoch]).permutation(size)


@functools.lru_cache(maxsize=4)
def target_pool(data_seed, target_windows, U):
    """Window indices of the U pool sequences in the target train split: drawn once, sorted, never redrawn."""
    return np.sort(np.random.default_rng([data_seed, 0]).choice(target_windows, U, replace=False))


def pool_of(plan):
    """The plan's target pool as windows of the target train split (empty without target data)."""
    return target_pool(plan['data_seed'], plan['target_windows'], plan['U']) if plan['U'] else np.zeros(0, int)


# ---- 3. Learning rate, optimizer resets, evaluations, stage starts --------------------------------------------

def lr_at(plan, t):
    """The learning rate of step t, step i of the LR schedule its stage runs in (of `length` steps, started by it
    or by an earlier stage): linear warmup, then constant / cosine / WSD."""
    s = plan['stages'][stage_index(plan, t)]['schedule']
    kind, i, length, peak, min_lr = s['lr_schedule'], t - s['start'], s['length'], s['learning_rate'], s['min_lr']
    warmup = min(length, max(1, round_half_up(s['warmup_fraction'] * length)))
    if i < warmup:
        return peak * (i + 1) / warmup
    if kind == 'constant':
        return peak
    if kind == 'cosine':
        progress = (i - warmup) / max(1, length - warmup)
        return min_lr + (peak - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))
    decay_start = max(warmup, length - round_half_up(s['cooldown_fraction'] * length))  # wsd
    if i < decay_start:
        return peak
    return peak + (min_lr - peak) * (i - decay_start) / max(1, length - decay_start)


def starting_stage(plan, t):
    """The stage that starts at step t (its first step is t and it has steps), else None."""
    s = plan['stages'][stage_index(plan, t)]
    return s if t < plan['N'] and s['start'] == t else None


def starts_schedule(s):
    """Whether an LR schedule begins at stage s's first step (it restarts one, or the stages before it are empty)."""
    return s['schedule']['start'] == s['start']


def resets_optimizer_at(plan, t):
    """True at the first step of a stage that throws the optimizer state away (fine-tuning's stage 2)."""
    s = starting_stage(plan, t)
    return bool(s and t > 0 and s['reset_optimizer'])


def stage_starts(plan):
    """Steps after which a new stage begins (0 < start < N): train.py logs and checkpoints at each."""
    return sorted({s['start'] for s in plan['stages'] if s['steps'] and 0 < s['start'] < plan['N']})


def stage_record(plan, t):
    """What train.py logs when a stage starts at step t (kind 'stage'), else None: only what the first t + 1
    steps decide, so that runs sharing a prefix share their log."""
    s = starting_stage(plan, t)
    return None if s is None else dict(
        kind='stage', step=t, stage=stage_of(plan, t), lr_schedule=s['schedule']['lr_schedule'],
        lr_restart=starts_schedule(s), learning_rate=s['schedule']['learning_rate'],
        reset_optimizer=resets_optimizer_at(plan, t))


def evals_at(plan, k):
    """True if a full validation pass runs after k completed steps (k = 0..N): every eval_interval, at the end,
    and every spike_eval_interval for spike_eval_steps after the start of each stage with spike_evals (the
    initial loss spike)."""
    if k == plan['N'] or (plan['eval_interval'] > 0 and k % plan['eval_interval'] == 0):
        return True
    after = plan['spike_eval_steps']
    return after > 0 and any(s['spike_evals'] and s['steps'] > 0 and s['start'] > 0 and 0 <= k - s['start'] <= after
                             and (k - s['start']) % max(1, plan['spike_eval_interval']) == 0 for s in plan['stages'])


def eval_steps(plan):
    """Every k with evals_at(plan, k), in order: evals_at over the only candidates (not all N + 1 step counts)."""
    N, every, gap = plan['N'], plan['eval_interval'], max(1, plan['spike_eval_interval'])
    candidates = {N, *(range(0, N + 1, every) if every > 0 else ())}
    for s in plan['stages']:
        candidates.update(range(s['start'], min(N, s['start'] + plan['spike_eval_steps']) + 1, gap))
    return sorted(k for k in candidates if evals_at(plan, k))


# ---- 4. Prefix hashes: two runs whose hashes agree at k reach the same state after k steps (sweep.py forks) ----

# Keys whose whole effect on training is captured by the per-step records below (composition, ids, LR, optimizer
# reset, evals, stage starts) or that only say where things go. Every OTHER key must match for two runs to share a
# prefix.
PER_STEP_KEYS = {'max_iters', 'target_tokens', 'target_epochs', 'replay_fraction', 'stage2_allocation',
                 'stage2_fraction', 'mode', 'reset_optimizer', 'stage2_schedule', 'lr_schedule', 'learning_rate',
                 'stage2_learning_rate', 'min_lr', 'warmup_fraction', 'cooldown_fraction', 'eval_interval',
                 'spike_eval_interval', 'spike_eval_steps', 'stages'}
IO_KEYS = {'out_dir', 'checkpoint_interval', 'checkpoint_steps', 'init_from', 'resume_from', 'force_resume',
           'wandb_log', 'wandb_project', 'wandb_run_name', 'stop_after'}


def prefix_hashes(config, plan, upto=None):
    """h[k] for k = 0..upto (default N): a digest of everything that decides the state after k steps and the
    log up to it: the config keys not covered per step, then for each step t < k its stage (and the record of a
    stage starting there), LR, optimizer reset, eval before it, and the ids it feeds, and finally whether an eval
    runs at k."""
    upto = plan['N'] if upto is None else upto
    fixed = {k: v for k, v in sorted(config.items()) if k not in PER_STEP_KEYS | IO_KEYS}
    fixed['generic_offset'] = plan['generic_offset']  # the one in use (train.py may take it from a checkpoint)
    running = hashlib.sha256(json.dumps(fixed, sort_keys=True, default=str).encode())
    hashes = []
    for t in range(upto + 1):
        closing = running.copy()
        closing.update(b'E' if evals_at(plan, t) else b'-')
        hashes.append(closing.hexdigest())
        if t < upto:
            is_target, ids = step_batch(plan, t)
            record = stage_record(plan, t)
            running.update(f"{t}|{stage_of(plan, t)}|{lr_at(plan, t)!r}|{resets_optimizer_at(plan, t)}|"
                           f"{evals_at(plan, t)}|{json.dumps(record, sort_keys=True) if record else ''}|".encode())
            running.update(is_target.tobytes() + ids[~is_target].tobytes())
            if is_target.any():  # the target windows themselves, so runs with other pool sizes can share a prefix
                running.update(f"U={plan['U']}|".encode() + ids[is_target].tobytes() if plan['target_windows'] is None
                               else pool_of(plan)[ids[is_target]].tobytes())
    return hashes


# ---- 5. Checks: each key's rule from a table (configurator.check_rule), then the ones across keys -------------

def number(words, lowest=0, highest=math.inf, whole=False):
    """A rule: a finite number in [lowest, highest], an int if whole, never a bool (NaN fails); else `words`."""
    kinds = int if whole else (int, float)
    return lambda v: None if (not isinstance(v, bool) and isinstance(v, kinds) and lowest <= v <= highest
                              and v < math.inf) else words


def one_of(words, *allowed):  # a rule: one of `allowed` (True is not 1 here), else `words`
    return lambda v: None if is_choice(v, allowed) else words


def pair_of(rule, words):  # a rule: a list or tuple of two values that pass `rule`, else `words`
    return lambda v: None if isinstance(v, (list, tuple)) and len(v) == 2 and not any(map(rule, v)) else words


FRACTION, WHOLE = number('a number between 0 and 1', 0, 1), number('a whole number, 0 or more', whole=True)
NON_NEGATIVE, LR_KIND = number('a number, 0 or more'), one_of(f"one of {', '.join(map(repr, LR_KINDS))}", *LR_KINDS)
MAY_BE_NONE = {'replay_fraction', 'stage2_allocation', 'stage2_fraction', 'ramp'}  # None: not given


def stage_replay_rule(v):  # ρ, or a pair: ρ at the stage's first step and at its last
    if isinstance(v, (list, tuple)):
        return pair_of(FRACTION, 'a number or a pair of numbers in [0, 1]')(v)
    return FRACTION(v)


def ramp_rule(v):
    words = "two numbers >= 0, not both 0: the target share at the stage's first and last step, as a ratio"
    return pair_of(NON_NEGATIVE, words)(v) or (None if sum(v) > 0 else words)


# config keys, in the order make_plan checks them: key -> rule
CONFIG_RULES = {**dict.fromkeys(('max_iters', 'batch_size', 'gradient_accumulation_steps', 'block_size'),
                                number('at least 1', 1, whole=True)),
                **dict.fromkeys(('target_tokens', 'generic_offset'), number('0 or more', whole=True)),
                **dict.fromkeys(('replay_fraction', 'stage2_allocation', 'stage2_fraction', 'warmup_fraction',
                                 'cooldown_fraction'), FRACTION), 'lr_schedule': LR_KIND,
                # the plan's other keys, as train.RULES has them (the CLI and sweep.py check no other table)
                **dict.fromkeys(('learning_rate', 'stage2_learning_rate'), 'a positive number'), 'min_lr': '0 or more',
                **dict.fromkeys(('eval_interval', 'spike_eval_interval', 'spike_eval_steps', 'data_seed'),
                                number('0 or more', whole=True))}
# what the paper's keys add (not read with a stage list)
PAPER_RULES = {'mode': one_of("'midtrain' or 'finetune' (two stages), or 'mixed' (one stage of target and replay)",
                              'midtrain', 'finetune', 'mixed'),
               'stage2_schedule': ('restart', 'continue', None), 'reset_optimizer': (True, False, None)}
# what a dict in `stages` may set (docs/schedule.md says what each key means)
STAGE_RULES = {'steps': WHOLE, 'fraction': FRACTION, 'target': WHOLE, 'allocation': FRACTION,
               'replay_fraction': stage_replay_rule, 'ramp': ramp_rule, 'schedule': ('restart', 'continue'),
               'lr_schedule': LR_KIND, 'learning_rate': NON_NEGATIVE, 'min_lr': NON_NEGATIVE,
               'warmup_fraction': FRACTION, 'cooldown_fraction': FRACTION, 'reset_optimizer': (True, False),
               'spike_evals': (True, False)}


def check_keys(values, rules, where='', skip=()):
    """Every key of `rules` that `values` holds passes its rule, else '<where><key>=<value> must be <what>'."""
    for key, rule in rules.items():
        if key in values and key not in skip and not (key in MAY_BE_NONE and values[key] is None):
            check_rule(where + key, values[key], rule)


def check_target_data(c, U):
    """The target data is at least one sequence and is seen at least once."""
    if c['target_tokens'] > 0 and U == 0:
        raise UserError(f"target_tokens={c['target_tokens']} is less than one sequence of block_size="
                        f"{c['block_size']} tokens")
    if U > 0 and c['target_epochs'] < 1:
        raise UserError(f"target_epochs={c['target_epochs']} must be at least 1")


def check_derived_steps(c, T):
    """max_iters=0 derives N: the target data and a ρ below 1 are needed."""
    if T == 0:
        raise UserError(f"max_iters=0 derives N from the target data (mode='mixed'), but target_tokens="
                        f"{c['target_tokens']} gives none: set target_tokens, or max_iters")
    if c['replay_fraction'] is None or c['replay_fraction'] == 1:
        raise UserError(f"max_iters=0 derives N = ⌈U·e / (S·(1 − ρ))⌉ (mode='mixed'): give replay_fraction (ρ) "
                        f"below 1 (it is {c['replay_fraction']!r}), or max_iters")


def check_fits(T, slots, generic_offset):
    if slots + generic_offset >= 2**63:  # step_batch counts sequences in numpy int64s
        raise UserError(f"max_iters * batch_size * gradient_accumulation_steps = {slots} slots (after generic_offset="
                        f"{generic_offset}) pass numpy's int64 counters (2**63 - 1): lower them")
    if T > slots:
        raise UserError(f"target_tokens//block_size * target_epochs = {T} target sequences do not fit in "
                        f"max_iters * batch_size * gradient_accumulation_steps = {slots} slots")


def check_stage1(K1, slots, alpha, delta):
    if K1 > slots:
        raise UserError(f"stage 1 needs {K1} target sequences but has only {slots} slots after rounding "
                        f"(stage2_fraction={delta:.6g}, stage2_allocation={alpha:.6g}): lower stage2_fraction "
                        f"or raise stage2_allocation")


def check_stages_fit(stages, S):
    """Every step's target sequences fit in its S slots."""
    for i, s in enumerate(stages):
        if s['target'] > s['steps'] * S:
            raise UserError(f"stage {i + 1} has {s['steps']} steps x {S} sequences but {s['target']} target "
                            f"sequences: give it more steps or less target data")
        if s['ramp'] is not None and s['target'] and max(stage_step_targets(s, j) for j in range(s['steps'])) > S:
            raise UserError(f"stage {i + 1}'s ramp {s['ramp'][0]}:{s['ramp'][1]} needs more than {S} target "
                            f"sequences in a step: flatten the ramp or lower the stage's target share")


def check_splits(c, plan):
    """The data holds the run: the target pool fits the target split, the generic split has a window."""
    if plan['target_windows'] is not None and plan['U'] > plan['target_windows']:
        raise UserError(f"target_tokens={c['target_tokens']} asks for {plan['U']} unique target sequences but the "
                        f"target train split holds only {plan['target_windows']} windows of "
                        f"block_size={c['block_size']}")
    if plan['generic_windows'] is not None and plan['generic_total'] > 0 and plan['generic_windows'] < 1:
        raise UserError(f"the generic train split is shorter than one window of block_size={c['block_size']}")


def check_stage_list(c):
    """`stages` is a non-empty list of dicts and the paper's keys that a list replaces are not given; each dict has
    known keys, each given once, each value as STAGE_RULES wants, LR keys only where a schedule starts. Returns
    whether each stage starts an LR schedule (the first always does)."""
    given = [k for k in ('replay_fraction', 'stage2_allocation', 'stage2_fraction') if c[k] is not None]
    if given:
        raise UserError(f"stages is set, and so is {', '.join(given)}: a stage list gives each stage's target "
                        f"share itself; drop {', '.join(given)} (or stages)")
    specs = c['stages']
    if not isinstance(specs, (list, tuple)) or not specs or not all(isinstance(s, dict) for s in specs):
        raise UserError(f"stages={specs!r} must be a non-empty list of dicts (see config/default.py)")
    restarts = [i == 0 or spec.get('schedule') == 'restart' for i, spec in enumerate(specs)]
    for i, spec in enumerate(specs):
        for key in spec:
            if key not in STAGE_RULES:
                close = difflib.get_close_matches(str(key), list(STAGE_RULES), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(STAGE_RULES)})"
                raise UserError(f"stages[{i}] has an unknown key {key!r}{hint}")
        if 'steps' in spec and 'fraction' in spec or len(spec.keys() & {'target', 'allocation', 'replay_fraction'}) > 1:
            raise UserError(f"stages[{i}] gives its length or its target twice: use one of steps/fraction and one "
                            f"of target/allocation/replay_fraction")
        check_keys(spec, STAGE_RULES, f"stages[{i}] ")
        lr_given = [k for k in LR_KEYS if k in spec]
        if lr_given and not restarts[i]:
            raise UserError(f"stages[{i}] sets {', '.join(lr_given)} but continues the previous LR schedule: add "
                            f"schedule='restart' to it")
        rho = spec.get('replay_fraction')
        if isinstance(rho, (list, tuple)):  # a ramp of the target share from 1 − ρ to 1 − ρ'
            if spec.get('ramp') is not None:
                raise UserError(f"stages[{i}] gives both a replay_fraction pair and a ramp: give one")
            check_keys({'ramp': (1 - rho[0], 1 - rho[1])}, STAGE_RULES, f"stages[{i}] ")
    return restarts


def check_mixed(c, N, S, T, gamma):
    """mode='mixed' sets no stage-2 key; returns its ρ: 1 − γ when not given, else as given, which must derive N
    (max_iters=0, or the very N it derives: sweep.py writes that into a run's config)."""
    given = [k for k in ('stage2_allocation', 'stage2_fraction', 'stage2_schedule', 'reset_optimizer')
             if c[k] is not None]
    if given:
        raise UserError(f"mode='mixed' is one stage of target and replay (α = δ = 1), with no stage 2 to place, "
                        f"restart or reset: drop {', '.join(given)}")
    rho = c['replay_fraction']
    if rho is None:
        return 1 - gamma
    if c['max_iters'] != 0 and c['max_iters'] != (mixed_steps(c, S, T) if T and rho < 1 else None):
        raise UserError(f"replay_fraction={rho} with max_iters={N}: one stage of {N} steps x {S} sequences for the "
                        f"{T} target sequences has ρ = 1 − γ = {1 - gamma:.6g}; set max_iters=0 to derive N from ρ, "
                        f"or drop replay_fraction")
    return rho


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
        if rho == 1 and alpha == 0:
            raise UserError("replay_fraction=1 with stage2_allocation=0 does not fix the stage-2 length: "
                            "give stage2_fraction")
        delta = gamma * alpha / (1 - rho) if rho < 1 else 0.0  # ρ = 1 with α > 0: refused below
    elif alpha is None:
        alpha = delta * (1 - rho) / gamma
        if alpha > 1 + 1e-9:
            raise UserError(f"stage2_fraction={delta} with replay_fraction={rho} needs {alpha:.3g}x all target "
                            f"data in stage 2: lower stage2_fraction or raise replay_fraction")
        alpha = min(alpha, 1.0)
    elif delta == 0:  # rho is None
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


def fill_the_rest(values, total, what, keys, total_name):
    """values: one per stage, None where a stage takes what the others leave (at most one). Fills it in place so
    that they sum to total, or says which stage to change."""
    missing = [i for i, v in enumerate(values) if v is None]
    if len(missing) > 1:
        raise UserError(f"stages {missing} give no {keys}: at most one stage may take the rest")
    given = sum(v for v in values if v is not None)
    if missing:
        if given > total:
            raise UserError(f"the stages give {given} {what}, more than {total_name}")
        values[missing[0]] = total - given
    elif given != total:
        raise UserError(f"the stages give {given} {what} but {total_name}: change one, or leave one stage without "
                        f"{keys} to take the rest")


# ---- 6. The command line: print the plan, or one step ---------------------------------------------------------

def share(target, steps, S):
    """The target share of `steps` steps of S slots holding `target` target sequences (None without steps)."""
    return target / (steps * S) if steps else None


def stage_table(plan):
    """Each stage as a row: where it is, what it holds, its target sequences, target and replay (ρ) share (at its
    first and last step, for a ramp), its LR."""
    rows, S = [], plan['S']
    for i, s in enumerate(plan['stages']):
        L, K, lr = s['steps'], s['target'], s['schedule']
        name = 'generic only' if K == 0 else 'target only' if K == L * S else 'target + replay'
        rows.append(dict(stage=i + 1, name=name, start=s['start'], steps=L, target=K, target_share=share(K, L, S),
                         replay_share=1 - share(K, L, S) if L else None,
                         share_start=share(stage_step_targets(s, 0), 1, S) if L else None,
                         share_end=share(stage_step_targets(s, L - 1), 1, S) if L else None,
                         ramp=list(s['ramp']) if s['ramp'] else None, lr_schedule=lr['lr_schedule'],
                         learning_rate=lr['learning_rate'], lr='restart' if starts_schedule(s) else 'continue',
                         reset_optimizer=s['reset_optimizer'] and s['start'] > 0 and L > 0,
                         spike_evals=s['spike_evals']))
    return rows


def summarize(config, plan):
    """The plan as one JSON-able dict: what the CLI prints and train.py writes to summary.json. replay_share: the
    generic share of the slots of the stages that hold target data, ρ of any stage list (for the paper's α = 1
    plans, stage 2's realised ρ); None without target data."""
    N, S, mixed = plan['N'], plan['S'], [s for s in plan['stages'] if s['target']]
    key_steps = sorted({0, N - 1} | {t for s in stage_starts(plan) for t in (s - 1, s)})
    out = {k: plan[k] for k in ('N', 'S', 'U', 'e', 'T', 'gamma', 'rho', 'alpha', 'delta', 'rho_realised',
                                'stage1_steps', 'stage2_steps', 'stage2_start', 'stage1_target', 'stage2_target',
                                'generic_total', 'restart_schedule', 'reset_optimizer', 'warnings')}
    replay = share(sum(s['target'] for s in mixed), sum(s['steps'] for s in mixed), S)
    out.update(block_size=plan['block_size'], tokens_per_step=S * plan['block_size'],
               target_tokens_unique=plan['U'] * plan['block_size'],
               **{f'stage{i}_target_share': share(plan[f'stage{i}_target'], plan[f'stage{i}_steps'], S)
                  for i in (1, 2)},
               generic_epochs=plan.get('generic_epochs'), mode=plan['mode'],
               lr_schedule=plan['stages'][0]['schedule']['lr_schedule'],
               lr_at_key_steps={t: lr_at(plan, t) for t in key_steps},
               eval_steps=eval_steps(plan), stages=stage_table(plan),
               replay_share=None if replay is None else 1 - replay)
    return out


def describe_step(plan, t):
    """Step t as --show_step prints it: its stage, LR, reset, and the pool ids and generic windows it feeds."""
    is_target, ids = step_batch(plan, t)
    return dict(step=t, stage=stage_of(plan, t), lr=lr_at(plan, t), reset_optimizer=resets_optimizer_at(plan, t),
                n_target=int(is_target.sum()), n_generic=int((~is_target).sum()),
                target_pool_ids=ids[is_target].tolist(),
                target_windows=pool_of(plan)[ids[is_target]].tolist() if plan['target_windows'] else None,
                generic_windows=ids[~is_target].tolist() if plan['generic_windows'] is not None else None,
                generic_stream_positions=None if plan['generic_windows'] is not None else ids[~is_target].tolist(),
                slots_target=np.flatnonzero(is_target).tolist())


def print_text(p):
    """The summary as the CLI's plan table."""
    print(f"{p['N']} steps x {p['S']} sequences x {p['block_size']} tokens = {p['N'] * p['tokens_per_step']:,} "
          f"tokens; mode {p['mode']}")
    symbols = f"; ρ={p['rho']:.4g} α={p['alpha']:.4g} δ={p['delta']:.4g}" if p['rho'] is not None else ""
    print(f"target: U={p['U']} unique sequences x e={p['e']} epochs = {p['T']} sequences, γ={p['gamma']:.6g}{symbols}")
    print(f"{'stage':<17} {'steps':<14} {'target seqs':>11} {'target share':>12} {'replay ρ':>12}  {'LR':<26} "
          "optimizer")
    for r in (r for r in p['stages'] if r['steps']):  # a stage of 0 steps has no row
        ends = (r['share_start'], r['share_end']) if r['ramp'] else (r['target_share'],)
        shares = ['..'.join(f"{x:.4g}" for x in ends), '..'.join(f"{1 - x:.4g}" for x in ends)]
        lr = (f"{r['lr_schedule']} from {r['learning_rate']:.3g}" if r['lr'] == 'restart' else
              f"continues ({r['lr_schedule']})")
        print(f"{r['stage']:>2} {r['name']:<14} {r['start']:>6}..{r['start'] + r['steps'] - 1:<6} {r['target']:>11} "
              f"{shares[0]:>12} {shares[1]:>12}  {lr:<26} {'reset' if r['reset_optimizer'] else 'kept'}")
    if p['rho_realised'] is not None:
        print(f"realised ρ of {'the stage' if p['mode'] == 'mixed' else 'stage 2'}: {p['rho_realised']:.4g}")
    epochs = f", {p['generic_epochs']:.3g} generic epochs" if p['generic_epochs'] is not None else ""
    print(f"total: {p['T']} target + {p['generic_total']} generic sequences{epochs}")
    print("LR at key steps: " + ", ".join(f"{t}: {lr:.4g}" for t, lr in p['lr_at_key_steps'].items()))
    ev = p['eval_steps']
    print(f"evals after {len(ev)} step counts: {ev[:8]}{' ...' if len(ev) > 8 else ''}")
    for w in p['warnings']:
        print(f"warning: {w}")


OPTIONS = {'format': 'text', 'show_step': -1}  # this script's keys, besides every config key
RULES = dict(format=('text', 'json'), show_step='-1 or more')


def main(argv):
    config = load_config(argv, extra_keys=OPTIONS, doc=__doc__, rules=RULES)
    if config['init_from'] not in ('scratch', 'resume') and not os.path.exists(config['init_from']):
        raise UserError(f"init_from={config['init_from']!r} does not exist (train.py stops there too): put the "
                        f"model directory or checkpoint there, or add --init_from=scratch to see the plan alone")
    plan = make_plan(config, *split_sizes(config))
    step = config['show_step']
    if step >= plan['N']:
        raise UserError(f"show_step={step} is past the last step {plan['N'] - 1}")
    out = describe_step(plan, step) if step >= 0 else summarize(config, plan)
    if config['format'] == 'json':
        print(json.dumps(out))
    elif step >= 0:
        for key, value in out.items():
            print(f"{key}: {value}")
    else:
        print_text(out)


if __name__ == '__main__':
    run_main(main)
