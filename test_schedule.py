"""The data/LR planner (schedule.py) against its spec: the module docstring and the paper's schedule rules (README).
CPU, numpy only, a few seconds. Expected values are computed here from the spec's formulas, never read back from
the planner's own helpers (round_half_up, spread, epoch_order, ...)."""
import itertools
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

import schedule
from configurator import DEFAULTS, UserError, load_config
from helpers import ROOT
from sources import split_windows

BLOCK = 8  # block_size of the small configs; target_tokens = U * BLOCK (+ a remainder that must be ignored)


def half_up(x):
    """The project's rounding (schedule.round_half_up's contract), written out independently."""
    return math.floor(x + 0.5)


def even(total, slots):
    """The spec's spreading rule: slot j of `slots` gets floor((j+1)K/L) - floor(jK/L) of `total` items."""
    j = np.arange(slots, dtype=np.int64)
    return (j + 1) * total // slots - j * total // slots


def cfg(N, S, U, e, gas=1, **kw):
    """A small config dict: N steps of S sequences (S = batch_size * gas), U pool sequences seen e times."""
    assert S % gas == 0
    return {**DEFAULTS, 'max_iters': N, 'batch_size': S // gas, 'gradient_accumulation_steps': gas,
            'block_size': BLOCK, 'target_tokens': U * BLOCK + (BLOCK - 1 if U else 0), 'target_epochs': e, **kw}


def plan_of(N, S, U, e, **kw):
    return schedule.make_plan(cfg(N, S, U, e, **kw))


def counts_per_step(plan):
    """Target sequences of every step, from the O(1) prefix sums (cheap even at N=S=1024)."""
    before = np.array([schedule.targets_before(plan, t) for t in range(plan['N'] + 1)])
    assert before[0] == 0
    return np.diff(before)


def all_batches(plan):
    """(target ids in slot order, generic ids in slot order, per-step target counts) over the whole run."""
    tgt, gen, n = [], [], []
    for t in range(plan['N']):
        is_target, ids = schedule.step_batch(plan, t)
        assert is_target.shape == ids.shape == (plan['S'],)
        tgt.append(ids[is_target])
        gen.append(ids[~is_target])
        n.append(int(is_target.sum()))
    return np.concatenate(tgt), np.concatenate(gen), np.array(n)


