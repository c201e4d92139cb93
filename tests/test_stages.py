"""Plans as stage lists: the planner against its spec (exact ramps, stage LR schedules, resets, spike evals, bad
lists), and train.py running config/three_stage.py and config/replay_ramp.py, judged by what it actually fed (every
sequence's first token encodes its window) and by the stage, LR and reset records it logged. Config files that
include others (base = [...]). The one-knob recipe (config/finetune_replay.py, mode='mixed', max_iters=0 derives N)
against its formula, and train.py running it from a tiny local model."""
import collections
import json
import math
import os
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest

import schedule
from configurator import UserError, load_config
from helpers import ROOT, make_sources, read_log, run_train
from sources import split_windows

TARGET_BASE, VOCAB = 1200, 1300  # generic window w is token w < 1200; target window w is token 1200 + w


def plan_for(stages, N=40, S=8, U=10, e=4, block_size=8, **extra):
    config = load_config([], defaults={**load_config([]), 'max_iters': N, 'batch_size': S,
                                       'gradient_accumulation_steps': 1, 'block_size': block_size,
                                       'target_tokens': U * block_size, 'target_epochs': e, 'stages': stages,
                                       **extra})
    return schedule.make_plan(config)


def step_counts(plan):
    return [int(schedule.step_batch(plan, t)[0].sum()) for t in range(plan['N'])]


def spec_ramp_counts(L, K, a, b):
    """The spec, written out with exact fractions: the first j steps of a stage hold floor(K·W(j)/W(L)) target
    sequences, W(j) the sum of the first j weights, which run linearly from a (first step) to b (last step)."""
    weights = [Fraction(a) + (Fraction(b) - Fraction(a)) * i / (L - 1) if L > 1 else Fraction(1) for i in range(L)]
    total = sum(weights)
    before = [math.floor(K * sum(weights[:j]) / total) for j in range(L + 1)]
    return [before[j + 1] - before[j] for j in range(L)]


@pytest.mark.parametrize('L, K, a, b', [(10, 40, 1, 3), (10, 40, 3, 1), (7, 20, 0, 1), (13, 51, 2, 5),
                                        (1, 5, 1, 3), (2, 9, 1, 2), (25, 100, 0.25, 0.75)])
def test_a_ramp_gives_exact_integer_counts_on_a_line(L, K, a, b):
    S = 8
    plan = plan_for([dict(steps=40 - L, target=0), dict(steps=L, target=K, ramp=(a, b))], S=S, U=K, e=1)
    counts = step_counts(plan)
    assert counts[:40 - L] == [0] * (40 - L)
    assert counts[40 - L:] == spec_ramp_counts(L, K, a, b)
    assert sum(counts) == K
    # targets_before is the closed form of the running sum, at every step
    assert [schedule.targets_before(plan, t) for t in range(41)] == [0] + list(np.cumsum(counts))


def test_a_stage_given_replay_fraction_may_take_the_rest_of_the_steps():
    """Its steps are known once the others' are: target = round((1 − ρ)·steps·S) of the steps it is left."""
    plan = plan_for([dict(steps=30, target=0), dict(replay_fraction=0.75)], S=8, U=20, e=1)
    assert [(s['steps'], s['target']) for s in plan['stages']] == [(30, 0), (10, 20)]
    assert step_counts(plan)[30:] == [2] * 10


def test_replay_fraction_pair_is_a_ramp_of_the_target_share():
    plan = plan_for([dict(steps=20, target=0), dict(steps=20, replay_fraction=(0.75, 0.25))], S=8, U=80, e=1)
    counts = step_counts(plan)[20:]
    assert sum(counts) == round(0.5 * 20 * 8) == 80
    assert counts == spec_ramp_counts(20, 80, 0.25, 0.75)
    assert counts[0] == 2 and counts[-1] == 6  # target share 0.25 -> 0.75 of 8 slots


