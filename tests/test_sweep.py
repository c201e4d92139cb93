"""sweep.py: prefix-shared runs equal from-scratch runs bit for bit on CPU, the fork tree saves what it should, an
interrupted sweep resumes, and results.csv holds what the runs' summaries say."""
import csv
import json
import os
import re

import pytest

from helpers import make_sources, read_log, run_sweep, without_timing

# the `sweeps` fixture (the sweep run with prefix sharing and from scratch) is in conftest.py: test_slurm.py uses it too


def test_forks_are_bit_identical_to_runs_from_scratch(sweeps):
    root, shared_out, _, _ = sweeps
    names = ['rho0.0', 'rho0.5', 'rho0.75', 'reference_rho0.0_D512']
    assert 'forked from' in shared_out
    for name in names:
        shared = without_timing(read_log(root / 'shared' / name))
        scratch = without_timing(read_log(root / 'scratch' / name))
        assert shared == scratch, name  # every logged loss, eval and fed sequence, exactly
        finals = [json.load(open(root / d / name / 'summary.json'))['final'] for d in ('shared', 'scratch')]
        assert finals[0] == finals[1]


def test_the_tree_saves_steps_and_records_them(sweeps):
    root, shared_out, scratch_out, _ = sweeps
    saved = re.search(r'(\d+) steps with prefix sharing instead of (\d+)', shared_out)
    assert int(saved.group(1)) < int(saved.group(2)) == 4 * 40
    rows = {r['run']: r for r in csv.DictReader(open(root / 'shared' / 'results.csv'))}
    assert sum(int(r['steps_computed']) for r in rows.values()) == int(saved.group(1))
    forked = [r for r in rows.values() if r['forked_from']]
    assert forked and all(0 < int(r['fork_step']) < 40 for r in forked)
    # the stage-2 starts: ρ=0 at 36, ρ=0.5 at 32, ρ=0.75 at 24; a fork never comes after the earlier boundary
    starts = {name: int(r['stage2_start']) for name, r in rows.items()}
    for r in forked:
        assert int(r['fork_step']) <= min(starts[r['run']], starts[r['forked_from']])


def test_results_csv_matches_the_summaries(sweeps):
    root, *_ = sweeps
    rows = list(csv.DictReader(open(root / 'shared' / 'results.csv')))
    jsonl = [json.loads(line) for line in open(root / 'shared' / 'results.jsonl')]
    assert [r['run'] for r in rows] == [r['run'] for r in jsonl]
    for row, full in zip(rows, jsonl):
        summary = json.load(open(os.path.join(row['out_dir'], 'summary.json')))
        assert float(row['val_loss_target']) == summary['final']['val_loss_target']
        assert float(row['replay_fraction']) == summary['plan']['rho']
        evals = [[r['step'], r['val_loss_target'], r['val_loss_generic']]
                 for r in read_log(row['out_dir']) if r['kind'] == 'eval']
        assert full['evals'] == evals
    assert {r['reference'] for r in rows} == {'0', '1'}


def test_a_rerun_skips_finished_runs(sweeps):
    root, _, _, sweep_file = sweeps
    out = run_sweep(sweep_file, '--dry_run=True')
    assert '4 already done' in out


def test_paper_midtrain_rho_sweep_shares_its_generic_prefix(tmp_path):
    """The paper's 5-run ρ grid at α=1 (N=1024, γ=1/32, WSD) needs about 1515 steps instead of 5120."""
    sweep_file = tmp_path / 'rho.py'
    sweep_file.write_text("base = ['config/flan_midtrain.py']\n"
                          "grid = {'replay_fraction': [0.0, 0.25, 0.5, 0.75, 0.875]}\n"
                          f"sweep_dir = {str(tmp_path / 'out')!r}\n")
    out = run_sweep(str(sweep_file), '--dry_run=True', '--generic_dir=/nonexistent', '--target_dir=/nonexistent')
    shared, scratch = map(int, re.search(r'(\d+) steps with prefix sharing instead of (\d+)', out).groups())
    assert scratch == 5120
    # stage 2 starts at 992, 981, 960, 896, 768: 1024 + 256 + 128 + 64 + 43 steps (an eval at a boundary can
    # move a fork point by one step)
    assert abs(shared - 1515) <= 5


def test_stage_lists_share_their_common_stages(tmp_path):
    """Three-stage runs that differ only in how stage 3 fine-tunes (its LR restart and optimizer reset) share
    stages 1 and 2: the forks start where their plans part and equal runs from scratch bit for bit."""
    generic, target = make_sources(str(tmp_path / 'data'), target_base=1200, vocab=1300)
    sweep_file = tmp_path / 'stages.py'
    sweep_file.write_text(
        "base = ['config/tiny.py']\n"
        f"overrides = {{'generic_dir': {generic!r}, 'target_dir': {target!r}, 'log_batch_ids': True,\n"
        "             'replay_fraction': None, 'stage2_allocation': None, 'spike_eval_steps': 0}\n"
        "_first = [dict(steps=24, target=0), dict(steps=8, replay_fraction=0.75)]\n"
        "runs = [dict(name='restart', stages=_first + [dict(schedule='restart', learning_rate=1e-3,"
        " reset_optimizer=True)]),\n"
        "        dict(name='restart_lower', stages=_first + [dict(schedule='restart', learning_rate=3e-4)]),\n"
        "        dict(name='continue', stages=_first + [dict()])]\n"
        f"sweep_dir = {str(tmp_path / 'shared')!r}\n")
    shared_out = run_sweep(str(sweep_file), '--jobs=2')
    run_sweep(str(sweep_file), '--share=False', f"--sweep_dir={tmp_path / 'scratch'}", '--jobs=2')
    rows = {r['run']: r for r in csv.DictReader(open(tmp_path / 'shared' / 'results.csv'))}
    # the restart runs share all 32 steps of stages 1 and 2; 'continue' runs ONE WSD schedule over all 40 steps,
    # so its cooldown (from step 36, not 29) makes its LR depart at step 30
    assert {r['run']: int(r['fork_step']) for r in rows.values()} == {'restart': 0, 'restart_lower': 32,
                                                                      'continue': 30}
    assert 'forked from' in shared_out
    for name in rows:
        assert (without_timing(read_log(tmp_path / 'shared' / name))
                == without_timing(read_log(tmp_path / 'scratch' / name))), name
    # results.jsonl carries each run's stages; a stage list's replay_fraction is the generic share of its
    # stages with target data: (8 + 8) x 8 slots holding 32 target sequences
    jsonl = {r['run']: r for r in map(json.loads, open(tmp_path / 'shared' / 'results.jsonl'))}
    assert [s['start'] for s in jsonl['restart']['stage_table']] == [0, 24, 32]
    assert float(rows['restart']['replay_fraction']) == 1 - 32 / 128