def check_plan_totals(plan):
    """Every count invariant of the spec, for one resolved plan."""
    N, S, U, e = plan['N'], plan['S'], plan['U'], plan['e']
    T = U * e
    rho, alpha, delta, gamma = plan['rho'], plan['alpha'], plan['delta'], plan['gamma']
    assert plan['T'] == T and gamma == pytest.approx(T / (N * S), rel=1e-12)
    assert delta * (1 - rho) == pytest.approx(gamma * alpha, rel=1e-9, abs=1e-12)  # the defining relation
    assert 0 <= rho <= 1 and 0 <= alpha <= 1 and 0 <= delta <= 1

    counts = counts_per_step(plan)
    assert counts.sum() == T  # exactly U*e target slots over the run
    assert counts.min() >= 0 and counts.max() <= S

    K2 = half_up(alpha * T)
    L2 = plan['stage2_steps']
    s = plan['stage2_start']
    assert s == N - L2 == plan['stage1_steps']
    assert L2 == min(N, max(half_up(delta * N), -(-K2 // S)))  # never shorter than its targets need
    assert plan['stage2_target'] == K2 and plan['stage1_target'] == T - K2
    assert counts[s:].sum() == K2 and counts[:s].sum() == T - K2
    # Even spread inside each stage (so per-step counts differ by at most 1).
    for part, K in ((counts[:s], T - K2), (counts[s:], K2)):
        if len(part):
            assert np.array_equal(part, even(K, len(part)))
            assert part.max() - part.min() <= 1
    return counts


# ---------------------------------------------------------------------------------------------------------------
# Exact totals: the paper's grid, and a broad grid of small awkward configs
# ---------------------------------------------------------------------------------------------------------------

PAPER = dict(max_iters=1024, batch_size=1024, gradient_accumulation_steps=1, block_size=1024,
             target_tokens=1048576, target_epochs=32)


@pytest.mark.parametrize('rho', [0, 0.25, 0.5, 0.75, 0.875])
@pytest.mark.parametrize('alpha', [1, 0.5, 0.25, 0.125])
def test_paper_grid_totals(rho, alpha):
    plan = schedule.make_plan({**DEFAULTS, **PAPER, 'replay_fraction': rho, 'stage2_allocation': alpha})
    assert (plan['N'], plan['S'], plan['U'], plan['e']) == (1024, 1024, 1024, 32)
    counts = check_plan_totals(plan)
    assert plan['rho'] == rho and plan['alpha'] == alpha
    assert plan['delta'] == pytest.approx(alpha / 32 / (1 - rho))  # γ = 1/32
    assert plan['stage2_target'] == round(alpha * 32768)

    # Realised ρ of stage 2 within 1% of the asked one, or the plan says it is not.
    s, L2, S = plan['stage2_start'], plan['stage2_steps'], plan['S']
    realised = 1 - counts[s:].sum() / (L2 * S)
    if abs(realised - rho) > 0.01:
        assert any('replay_fraction' in w for w in plan['warnings']), (realised, plan['warnings'])

    # step_batch on a sample of steps agrees with the prefix sums and places targets by the spreading rule.
    rng = np.random.default_rng(0)
    for t in sorted({0, max(0, s - 1), s, 1023, *rng.integers(0, 1024, 4).tolist()}):
        is_target, ids = schedule.step_batch(plan, t)
        k = counts[t]
        assert is_target.sum() == k
        assert np.array_equal(is_target, even(k, S) == 1)
        assert ids[is_target].min(initial=0) >= 0 and ids[is_target].max(initial=0) < 1024
        assert schedule.stage_of(plan, t) == (2 if t >= s else 1)


def spec_third(gamma, rho, alpha, delta):
    """The third of (ρ, α, δ) from δ(1−ρ) = γα, or None where the two given do not fix it."""
    if delta is None:
        return None if rho == 1 else (rho, alpha, gamma * alpha / (1 - rho))
    if alpha is None:
        return rho, delta * (1 - rho) / gamma, delta
    if delta == 0:
        return (1.0, alpha, delta) if alpha == 0 else None
    return 1 - gamma * alpha / delta, alpha, delta


def spec_verdict(N, S, T, given):
    """'valid', 'invalid' or 'borderline' (a derived value within float noise of a limit or of a rounding tie).
    Limits are inclusive; exact ties round half up, the project's convention."""
    gamma = T / (N * S)
    third = spec_third(gamma, *given)
    if third is None:
        return 'invalid'
    rho, alpha, delta = third
    if rho == 1 and alpha > 0:
        return 'invalid'  # no room in stage 2 for its target data
    if delta != 1 and abs(delta - 1) < 1e-12:
        return 'borderline'
    excess = [-rho, rho - 1, -alpha, alpha - 1, -delta, delta - 1]  # how far past each limit
    excess.append(1 - alpha if delta == 1 else gamma * (1 - alpha) / (1 - delta) - 1)  # stage-1 weight <= 1
    if max(excess) > 1e-7:
        return 'invalid'
    if max(excess) > 1e-12:
        return 'borderline'
    for x in (alpha * T, delta * N):
        if 0 < abs(x - math.floor(x) - 0.5) < 1e-9:
            return 'borderline'
    K2 = half_up(alpha * T)
    L2 = max(half_up(delta * N), -(-K2 // S))
    return 'valid' if T - K2 <= (N - L2) * S else 'invalid'  # stage 1 must hold its targets after rounding


KEYS = ('replay_fraction', 'stage2_allocation', 'stage2_fraction')
RHOS, ALPHAS, DELTAS = (0, 0.3, 0.5, 0.9, 1), (0, 0.37, 0.5, 1), (0, 0.2, 0.61, 1)


@pytest.mark.parametrize('N,S,gas', [(1, 3, 1), (7, 3, 1), (13, 5, 1), (50, 7, 1), (31, 6, 3), (100, 1, 1)])
def test_small_grid_totals(N, S, gas):
    # Awkward U*e (primes, near-full, tiny) at small S; every pairing of the three knobs.
    checked = 0
    for T_share in (1 / N / S, 0.11, 0.37, 0.5, 0.83, 1.0):
        T = max(1, math.floor(T_share * N * S))
        for U, e in {(T, 1), (1, T)} | ({(T // 3, 3)} if T >= 3 else set()):
            for pair in ('ra', 'rd', 'ad'):
                grid = itertools.product(RHOS if 'r' in pair else (None,), ALPHAS if 'a' in pair else (None,),
                                         DELTAS if 'd' in pair else (None,))
                for given in grid:
                    verdict = spec_verdict(N, S, U * e, given)
                    config = cfg(N, S, U, e, gas=gas, **dict(zip(KEYS, given)))
                    try:
                        plan = schedule.make_plan(config)
                    except UserError as err:
                        assert verdict != 'valid', (N, S, U, e, given, str(err))
                        assert any(k in str(err) for k in KEYS), str(err)  # names the key(s) to change
                        continue
                    assert verdict != 'invalid', (N, S, U, e, given, plan)
                    for key, value in zip(('rho', 'alpha', 'delta'), given):
                        if value is not None:
                            assert plan[key] == value  # given values are kept as given
                    check_plan_totals(plan)
                    checked += 1
    assert checked > 50  # the grid really exercised valid plans


@pytest.mark.parametrize('S', [3, 5, 7])
def test_rounding_small_S_batches(S):
    # With step_batch itself, not only the prefix sums: totals exact and stage 2 long enough for its targets.
    N, U, e = 11, 7, 3  # T = 21: not a multiple of S, N or U
    for alpha, rho in ((0.37, 0.1), (0.61, 0.0), (1, 0.33), (0.5, 0.5)):
        plan = plan_of(N, S, U, e, replay_fraction=rho, stage2_allocation=alpha)
        tgt, _, n = all_batches(plan)
        assert len(tgt) == U * e and n.sum() == U * e and n.max() <= S
        s, K2 = plan['stage2_start'], half_up(alpha * U * e)
        assert n[s:].sum() == K2
        assert plan['stage2_steps'] == max(half_up(plan['delta'] * N), -(-K2 // S))
    # ρ = 0 at S = 3: round(δN) = 4 steps cannot hold K2 = 13, so stage 2 grows to ceil(13/3) = 5.
    if S == 3:
        assert plan_of(N, S, U, e, replay_fraction=0, stage2_allocation=0.61)['stage2_steps'] == 5


# ---------------------------------------------------------------------------------------------------------------
# The third of (ρ, α, δ)
# ---------------------------------------------------------------------------------------------------------------

def test_third_from_any_two():
    # Resolve δ from (ρ, α), then feed back each other pair: all three pairings agree on the same point.
    base = dict(N=400, S=8, U=100, e=4)  # γ = 400 / 3200 = 1/8
    for rho, alpha in ((0.5, 1), (0.25, 0.5), (0, 0.3), (0.8, 0.6), (0.9, 0.05)):
        p1 = plan_of(**base, replay_fraction=rho, stage2_allocation=alpha)
        rho_, alpha_, delta = p1['rho'], p1['alpha'], p1['delta']
        assert delta * (1 - rho_) == pytest.approx(p1['gamma'] * alpha_)
        assert delta == pytest.approx(alpha / 8 / (1 - rho))
        p2 = plan_of(**base, replay_fraction=rho, stage2_fraction=delta)
        p3 = plan_of(**base, stage2_allocation=alpha, stage2_fraction=delta)
        for p in (p2, p3):
            assert p['delta'] * (1 - p['rho']) == pytest.approx(p['gamma'] * p['alpha'])
            assert (p['rho'], p['alpha'], p['delta']) == pytest.approx((rho, alpha, delta), abs=1e-12)
            assert p['stage2_steps'] == p1['stage2_steps'] and p['stage2_target'] == p1['stage2_target']


def test_all_three_consistent_accepted():
    plan = plan_of(400, 8, 100, 4, replay_fraction=0.5, stage2_allocation=1, stage2_fraction=0.25)
    assert plan['stage2_steps'] == 100 and plan['stage2_target'] == 400


# ---------------------------------------------------------------------------------------------------------------
# δ = 0 and δ = 1
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('given', [dict(replay_fraction=0.5, stage2_allocation=0),
                                   dict(stage2_allocation=0, stage2_fraction=0)])
def test_delta_zero_no_stage2(given):
    plan = plan_of(20, 5, 7, 3, **given)
    assert plan['delta'] == 0 and plan['alpha'] == 0
    assert plan['stage2_steps'] == 0 and plan['stage1_steps'] == 20 and plan['stage2_target'] == 0
    tgt, _, n = all_batches(plan)
    assert np.array_equal(n, even(21, 20)) and len(tgt) == 21
    assert all(schedule.stage_of(plan, t) == 1 for t in range(20))
    assert not any(schedule.resets_optimizer_at(plan, t) for t in range(20))


@pytest.mark.parametrize('given', [dict(stage2_allocation=1, stage2_fraction=1),
                                   dict(replay_fraction=1 - 21 / 100, stage2_allocation=1)])
def test_delta_one_no_stage1(given):
    plan = plan_of(20, 5, 7, 3, **given)  # γ = 21/100
    assert plan['delta'] == pytest.approx(1) and plan['alpha'] == 1
    assert plan['stage1_steps'] == 0 and plan['stage2_start'] == 0 and plan['stage2_steps'] == 20
    tgt, _, n = all_batches(plan)
    assert np.array_equal(n, even(21, 20))  # target spread over the whole run
    assert all(schedule.stage_of(plan, t) == 2 for t in range(20))
    for mode in ('midtrain', 'finetune'):  # nothing before stage 2: no reset; fine-tuning's stage-2 schedule is all
        config = cfg(20, 5, 7, 3, mode=mode, **given)
        p = schedule.make_plan(config)
        assert p['restart_schedule'] == (mode == 'finetune') and not p['reset_optimizer']
        peak = config['stage2_learning_rate'] if mode == 'finetune' else config['learning_rate']
        assert max(schedule.lr_at(p, t) for t in range(20)) == pytest.approx(peak)


def test_no_target_data_is_plain_pretraining():
    plan = plan_of(10, 4, 0, 1)
    assert plan['T'] == 0 and plan['stage2_steps'] == 0 and plan['generic_total'] == 40
    tgt, gen, _ = all_batches(plan)
    assert len(tgt) == 0 and np.array_equal(gen, np.arange(40))  # stream positions, in order


# ---------------------------------------------------------------------------------------------------------------
# Which sequences: every pool sequence exactly e times, epochs are permutations, the cursor crosses stages
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('N,S,U,e,gas,alpha,rho', [(40, 6, 13, 5, 1, 0.4, 0.5), (40, 6, 13, 5, 2, 1, 0.0),
                                                   (25, 4, 1, 30, 1, 0.5, 0.2), (30, 5, 97, 1, 1, 0.8, 0.1)])
def test_each_pool_sequence_exactly_e_times(N, S, U, e, gas, alpha, rho):
    plan = plan_of(N, S, U, e, gas=gas, replay_fraction=rho, stage2_allocation=alpha)
    tgt, _, _ = all_batches(plan)  # counter order: steps in order, slots in order
    assert len(tgt) == U * e
    assert np.array_equal(np.bincount(tgt, minlength=U), np.full(U, e))
    for epoch in tgt.reshape(e, U):
        assert np.array_equal(np.sort(epoch), np.arange(U))  # each epoch sees each pool sequence once


def test_target_cursor_runs_across_stage_boundary():
    # The id of target slot c depends only on (data_seed, U, c): the target and generic streams of a two-stage plan
    # equal those of a one-stage plan with the same U, e, N, S. K1 = 13 is mid-epoch (U = 7).
    N, S, U, e = 30, 4, 7, 3
    two = plan_of(N, S, U, e, stage2_allocation=0.4, replay_fraction=0.3)
    one = plan_of(N, S, U, e, stage2_allocation=1, stage2_fraction=1)
    assert two['stage1_target'] == 13 and two['stage1_steps'] > 0
    tgt2, gen2, _ = all_batches(two)
    tgt1, gen1, _ = all_batches(one)
    assert np.array_equal(tgt2, tgt1) and np.array_equal(gen2, gen1)
    is_target, ids = schedule.step_batch(two, two['stage2_start'])
    assert ids[is_target][0] == tgt1[13]  # stage 2 continues the counter at K1, not at 0


def test_target_ids_are_pool_ids_with_split_sizes():
    config = cfg(30, 4, 7, 3, stage2_allocation=0.4, replay_fraction=0.3)
    plan = schedule.make_plan(config, target_windows=50, generic_windows=10 ** 6)
    tgt, _, _ = all_batches(plan)
    assert np.array_equal(np.bincount(tgt, minlength=7), np.full(7, 3))  # ids stay pool ids, not windows
    # The pool: U distinct windows of the split, drawn once (the same whatever the stage split).
    other = schedule.make_plan({**config, 'stage2_allocation': 1, 'replay_fraction': None, 'stage2_fraction': 1},
                               target_windows=50, generic_windows=10 ** 6)
    pool = {}
    for p in (plan, other):
        for t in range(30):
            step = schedule.describe_step(p, t)
            for i, w in zip(step['target_pool_ids'], step['target_windows']):
                assert pool.setdefault(i, w) == w
    assert sorted(pool) == list(range(7)) and len(set(pool.values())) == 7
    assert all(0 <= w < 50 for w in pool.values())


def test_generic_windows_fresh_while_split_large_enough():
    N, S, U, e = 50, 6, 10, 3
    config = cfg(N, S, U, e, replay_fraction=0.5, stage2_allocation=0.6)
    G = N * S - U * e
    big = schedule.make_plan(config, generic_windows=10 ** 6)  # big, but its permutation is materialised
    _, gen, _ = all_batches(big)
    assert len(gen) == G and len(np.unique(gen)) == G  # never repeats
    assert not any('repeat' in w for w in big['warnings'])

    exact = schedule.make_plan(config, generic_windows=G)  # exactly enough: one permutation of the split
    _, gen, _ = all_batches(exact)
    assert np.array_equal(np.sort(gen), np.arange(G)) and not any('repeat' in w for w in exact['warnings'])

    small = schedule.make_plan(config, generic_windows=G - 1)  # one short: reshuffle, with a warning
    assert any('generic' in w and 'repeat' in w for w in small['warnings'])
    W = 37
    tiny = schedule.make_plan(config, generic_windows=W)
    _, gen, _ = all_batches(tiny)
    assert gen.min() >= 0 and gen.max() < W
    for block in gen[:G // W * W].reshape(-1, W):
        assert np.array_equal(np.sort(block), np.arange(W))  # each pass over the split is a permutation


def test_generic_offset_continues_cursor():
    # A run continuing another's cursor (generic_offset = windows already used) never re-feeds them.
    N, S, U, e = 20, 5, 6, 2
    G = N * S - U * e
    first = schedule.make_plan(cfg(N, S, U, e, replay_fraction=0.5, stage2_allocation=1), generic_windows=2 * G)
    second = schedule.make_plan(cfg(N, S, U, e, replay_fraction=0.5, stage2_allocation=1, generic_offset=G),
                                generic_windows=2 * G)
    _, gen_a, _ = all_batches(first)
    _, gen_b, _ = all_batches(second)
    assert len(np.intersect1d(gen_a, gen_b)) == 0
    assert not any('repeat' in w for w in second['warnings'])
    nosize = plan_of(N, S, U, e, replay_fraction=0.5, stage2_allocation=1, generic_offset=G)
    _, pos, _ = all_batches(nosize)
    assert np.array_equal(pos, np.arange(G, 2 * G))  # without split sizes: stream positions after the offset
    over = schedule.make_plan(cfg(N, S, U, e, replay_fraction=0.5, stage2_allocation=1, generic_offset=G),
                              generic_windows=2 * G - 1)
    assert any('repeat' in w for w in over['warnings'])


# ---------------------------------------------------------------------------------------------------------------
# Errors: UserError naming the key(s)
# ---------------------------------------------------------------------------------------------------------------

# γ = 400 / 3200 = 1/8 unless the case overrides U, e.
ERRORS = [
    (dict(replay_fraction=0.5, stage2_allocation=1, stage2_fraction=0.3), KEYS),  # inconsistent triple
    (dict(replay_fraction=0.5, stage2_fraction=1.5), ('stage2_fraction',)),  # δ > 1 given
    (dict(replay_fraction=0.9, stage2_allocation=1), ('replay_fraction', 'stage2_allocation')),  # δ = 1.25
    # stage-1 target weight γ(1−α)/(1−δ) > 1: 0.125/0.1, then γ = 0.9: 0.45/0.1
    (dict(stage2_allocation=0, stage2_fraction=0.9), ('stage2_allocation', 'stage2_fraction')),
    (dict(U=720, e=4, replay_fraction=0.5, stage2_allocation=0.5), ('stage2_allocation', 'stage2_fraction')),
    (dict(stage2_allocation=0.5, stage2_fraction=1), ('stage2_allocation', 'stage2_fraction')),  # δ=1, α<1
    (dict(replay_fraction=1, stage2_allocation=0.5), ('replay_fraction', 'stage2_allocation')),
    (dict(replay_fraction=1, stage2_allocation=0), ('stage2_fraction',)),  # δ undetermined
    (dict(stage2_allocation=0.5, stage2_fraction=0), ('stage2_fraction', 'stage2_allocation')),
    (dict(stage2_allocation=1, stage2_fraction=0.05), ('stage2_fraction',)),  # ρ would be negative
    (dict(replay_fraction=0, stage2_fraction=0.5), ('stage2_fraction', 'replay_fraction')),  # α would be 4
    (dict(replay_fraction=0.5), KEYS),  # only one given
    (dict(), KEYS),  # none given
    (dict(U=3201, e=1, replay_fraction=0.5, stage2_allocation=1), ('target_tokens', 'target_epochs')),
    (dict(U=400, e=9, replay_fraction=0.5, stage2_allocation=1), ('target_tokens', 'target_epochs')),
    (dict(replay_fraction=0.5, stage2_allocation=1, mode='pretrain'), ('mode',)),
    (dict(replay_fraction=0.5, stage2_allocation=1, lr_schedule='linear'), ('lr_schedule',)),
    (dict(replay_fraction=0.5, stage2_allocation=1, stage2_schedule='again'), ('stage2_schedule',)),
    (dict(replay_fraction=0.5, stage2_allocation=1, target_epochs=0), ('target_epochs',)),
]


@pytest.mark.parametrize('kw,keys', ERRORS)
def test_user_errors(kw, keys):
    kw = dict(kw)
    U, e = kw.pop('U', 100), kw.pop('e', 4)
    with pytest.raises(UserError) as err:
        plan_of(400, 8, U, e, **kw)
    assert all(k in str(err.value) for k in keys), str(err.value)


@pytest.mark.parametrize('key', KEYS)
@pytest.mark.parametrize('value', [-0.1, 1.5, 2])
def test_fraction_out_of_range(key, value):
    others = [k for k in KEYS if k != key]
    fine = {'replay_fraction': 0.5, 'stage2_allocation': 1, 'stage2_fraction': 0.25}
    with pytest.raises(UserError, match=key):
        plan_of(400, 8, 100, 4, **{key: value, others[0]: fine[others[0]]})


@pytest.mark.parametrize('kw', [dict(batch_size=2**100), dict(max_iters=2**62), dict(generic_offset=2**63 - 100)])
def test_counts_past_int64_are_user_errors(kw):
    # step_batch counts sequences in numpy int64s: past them a run failed mid-training with a numpy traceback
    with pytest.raises(UserError, match="int64 counters"):
        schedule.make_plan(cfg(400, 8, 100, 4, replay_fraction=0.5, stage2_allocation=1, **kw))


@pytest.mark.parametrize('kw', [dict(), dict(eval_interval=0), dict(eval_interval=7, spike_eval_steps=5),
                                dict(spike_eval_steps=30, spike_eval_interval=0), dict(spike_eval_steps=500),
                                dict(stages=[dict(steps=100, target=0), dict(steps=0, target=0, spike_evals=True),
                                             dict(target=400, schedule='restart')], replay_fraction=None,
                                     stage2_allocation=None, spike_eval_steps=10, spike_eval_interval=3)])
def test_eval_steps_equal_the_scan(kw):
    plan = schedule.make_plan(cfg(400, 8, 100, 4, **{'replay_fraction': 0.5, 'stage2_allocation': 1, **kw}))
    assert schedule.eval_steps(plan) == [k for k in range(plan['N'] + 1) if schedule.evals_at(plan, k)]


def test_eval_steps_of_a_huge_plan_are_quick():
    plan = schedule.make_plan(cfg(10**12, 8, 100, 4, replay_fraction=0.5, stage2_allocation=1, eval_interval=0))
    assert schedule.eval_steps(plan)[-1] == 10**12  # scanning every step count took hours


def test_target_tokens_below_one_block():
    with pytest.raises(UserError, match='target_tokens.*block_size'):
        schedule.make_plan({**DEFAULTS, 'target_tokens': 100, 'block_size': 256, 'replay_fraction': 0.5,
                            'stage2_allocation': 1})


def test_pool_larger_than_split():
    config = cfg(400, 8, 100, 4, replay_fraction=0.5, stage2_allocation=1)
    schedule.make_plan(config, target_windows=100)  # exactly enough
    with pytest.raises(UserError, match='target_tokens'):
        schedule.make_plan(config, target_windows=99)


def test_stage1_rounding_error_names_keys():
    # Real-valued weight ≤ 1 but stage 1 loses a step to rounding: N=3, S=2, T=5, α=0.2 -> K1=4, L1=1 after δN=1.5.
    with pytest.raises(UserError, match='stage2_fraction'):
        plan_of(3, 2, 5, 1, stage2_allocation=0.2, stage2_fraction=0.5)


@pytest.mark.parametrize('key', KEYS)
def test_non_numeric_fraction_is_user_error(key):
    # config/default.py gives these keys default None, so configurator accepts any literal and leaves the check
    # "where they are used"; a typo such as --replay_fraction=half must still be a UserError (exit 2, no traceback).
    with pytest.raises(UserError, match=key):
        schedule.make_plan(load_config([f'--{key}=half', '--target_tokens=4096']))


# ---------------------------------------------------------------------------------------------------------------
# Learning rate
# ---------------------------------------------------------------------------------------------------------------

PEAK, PEAK2, MIN = 1e-3, 3e-4, 1e-5


def lrs(plan):
    return np.array([schedule.lr_at(plan, t) for t in range(plan['N'])])


def check_one_schedule(lr, kind, peak, warmup_fraction=0.01, cooldown_fraction=0.1):
    """One schedule of len(lr) steps from its first step: warmup, then the kind's shape."""
    L = len(lr)
    w = max(1, half_up(warmup_fraction * L))
    assert lr[0] == pytest.approx(peak / w)  # first update: peak/warmup, never 0
    assert np.allclose(lr[:w], peak * np.arange(1, w + 1) / w)  # linear warmup
    assert lr[w - 1] == pytest.approx(peak)
    if w < L:
        assert lr[w] == pytest.approx(peak)  # peak right after warmup
    after = lr[w:]
    if kind == 'constant':
        assert np.allclose(after, peak, rtol=0, atol=1e-15)
    elif kind == 'cosine':
        assert np.all(np.diff(after) <= 1e-18) and after.min() >= MIN - 1e-15  # monotone, not below min_lr
        assert after[-1] - MIN < (math.pi / (L - w)) ** 2 * (peak - MIN)  # ends near min_lr (one step short)
    else:  # wsd
        cool = half_up(cooldown_fraction * L)
        start = L - cool
        assert np.allclose(lr[w:start], peak, rtol=0, atol=1e-15)  # stable until the last cooldown_fraction
        decay = lr[start:]
        d = np.diff(decay)
        assert np.all(d < 0) and np.allclose(d, d[0])  # linear
        assert d[0] == pytest.approx(-(peak - MIN) / cool)  # reaching min_lr over exactly the cooldown steps
        assert decay.min() >= MIN - 1e-15 and decay[-1] - MIN <= (peak - MIN) / cool + 1e-15


@pytest.mark.parametrize('kind', ['cosine', 'wsd', 'constant'])
@pytest.mark.parametrize('N', [1000, 1200, 37, 1])
def test_lr_single_schedule(kind, N):
    plan = plan_of(N, 2, 0, 1, lr_schedule=kind, learning_rate=PEAK, min_lr=MIN)
    lr = lrs(plan)
    if N == 1:
        assert lr[0] == PEAK  # warmup = max(1, round(0.01)) = 1 step reaching the peak
    else:
        check_one_schedule(lr, kind, PEAK)


def test_lr_warmup_fraction():
    lr = lrs(plan_of(1000, 2, 0, 1, warmup_fraction=0.05, learning_rate=PEAK, min_lr=MIN))
    check_one_schedule(lr, 'cosine', PEAK, warmup_fraction=0.05)
    assert lr[0] == pytest.approx(PEAK / 50)


# N=1200, S=2, U=150, e=2: γ = 1/8, ρ = 0.5, α = 1 -> δ = 1/4, stage 2 = steps 900..1199 (warmups 9, 3; whole: 12).
TWO_STAGE = dict(N=1200, S=2, U=150, e=2, replay_fraction=0.5, stage2_allocation=1, learning_rate=PEAK,
                 stage2_learning_rate=PEAK2, min_lr=MIN)
S2 = 900


def resets(plan):
    return [t for t in range(plan['N']) if schedule.resets_optimizer_at(plan, t)]


@pytest.mark.parametrize('kind', ['cosine', 'wsd', 'constant'])
def test_lr_finetune_restarts(kind):
    plan = plan_of(**TWO_STAGE, mode='finetune', lr_schedule=kind)
    assert plan['stage2_start'] == S2
    lr = lrs(plan)
    check_one_schedule(lr[:S2], kind, PEAK)  # stage 1: its own schedule over L1 steps
    check_one_schedule(lr[S2:], kind, PEAK2)  # stage 2: warmup again, from stage2_learning_rate / warmup2
    assert lr[S2] == pytest.approx(PEAK2 / 3)
    assert resets(plan) == [S2]


@pytest.mark.parametrize('kind', ['cosine', 'wsd', 'constant'])
def test_lr_midtrain_one_schedule(kind):
    plan = plan_of(**TWO_STAGE, mode='midtrain', lr_schedule=kind)
    lr = lrs(plan)
    check_one_schedule(lr, kind, PEAK)  # no restart at the stage boundary
    plain = lrs(plan_of(1200, 2, 0, 1, lr_schedule=kind, learning_rate=PEAK, min_lr=MIN))
    assert np.array_equal(lr, plain)  # the same schedule as a one-stage run
    assert resets(plan) == [] and not plan['reset_optimizer']


def test_lr_ablation_overrides():
    fine = lrs(plan_of(**TWO_STAGE, mode='finetune'))
    mid = lrs(plan_of(**TWO_STAGE, mode='midtrain'))
    # midtrain + restart: fine-tuning's LR, but the optimizer is kept.
    p = plan_of(**TWO_STAGE, mode='midtrain', stage2_schedule='restart')
    assert np.array_equal(lrs(p), fine) and resets(p) == []
    # finetune without reset: LR still restarts.
    p = plan_of(**TWO_STAGE, mode='finetune', reset_optimizer=False)
    assert np.array_equal(lrs(p), fine) and resets(p) == []
    # finetune + continue: one schedule, still a reset at the boundary.
    p = plan_of(**TWO_STAGE, mode='finetune', stage2_schedule='continue')
    assert np.array_equal(lrs(p), mid) and resets(p) == [S2]
    # midtrain + reset: one schedule, reset at the boundary.
    p = plan_of(**TWO_STAGE, mode='midtrain', reset_optimizer=True)
    assert np.array_equal(lrs(p), mid) and resets(p) == [S2]


def test_lr_overrides_via_command_line_values():
    # The same ablations through load_config's --key=value parsing (strings and booleans).
    base = ['--max_iters=1200', '--batch_size=2', f'--block_size={BLOCK}', f'--target_tokens={150 * BLOCK}',
            '--target_epochs=2', '--replay_fraction=0.5', '--stage2_allocation=1']
    p = schedule.make_plan(load_config(base + ['--mode=midtrain', '--stage2_schedule=restart']))
    assert p['restart_schedule'] and not p['reset_optimizer']
    p = schedule.make_plan(load_config(base + ['--mode=finetune', '--reset_optimizer=False']))
    assert p['restart_schedule'] and not p['reset_optimizer']
    assert schedule.lr_at(p, S2) == pytest.approx(DEFAULTS['stage2_learning_rate'] / 3)


# ---------------------------------------------------------------------------------------------------------------
# Purity and prefix hashes
# ---------------------------------------------------------------------------------------------------------------

def test_step_batch_is_pure():
    config = cfg(40, 6, 13, 5, replay_fraction=0.5, stage2_allocation=0.4)
    plan = schedule.make_plan(config, target_windows=40, generic_windows=500)
    steps = [39, 0, plan['stage2_start'], 17, plan['stage2_start'] - 1, 17]
    first = [schedule.step_batch(plan, t) for t in steps]
    for cache in (schedule.epoch_order, schedule.target_pool):
        cache.cache_clear()  # no hidden state: caches only memoise
    fresh = schedule.make_plan(config, target_windows=40, generic_windows=500)
    for t, (a_mask, a_ids) in zip(reversed(steps), reversed(first)):
        for b_mask, b_ids in (schedule.step_batch(plan, t), schedule.step_batch(fresh, t)):
            assert np.array_equal(a_mask, b_mask) and np.array_equal(a_ids, b_ids)


def test_data_seed_changes_order_not_counts():
    a = plan_of(40, 6, 13, 5, replay_fraction=0.5, stage2_allocation=0.4)
    b = plan_of(40, 6, 13, 5, replay_fraction=0.5, stage2_allocation=0.4, data_seed=7)
    ta, _, na = all_batches(a)
    tb, _, nb = all_batches(b)
    assert np.array_equal(na, nb) and not np.array_equal(ta, tb)


def test_prefix_hashes_fork_point():
    # α = 1, mid-training, WSD: ρ only moves the stage-2 start; everything before the earlier start is identical.
    common = cfg(64, 8, 16, 2, stage2_allocation=1, mode='midtrain', lr_schedule='wsd')  # γ = 1/16
    a = {**common, 'replay_fraction': 0.5}  # δ = 1/8: stage 2 from step 56
    b = {**common, 'replay_fraction': 0.75}  # δ = 1/4: stage 2 from step 48
    pa, pb = schedule.make_plan(a), schedule.make_plan(b)
    assert (pa['stage2_start'], pb['stage2_start']) == (56, 48)
    ha, hb = schedule.prefix_hashes(a, pa), schedule.prefix_hashes(b, pb)
    assert len(ha) == len(hb) == 65
    assert ha[:49] == hb[:49]  # states after 0..48 steps agree
    assert all(x != y for x, y in zip(ha[49:], hb[49:]))  # step 48 differs, so every later state does
    c = {**a, 'n_layer': a['n_layer'] + 1}
    hc = schedule.prefix_hashes(c, schedule.make_plan(c), upto=3)
    assert hc[0] != ha[0]  # a different model differs before any step
    assert schedule.prefix_hashes(a, schedule.make_plan(a)) == ha  # deterministic


# ---------------------------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------------------------

CLI = ['--max_iters=1024', '--batch_size=1024', '--gradient_accumulation_steps=1', '--block_size=1024',
       '--target_tokens=1048576', '--target_epochs=32', '--replay_fraction=0.5', '--stage2_allocation=1',
       '--format=json']


def run_cli(args, tmp_path):
    nowhere = str(tmp_path / 'nonexistent')  # no data dirs: nothing is read
    return subprocess.run([sys.executable, 'schedule.py', *args, f'--generic_dir={nowhere}',
                           f'--target_dir={nowhere}'], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_cli_summary_and_step(tmp_path):
    r = run_cli(CLI, tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out['stage2_steps'] == 64 and out['T'] == 32768 and out['stage2_start'] == 960
    r = run_cli(CLI + ['--show_step=1000'], tmp_path)
    assert r.returncode == 0, r.stderr
    step = json.loads(r.stdout)
    assert step['step'] == 1000 and step['stage'] == 2
    assert step['n_target'] == 512 and step['n_generic'] == 512 and len(step['target_pool_ids']) == 512
    assert step['slots_target'] == list(range(1, 1024, 2))  # 512 of 1024 spread evenly: every other slot


@pytest.mark.parametrize('bad', [['--max_iter=5'], ['--replay_fraction=1.5'], ['--show_step=1024']])
def test_cli_user_error_one_line(tmp_path, bad):
    r = run_cli(CLI + bad, tmp_path)
    assert r.returncode == 2
    assert 'Traceback' not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('error:')


def write_split(directory, n_tokens, dtype='uint16'):
    os.makedirs(directory, exist_ok=True)
    for split in ('train', 'val'):
        np.zeros(n_tokens, dtype=dtype).tofile(os.path.join(directory, f'{split}.bin'))
    with open(os.path.join(directory, 'meta.json'), 'w') as f:
        json.dump({'dtype': dtype, 'vocab_size': 256}, f)
    return str(directory)


@pytest.mark.parametrize('dtype', ['uint16', 'uint32'])
def test_split_windows_counts_whole_windows(tmp_path, dtype):
    # A window needs block_size + 1 tokens (inputs + shifted labels); consecutive windows share only a label.
    assert split_windows('target', write_split(tmp_path / 'a', 8 * 9 + 1, dtype), 8) == 9
    assert split_windows('target', write_split(tmp_path / 'b', 8 * 9, dtype), 8) == 8
    assert split_windows('target', str(tmp_path / 'missing'), 8) is None


def test_cli_reads_split_sizes(tmp_path):
    small = ['--max_iters=10', '--batch_size=4', '--block_size=8', '--target_tokens=80', '--target_epochs=2',
             '--replay_fraction=0.5', '--stage2_allocation=1', '--format=json']
    generic = write_split(tmp_path / 'generic', 8 * 1000 + 1)
    args = [sys.executable, 'schedule.py', *small, f'--generic_dir={generic}']
    r = subprocess.run(args + [f"--target_dir={write_split(tmp_path / 't9', 8 * 9 + 1)}"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and 'target_tokens' in r.stderr and 'Traceback' not in r.stderr  # U=10 > 9 windows
    r = subprocess.run(args + [f"--target_dir={write_split(tmp_path / 't10', 8 * 10 + 1)}", '--show_step=9'],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    step = json.loads(r.stdout)
    # γ = 20/40, ρ = 0.5, α = 1 -> δ = 1: every step is 2 target + 2 generic.
    assert step['stage'] == 2 and step['n_target'] == 2 and step['n_generic'] == 2
    assert all(0 <= w < 10 for w in step['target_windows'])
    assert all(0 <= w < 1000 for w in step['generic_windows']) and step['generic_stream_positions'] is None