def test_three_stages_lr_resets_and_spike_evals():
    stages = [dict(fraction=0.5, target=0), dict(fraction=0.25, replay_fraction=0.5),
              dict(schedule='restart', lr_schedule='cosine', learning_rate=3e-4, reset_optimizer=True)]
    plan = plan_for(stages, N=40, S=8, U=10, e=8, lr_schedule='wsd', learning_rate=1e-3, cooldown_fraction=0.1,
                    warmup_fraction=0.1, spike_eval_steps=4, spike_eval_interval=2, eval_interval=0)
    assert [(s['start'], s['steps'], s['target']) for s in plan['stages']] == [(0, 20, 0), (20, 10, 40), (30, 10, 40)]
    assert [schedule.stage_of(plan, t) for t in (0, 19, 20, 29, 30, 39)] == [1, 1, 2, 2, 3, 3]
    # stages 1 and 2 share one WSD schedule of 30 steps: warmup 3, decay over the last 3; stage 3 its own cosine
    wsd = [1e-3 * (i + 1) / 3 if i < 3 else 1e-3 if i < 27 else 1e-3 * (1 - (i - 27) / 3) for i in range(30)]
    cosine = [3e-4 * (i + 1) / 1 if i < 1 else 3e-4 * 0.5 * (1 + math.cos(math.pi * (i - 1) / 9)) for i in range(10)]
    assert [schedule.lr_at(plan, t) for t in range(40)] == pytest.approx(wsd + cosine)
    assert [t for t in range(40) if schedule.resets_optimizer_at(plan, t)] == [30]
    assert schedule.stage_starts(plan) == [20, 30]
    # dense evals after the stage that resets and restarts; none after stage 2, which only continues
    assert [k for k in range(41) if schedule.evals_at(plan, k)] == [30, 32, 34, 40]
    assert [schedule.stage_record(plan, t)['step'] for t in range(40) if schedule.stage_record(plan, t)] == [0, 20, 30]
    assert schedule.stage_record(plan, 30)['reset_optimizer'] and schedule.stage_record(plan, 30)['lr_restart']
    assert not schedule.stage_record(plan, 20)['lr_restart']


@pytest.mark.parametrize('stages, extra, message', [
    ([dict(steps=40)], dict(replay_fraction=0.5), "stages is set, and so is replay_fraction"),
    ([dict(stpes=40)], {}, "stages[0] has an unknown key 'stpes' (did you mean 'steps'?)"),
    ([dict(target=0), dict(target=40)], {}, "stages [0, 1] give no steps or fraction"),
    ([dict(steps=30, target=0), dict(steps=20)], {}, "the stages give 50 steps but max_iters=40: change one"),
    ([dict(steps=30, target=0), dict(steps=20), dict(target=0)], {}, "the stages give 50 steps, more than max_iters"),
    ([dict(steps=30, target=0), dict(steps=10, target=30)], {}, "the stages give 30 target sequences but"),
    ([dict(steps=30, target=0), dict(learning_rate=1e-3)], {}, "stages[1] sets learning_rate but continues"),
    ([dict(steps=39, target=0), dict(target=40)], {}, "stage 2 has 1 steps x 8 sequences but 40 target"),
    ([dict(steps=30, target=0), dict(ramp=(0, 1))], dict(U=15), "stage 2's ramp 0:1 needs more than 8 target"),
    ("not a list", {}, "must be a non-empty list of dicts"),
    ([dict(steps=30, target=0), dict(replay_fraction=(0.5, 1.5))], {}, "must be a number or a pair of numbers"),
])
def test_bad_stage_lists_name_what_to_change(stages, extra, message):
    with pytest.raises(UserError) as e:
        plan_for(stages, **extra)
    assert message in str(e.value)


# ---------------------------------------------------------------------------------------------------------------
# train.py on the example configs: what it fed and logged
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def sources(tmp_path_factory):
    return make_sources(str(tmp_path_factory.mktemp('data')), block_size=64, generic_windows=1150,
                        target_windows=80, target_base=TARGET_BASE, vocab=VOCAB)


# shorter than the configs (80 of their 320 steps) with target data to match: the stage fractions stay theirs
EXAMPLES = {'config/three_stage.py': ['--max_iters=80', '--target_epochs=4'],
            'config/replay_ramp.py': ['--max_iters=80', '--target_tokens=2048', '--target_epochs=5']}


