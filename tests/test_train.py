"""train.py end to end on CPU, judged by what it actually fed: every sequence's first token encodes its window
(tests/helpers.py), and log_batch_ids=True logs the first token of every row of the tensors given to the model."""
import collections
import json
import os
import subprocess
import sys

import pytest

import schedule
from configurator import load_config
from helpers import ROOT, TARGET_BASE, copy_for_resume, read_log, run_train, without_timing


@pytest.fixture(scope='module')
def straight_run(sources, tmp_path_factory):
    """One uninterrupted tiny run (N=40, S=8, U=8, e=4, ρ=0.5, α=1) with a kept checkpoint at step 20."""
    out = str(tmp_path_factory.mktemp('straight'))
    args = [f'--generic_dir={sources[0]}', f'--target_dir={sources[1]}', f'--out_dir={out}',
            '--checkpoint_steps=[20]']
    run_train(args)
    return out, args


def batches(out_dir):
    return [r for r in read_log(out_dir) if r['kind'] == 'batch']


def test_log_and_summary_are_written(straight_run):
    out, _ = straight_run
    log = read_log(out)
    kinds = collections.Counter(r['kind'] for r in log)
    assert kinds == {'batch': 40, 'train': 9, 'eval': 10, 'stage': 2}
    assert [r['step'] for r in log if r['kind'] == 'stage'] == [0, 32]  # where stages 1 and 2 begin
    train = [r for r in log if r['kind'] == 'train']
    # every log_interval=5 steps, and the last step of stage 1 (31)
    assert [r['step'] for r in train] == [4, 9, 14, 19, 24, 29, 31, 34, 39]
    for key in ('step', 'stage', 'lr', 'loss', 'loss_target', 'loss_generic', 'steps', 'target_seqs',
                'generic_seqs', 'tokens_target', 'tokens_generic', 'ms_per_step', 'mfu', 'elapsed_s'):
        assert key in train[-1]
    assert train[-1]['target_seqs'] == 32 and train[-1]['generic_seqs'] == 40 * 8 - 32
    assert train[-1]['mfu'] is None  # CPU: unknown peak, not a made-up number
    evals = [r for r in log if r['kind'] == 'eval']
    assert [r['step'] for r in evals] == [0, 10, 20, 30, 32, 33, 34, 35, 36, 40]  # spike evals after step 32
    with open(os.path.join(out, 'summary.json')) as f:
        summary = json.load(f)
    assert summary['final']['val_loss_target'] == evals[-1]['val_loss_target']
    assert summary['tokens'] == {'target': 32 * 32, 'generic': (320 - 32) * 32}
    for key in ('config', 'git_commit', 'versions', 'device', 'sources', 'plan'):
        assert key in summary
    assert summary['compile'] == {'graphs': 0, 'graph_breaks': 0}  # CPU: compile='auto' is off, and says so
    assert set(summary['sources']) == {'generic', 'target'} and summary['sources']['target']['meta_sha256']
    assert os.path.isfile(os.path.join(out, 'ckpt.pt')) and os.path.isfile(os.path.join(out, 'ckpt_20.pt'))
    # the loss went down on both domains
    assert evals[-1]['val_loss_generic'] < evals[0]['val_loss_generic']


def test_each_target_sequence_fed_exactly_e_times(straight_run, sources):
    out, _ = straight_run
    fed = batches(out)
    assert [b['step'] for b in fed] == list(range(40))
    target_windows = [tok - TARGET_BASE for b in fed for tok in b['first_tokens'] if tok >= TARGET_BASE]
    counts = collections.Counter(target_windows)
    assert len(counts) == 8 and set(counts.values()) == {4}  # U=8 pool windows, each e=4 times
    # epoch by epoch: each block of U consecutive target sequences holds every pool window once
    for epoch in range(4):
        assert sorted(target_windows[epoch * 8:(epoch + 1) * 8]) == sorted(counts)
    generic = [tok for b in fed for tok in b['first_tokens'] if tok < TARGET_BASE]
    assert len(generic) == len(set(generic)) == 320 - 32  # generic data never repeats
    # stage 1 is generic only; stage 2 (steps 32..39) is half target (ρ=0.5), as the plan says
    per_step = [sum(tok >= TARGET_BASE for tok in b['first_tokens']) for b in fed]
    assert per_step == [0] * 32 + [4] * 8
    # the flags train.py used to split the loss by source agree with the tokens it fed
    assert all(flag == (tok >= TARGET_BASE) for b in fed for tok, flag in zip(b['first_tokens'], b['is_target']))
    # and they are what schedule.py planned (the plan is checked against the data, not the reverse)
    config = load_config(['config/tiny.py', f'--generic_dir={sources[0]}', f'--target_dir={sources[1]}'])
    plan = schedule.make_plan(config, target_windows=40, generic_windows=400)
    pool = schedule.target_pool(config['data_seed'], 40, plan['U'])
    for b in fed:
        is_target, ids = schedule.step_batch(plan, b['step'])
        planned = [TARGET_BASE + pool[i] if tgt else i for tgt, i in zip(is_target, ids)]
        assert b['first_tokens'] == planned