@pytest.fixture(scope='module', params=sorted(EXAMPLES))
def example_run(request, sources, tmp_path_factory):
    out = str(tmp_path_factory.mktemp('run'))
    args = [request.param, *EXAMPLES[request.param], f'--generic_dir={sources[0]}', f'--target_dir={sources[1]}',
            '--log_interval=1', '--eval_interval=20', '--val_tokens=1024', f'--out_dir={out}']
    run_train(args, config='')
    config = load_config(args)
    plan = schedule.make_plan(config, target_windows=80, generic_windows=1150)
    return request.param, out, plan


def test_example_feeds_exactly_its_plan(example_run):
    name, out, plan = example_run
    log = read_log(out)
    fed = [r for r in log if r['kind'] == 'batch']
    assert [b['step'] for b in fed] == list(range(plan['N']))
    pool = schedule.pool_of(plan)
    for b in fed:
        is_target, ids = schedule.step_batch(plan, b['step'])
        assert b['first_tokens'] == [TARGET_BASE + pool[i] if t else i for t, i in zip(is_target, ids)]
        assert b['is_target'] == [int(t) for t in is_target]
    target = [tok - TARGET_BASE for b in fed for tok in b['first_tokens'] if tok >= TARGET_BASE]
    assert len(target) == plan['T'] and set(collections.Counter(target).values()) == {plan['e']}
    generic = [tok for b in fed for tok in b['first_tokens'] if tok < TARGET_BASE]
    assert len(generic) == len(set(generic)) == plan['generic_total']  # never repeated
    per_step = [sum(tok >= TARGET_BASE for tok in b['first_tokens']) for b in fed]
    if name == 'config/replay_ramp.py':  # stage 2: the last 20 steps, ρ from 0.75 to 0.25 over 16 slots
        assert per_step == [0] * 60 + spec_ramp_counts(20, 160, 0.25, 0.75)
        assert per_step[60] == 4 and per_step[-1] == 12
    else:  # 48 pre-training steps, 16 at ρ = 0.75, 16 more with the other 192 target sequences (ρ = 0.25)
        assert per_step == [0] * 48 + [4] * 16 + [12] * 16


def test_stage_records_lr_and_resets_fall_where_the_plan_says(example_run):
    name, out, plan = example_run
    log = read_log(out)
    stages = [r for r in log if r['kind'] == 'stage']
    expected = {'config/three_stage.py': [(0, 1, 'wsd', True, False), (48, 2, 'wsd', False, False),
                                          (64, 3, 'cosine', True, True)],
                'config/replay_ramp.py': [(0, 1, 'wsd', True, False), (60, 2, 'wsd', False, False)]}[name]
    assert [(r['step'], r['stage'], r['lr_schedule'], r['lr_restart'], r['reset_optimizer']) for r in stages] == expected
    train = [r for r in log if r['kind'] == 'train']
    assert [r['step'] for r in train] == list(range(plan['N']))
    assert [r['lr'] for r in train] == [schedule.lr_at(plan, t) for t in range(plan['N'])]
    assert [r['stage'] for r in train] == [schedule.stage_of(plan, t) for t in range(plan['N'])]
    evals = [r['step'] for r in log if r['kind'] == 'eval']
    assert evals == [k for k in range(plan['N'] + 1) if schedule.evals_at(plan, k)]
    if name == 'config/three_stage.py':  # the spike evals follow stage 3's reset and restart only
        assert evals == [0, 20, 40, 60, 64, 68, 72, 76, 80]
    with open(os.path.join(out, 'summary.json')) as f:
        table = json.load(f)['plan']['stages']
    assert [(s['start'], s['steps']) for s in table] == [(s['start'], s['steps']) for s in plan['stages']]


# ---- config files that include others: base = [...] (configurator.read_config_file) ------------------------------

def test_config_base_includes_read_first_and_are_overridden(tmp_path):
    from configurator import read_config_file
    inner = tmp_path / 'inner.py'
    inner.write_text("base = ['config/tiny.py']\nmax_iters = 7\nbatch_size = 3\n")
    outer = tmp_path / 'outer.py'
    outer.write_text(f"base = [{str(inner)!r}]\nbatch_size = batch_size + 1  # the included value is visible\n")
    config = load_config([str(outer)])
    tiny = load_config(['config/tiny.py'])
    assert (config['max_iters'], config['batch_size']) == (7, 4)
    assert {k: v for k, v in config.items() if k not in ('max_iters', 'batch_size')} == \
        {k: v for k, v in tiny.items() if k not in ('max_iters', 'batch_size')}
    assert 'base' not in read_config_file(str(outer))
    # a run config's base is repo-root relative, like a sweep file's: config/flan_replay.py starts from paper.py
    assert load_config(['config/flan_replay.py'])['block_size'] == load_config(['config/paper.py'])['block_size']


@pytest.mark.parametrize('text, message', [
    ("base = ['config/nope.py']\n", "includes config/nope.py (base = [...]), which is not found: paths are relative "
                                    "to the repository root"),
    ("base = [SELF]\n", "config files include each other in a cycle (base = [...]): "),
    ("import os\nbase = [os.path.join('config', 'tiny.py')]\n", "base must be assigned once, a list of config file "
                                                               "paths written out"),
])
def test_config_base_errors_are_one_line(tmp_path, text, message):
    path = tmp_path / 'run.py'
    path.write_text(text.replace('SELF', repr(str(tmp_path / 'other.py'))))
    (tmp_path / 'other.py').write_text(f"base = [{str(path)!r}]\n")
    with pytest.raises(UserError) as e:
        load_config([str(path)])
    assert message in str(e.value) and '\n' not in str(e.value)


# ---- the one-knob recipe: mode='mixed', max_iters=0 derives N (config/finetune_replay.py) ------------------------

def finetune_replay(*args):
    return load_config(['config/finetune_replay.py', '--init_from=scratch', *args])