def test_two_processes_feed_the_same_global_batches(straight_run, sources, tmp_path):
    """2 processes, one micro-step each (S = 4 x 2): the same sequences, and every logged number equal to the last
    bit (each parameter's gradient is (g0 + g1) / 2 either way). With 2 micro-steps per rank the sum order
    differs from 1 process's and so do the last bits: test_numerics.py checks that case against plain torch."""
    out, args = straight_run
    two = str(tmp_path / 'ddp')
    run_train([a for a in args if not a.startswith('--out_dir')] + [f'--out_dir={two}', '--backend=gloo'], nproc=2)
    assert [b['first_tokens'] for b in batches(two)] == [b['first_tokens'] for b in batches(out)]
    assert without_timing(read_log(two)) == without_timing(read_log(out))
    one_final = json.load(open(os.path.join(out, 'summary.json')))['final']
    two_final = json.load(open(os.path.join(two, 'summary.json')))['final']
    assert two_final == one_final


def test_resume_continues_exactly(straight_run, tmp_path):
    """N straight steps == N/2 steps + resume + N/2: same ids, same losses (CPU is deterministic)."""
    out, args = straight_run
    resumed = copy_for_resume(out, 20, str(tmp_path / 'resumed'))
    run_train([a for a in args if not a.startswith('--out_dir')] + [f'--out_dir={resumed}', '--init_from=resume'])
    assert without_timing(read_log(resumed)) == without_timing(read_log(out))


def test_init_from_a_run_directory_takes_its_newest_checkpoint(straight_run, sources):
    """init_from=<a run directory> starts from the weights of its newest checkpoint, as init_from=<its ckpt.pt>
    does (it once failed: a run directory was read as a sharded checkpoint, since both are directories)."""
    import checkpoint
    from sources import open_source
    out, args = straight_run
    meta = open_source('generic', sources[0])['meta']
    starts = [checkpoint.start(load_config([os.path.join(ROOT, 'config', 'tiny.py'), *args, f'--init_from={path}']),
                               meta) for path in (out, os.path.join(out, 'ckpt.pt'))]
    assert [(s.kind, s.path, s.checkpoint['step']) for s in starts] == [('weights', os.path.join(out, 'ckpt.pt'), 40)] * 2
    assert all(starts[0].checkpoint['model'][k].equal(v) for k, v in starts[1].checkpoint['model'].items())


def test_train_and_sample_on_the_demo_corpus(tmp_path):
    """The quick start on real text: prepare/demo.py, a short tiny run, then sample.py prints decoded text."""
    generic, target = str(tmp_path / 'generic'), str(tmp_path / 'target')
    env = dict(os.environ, OMP_NUM_THREADS='1')
    subprocess.run([sys.executable, 'prepare/demo.py', f'--generic_out={generic}', f'--target_out={target}'],
                   cwd=ROOT, check=True, capture_output=True, timeout=120, env=env)
    out = str(tmp_path / 'run')
    run_train([f'--generic_dir={generic}', f'--target_dir={target}', f'--out_dir={out}', '--max_iters=10',
               '--log_batch_ids=False'])
    result = subprocess.run([sys.executable, 'sample.py', f'--out_dir={out}', '--start=def ', '--num_samples=1',
                             '--max_new_tokens=40'], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    text = result.stdout.split('---------------')[0]
    assert text.startswith('def ') and len(text) > 20  # the prompt plus decoded bytes