def spec_steps(T, S, rho):
    """N = ceil(U·e / (S·(1 − ρ))) in integers, ρ read as the decimal it is written as."""
    keep = 1 - Fraction(str(rho))
    return -(-T * keep.denominator // (S * keep.numerator))


@pytest.mark.parametrize('U, e, batch, gas', [(10240, 1, 8, 8), (37, 3, 5, 1), (1, 1, 3, 2)])
def test_max_iters_0_derives_n_so_every_rho_sees_the_same_target_data(U, e, batch, gas):
    S = batch * gas
    for rho in (0.0, 0.1, 0.25, 0.3, 0.5, 0.75, 0.9, 0.95, 0.99):
        config = finetune_replay(f'--replay_fraction={rho}', f'--target_tokens={U * 2048 + 5}', f'--target_epochs={e}',
                                 f'--batch_size={batch}', f'--gradient_accumulation_steps={gas}')
        plan = schedule.make_plan(config)
        N, keep = plan['N'], 1 - Fraction(str(rho))
        assert N == spec_steps(U * e, S, rho)
        assert (N - 1) * S * keep < U * e <= N * S * keep  # the fewest steps whose target share is at most 1 − ρ
        assert plan['T'] == U * e and [(s['start'], s['steps'], s['target']) for s in plan['stages']] == [(0, N, U * e)]
        assert plan['rho'] == rho and plan['rho_realised'] == pytest.approx(1 - U * e / (N * S), abs=1e-12)
        assert (plan['alpha'], plan['delta'], plan['stage2_start'], plan['stage2_steps']) == (1.0, 1.0, 0, N)
        assert not any(schedule.resets_optimizer_at(plan, t) for t in range(N))
        # the same run with that N written out (what sweep.py passes train.py) plans the same
        same = schedule.make_plan(dict(config, max_iters=N))
        assert [schedule.step_batch(same, t)[1].tolist() for t in range(min(N, 5))] == \
            [schedule.step_batch(plan, t)[1].tolist() for t in range(min(N, 5))]


def test_replay_fraction_alone_changes_the_run(tmp_path):
    nowhere = [f'--generic_dir={tmp_path}/none', f'--target_dir={tmp_path}/none', '--init_from=scratch']
    runs = {}
    for extra in ([], ['--replay_fraction=0.75'], ['--replay_fraction=0']):
        r = subprocess.run([sys.executable, 'schedule.py', 'config/finetune_replay.py', *nowhere, *extra,
                            '--format=json'], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        runs[tuple(extra)] = json.loads(r.stdout)
    assert [p['N'] for p in runs.values()] == [320, 640, 160] and {p['T'] for p in runs.values()} == {10240}
    assert runs[('--replay_fraction=0.75',)]['rho_realised'] == 0.75
    # max_iters given: ρ follows as 1 − γ, or must agree with it
    assert schedule.make_plan(finetune_replay('--max_iters=400', '--replay_fraction=None'))['rho'] == pytest.approx(1 - 10240 / (400 * 64))
    with pytest.raises(UserError, match=r"replay_fraction=0.5 with max_iters=400: .* ρ = 1 − γ = 0.6; set "
                                        r"max_iters=0 to derive N from ρ, or drop replay_fraction"):
        schedule.make_plan(finetune_replay('--max_iters=400', '--replay_fraction=0.5'))
    for args, message in [(['--stage2_allocation=1.0'], "mode='mixed' is one stage of target and replay (α = δ = 1), "
                                                         "with no stage 2 to place, restart or reset: drop "
                                                         "stage2_allocation"),
                          (['--replay_fraction=1.0'], "give replay_fraction (ρ) below 1 (it is 1.0), or max_iters"),
                          (['--target_tokens=0'], "max_iters=0 derives N from the target data (mode='mixed'), but "
                                                  "target_tokens=0 gives none"),
                          (['--mode=midtrain', '--stage2_allocation=1.0'], "max_iters=0 must be at least 1")]:
        with pytest.raises(UserError) as e:
            schedule.make_plan(finetune_replay(*args))
        assert message in str(e.value)


def test_plan_table_names_the_mixed_stage_and_shows_rho(tmp_path):
    args = [sys.executable, 'schedule.py', 'config/finetune_replay.py', '--replay_fraction=0.75',
            f'--generic_dir={tmp_path}/none', f'--target_dir={tmp_path}/none']
    r = subprocess.run(args + ['--init_from=scratch'], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    header, row = [line for line in r.stdout.splitlines() if line.lstrip().startswith(('stage', '1 '))]
    assert 'target share' in header and 'replay ρ' in header
    assert row.split() == ['1', 'target', '+', 'replay', '0..639', '10240', '0.25', '0.75', 'cosine', 'from',
                           '1e-05', 'kept']
    assert 'stage 2' not in r.stdout and 'realised ρ of the stage: 0.75' in r.stdout
    row = schedule.summarize({}, schedule.make_plan(finetune_replay('--replay_fraction=0.75')))['stages'][0]
    assert (row['name'], row['target_share'], row['replay_share']) == ('target + replay', 0.25, 0.75)
    # the paper's two stages are named by what they hold too
    names = [s['name'] for s in schedule.summarize({}, schedule.make_plan(load_config(['config/flan_replay.py'])))
             ['stages']]
    assert names == ['generic only', 'target + replay']
    # a missing model directory is one line from schedule.py (train.py's is tested below)
    r = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.splitlines() == [
        "error: init_from='models/my_model' does not exist (train.py stops there too): put the model directory or "
        "checkpoint there, or add --init_from=scratch to see the plan alone"]


def test_checkpoint_steps_are_checked_against_the_derived_n():
    import train
    train.check_config(finetune_replay('--replay_fraction=0.75', '--checkpoint_steps=[640]'), world=1)  # N = 640
    with pytest.raises(UserError, match=r"checkpoint_steps=\[641\] must be steps between 1 and max_iters"):
        train.check_config(finetune_replay('--replay_fraction=0.75', '--checkpoint_steps=[641]'), world=1)
    with pytest.raises(UserError, match="init_from='models/my_model' does not exist") as e:  # one line
        train.check_config(load_config(['config/finetune_replay.py']), world=1)
    assert '\n' not in str(e.value)


def test_finetune_replay_trains_a_local_model_on_its_plan(tmp_path):
    """config/finetune_replay.py from a tiny Llama directory (prepare/tiny_model.py) on data in its tokenizer:
    train.py runs the derived N steps and feeds exactly the plan's windows (first tokens read from the splits)."""
    pytest.importorskip('transformers')
    import tiny_model
    model_dir = str(tmp_path / 'model')
    tok = tiny_model.make_tokenizer('llama', vocab_size=384, texts=tiny_model.training_texts()[:40])
    tiny_model.make_model('llama', model_dir, *tok)
    data = {name: str(tmp_path / name) for name in ('generic', 'target')}
    env = dict(os.environ, OMP_NUM_THREADS='1', TOKENIZERS_PARALLELISM='false')
    r = subprocess.run([sys.executable, 'prepare/demo.py', '--tokenizer', model_dir, '--max_tokens', '20K', '--val_tokens',
                '3000', '--generic_out', data['generic'], '--target_out', data['target'], '--workers', '1'],
               cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = str(tmp_path / 'out')
    args = ['config/finetune_replay.py', f'--init_from={model_dir}', f"--generic_dir={data['generic']}",
            f"--target_dir={data['target']}", f'--out_dir={out}', '--replay_fraction=0.75', '--block_size=32',
            '--batch_size=4', '--gradient_accumulation_steps=1', '--target_tokens=320', '--target_epochs=2',
            '--eval_interval=0', '--val_tokens=512', '--log_interval=1', '--checkpoint_interval=0',
            '--learning_rate=1e-3']
    run_train(args, config='')
    config = load_config(args)
    windows = {name: split_windows(name, path, 32) for name, path in data.items()}
    plan = schedule.make_plan(config, windows['target'], windows['generic'])
    assert plan['N'] == spec_steps(20, 4, 0.75) == 20  # U = 10 sequences x e = 2, one per step with 3 of replay
    tokens = {name: np.fromfile(os.path.join(path, 'train.bin'), dtype=np.uint16) for name, path in data.items()}
    pool, log = schedule.pool_of(plan), read_log(out)
    fed = [r for r in log if r['kind'] == 'batch']
    assert [b['step'] for b in fed] == list(range(20))
    for b in fed:
        is_target, ids = schedule.step_batch(plan, b['step'])
        assert b['is_target'] == [int(t) for t in is_target] == [0, 0, 0, 1]  # 1 of 4 slots: the last
        assert b['first_tokens'] == [int(tokens['target'][pool[i] * 32]) if t else int(tokens['generic'][i * 32])
                                     for t, i in zip(is_target, ids)]
    train = [r for r in log if r['kind'] == 'train']
    assert {r['stage'] for r in train} == {1} and train[-1]['target_seqs'] == 20
    with open(os.path.join(out, 'summary.json')) as f:
        summary = json.load(f)
    assert summary['model']['source'] == os.path.abspath(model_dir) and summary['plan']['rho_realised'] == 0.75


def test_sweep_finetune_replay_varies_rho_and_data_seed_only():
    import sweep
    spec, _, overrides = sweep.parse_args(['config/sweep_finetune_replay.py'])
    runs = sweep.expand(spec, overrides)
    base = load_config(['config/finetune_replay.py'])
    varying = {k for run in runs for k, v in run['config'].items() if v != base[k]}
    assert varying == {'replay_fraction', 'data_seed', 'max_iters', 'out_dir'}  # `seed` stays: it changes nothing here
    assert sorted((r['config']['replay_fraction'], r['config']['data_seed']) for r in runs) == \
        [(rho, seed) for rho in (0.0, 0.25, 0.5, 0.75) for seed in (1, 2)]
    # max_iters=0 is written out as the N each ρ derives, so the sweep counts and forks real steps
    assert {r['config']['replay_fraction']: r['config']['max_iters'] for r in runs} == \
        {rho: spec_steps(10240, 64, rho) for rho in (0.0, 0.25, 0.5, 0.75)} == {0.0: 160, 0.25: 214, 0.5: 320, 0.75: 640}
