"""sweep.py: prefix-shared runs equal from-scratch runs bit for bit on CPU, the fork tree saves what it should, an
interrupted sweep resumes, and results.csv holds what the runs' summaries say."""
import csv
import json
import math
import os
import re
import subprocess
import sys

import pytest

from helpers import ROOT, make_sources, read_log, run_sweep, without_timing

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


# ---- issue 21: a grown sweep records what it ran; the realised ρ; seeds that vary something; progress -----------

def started_at(out_dir):
    """The step train.py says it started from (its stdout.log's 'resuming at step k'; 0 from scratch)."""
    found = re.search(r'resuming at step (\d+)', open(os.path.join(out_dir, 'stdout.log')).read())
    return int(found.group(1)) if found else 0


def test_a_sweep_grown_after_its_checkpoints_were_removed_records_the_steps_it_ran(tmp_path):
    """A finished ρ sweep loses its kept checkpoints, then gains a run. The dry run promises no fork from the files
    that are gone, results.csv records every run as it really started (steps_computed = the steps train.py ran),
    and the report's compute total is their sum, as the dry run says. ρ = .25 rounds to .2 with tiny.py's S = 8:
    results.csv, the console, plotted.json and the report show the realised ρ beside the one asked."""
    generic, target = make_sources(str(tmp_path / 'data'), target_base=1200, vocab=1300)
    sweep_dir = tmp_path / 'grown'

    def sweep_file(rhos):
        path = tmp_path / f"sweep_{len(rhos)}.py"
        path.write_text("base = ['config/tiny.py']\n"
                        f"overrides = {{'generic_dir': {generic!r}, 'target_dir': {target!r}}}\n"
                        f"runs = [dict(replay_fraction=r) for r in {rhos!r}]\n"
                        f"sweep_dir = {str(sweep_dir)!r}\n")
        return str(path)

    first = run_sweep(sweep_file([0.0, 0.25]), '--jobs=2')
    assert 'rho0.25: fork of rho0.0' in first and 'done rho0.25, ρ = 0.2 (asked 0.25):' in first
    assert re.search(r'sweep: 2/2 runs ended, \d+/\d+ steps \(100%\), \S+ elapsed, ETA 0s', first), first
    for path in sweep_dir.glob('*/ckpt_*.pt'):
        path.unlink()
    grown = sweep_file([0.0, 0.25, 0.5])
    dry = run_sweep(grown, '--dry_run=True')
    assert '  rho0.5: from scratch, 40 steps' in dry, dry
    run_sweep(grown, '--jobs=2')
    rows = {r['run']: r for r in csv.DictReader(open(sweep_dir / 'results.csv'))}
    for name, row in rows.items():
        assert int(row['steps_computed']) == 40 - started_at(sweep_dir / name), name
        assert int(row['fork_step']) == started_at(sweep_dir / name)
    assert rows['rho0.5']['forked_from'] == '' and rows['rho0.25']['forked_from'] == 'rho0.0'
    assert (float(rows['rho0.25']['replay_fraction']), float(rows['rho0.25']['rho_realised'])) == pytest.approx(
        (0.25, 0.2))
    total = sum(int(r['steps_computed']) for r in rows.values())
    again = run_sweep(grown, '--dry_run=True')
    assert f"3 runs, {total} steps with prefix sharing instead of 120" in again
    result = subprocess.run([sys.executable, 'plot.py', str(sweep_dir), '--report'], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = (sweep_dir / 'report.txt').read_text()
    assert f"compute: {total} training steps with prefix sharing instead of 120" in report
    assert "target loss, replay     (ρ = 0.2 (asked 0.25)): " in report
    assert "replay at ρ = 0.2 (asked 0.25) " in report and ': one seed: no spread measured' in report
    series = json.load(open(sweep_dir / 'plots' / 'plotted.json'))['replay_vs_loss']['series']
    assert [s['replay_fraction'] for s in series] == [[0.0, 0.25, 0.5]]
    assert series[0]['rho_realised'] == pytest.approx([0.0, 0.2, 0.5])
    assert series[0]['x'][1] == pytest.approx(-math.log(0.8))


def test_a_seed_sets_the_data_order_of_a_loaded_model_without_dropout(tmp_path):
    """`seed` draws init and dropout: for a run that loads its weights with dropout 0 it would change nothing, so
    the sweep sets data_seed from it (and says so); runs from scratch keep their data order."""
    import sweep
    spec = dict(sweep.SWEEP_FILE_KEYS, base=['config/tiny.py'], grid={'seed': [1, 2]}, sweep_dir=str(tmp_path))
    loaded = sweep.expand(dict(spec, overrides={'init_from': str(tmp_path / 'model')}), {})
    assert [(r['config']['seed'], r['config']['data_seed']) for r in loaded] == [(1, 1), (2, 2)]
    assert 'seed sets seed and data_seed' in sweep.seeds_note(loaded)
    scratch = sweep.expand(spec, {})
    assert [(r['config']['seed'], r['config']['data_seed']) for r in scratch] == [(1, 1337), (2, 1337)]
    assert sweep.seeds_note(scratch) == "seeds: seed sets seed (model init and dropout)"
    with_dropout = sweep.expand(dict(spec, overrides={'init_from': str(tmp_path / 'model'), 'dropout': 0.1}), {})
    assert [r['config']['data_seed'] for r in with_dropout] == [1337, 1337]
    chosen = sweep.expand(dict(spec, overrides={'init_from': str(tmp_path / 'model'), 'data_seed': 7}), {})
    assert [r['config']['data_seed'] for r in chosen] == [7, 7]


def test_status_counts_the_steps_of_a_run_with_tasks(tmp_path):
    """A run with tasks logs its final task evals after its last eval: it has taken N steps, not N + 1."""
    import layout
    records = [dict(kind='train', step=31), dict(kind='eval', step=32), dict(kind='task', task='t', step=32)]
    (tmp_path / 'log.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in records))
    assert layout.last_step(str(tmp_path)) == 32
    (tmp_path / 'log.jsonl').write_text(json.dumps(dict(kind='train', step=9)) + '\n')
    assert layout.last_step(str(tmp_path)) == 10


def test_status_keeps_results_of_runs_whose_directories_are_gone(sweeps, tmp_path):
    """--status regathers results.csv from the run directories; where a run of the sweep is no longer finished (its
    directory deleted), its row may be all that is left of it: the file is kept as it is, and the line says so."""
    import shutil
    root, _, _, sweep_file = sweeps
    copy = tmp_path / 'shared'
    shutil.copytree(root / 'shared', copy)
    before = (copy / 'results.csv').read_bytes()
    gone = sorted(p.name for p in copy.iterdir() if (p / 'summary.json').is_file())[0]
    shutil.rmtree(copy / gone)
    out = run_sweep(sweep_file, f'--sweep_dir={copy}', '--status=True')
    assert f"results.csv kept as it is: it holds 1 run(s) of this sweep that are no longer finished ({gone}:" in out
    assert (copy / 'results.csv').read_bytes() == before
    (copy / 'results.csv').unlink()  # as the line says: then only the finished runs are gathered
    assert 'gathered 3 finished runs' in run_sweep(sweep_file, f'--sweep_dir={copy}', '--status=True')


def test_status_calls_a_stopped_local_run_unfinished(sweeps, tmp_path):
    """A local run that logged steps but did not finish has no job: it is 'unfinished', not 'not submitted'."""
    import shutil
    root, _, _, sweep_file = sweeps
    copy = tmp_path / 'shared'
    shutil.copytree(root / 'shared', copy)
    stopped = sorted(p.name for p in copy.iterdir() if (p / 'summary.json').is_file())[0]
    for name in os.listdir(copy / stopped):
        if name not in ('log.jsonl', 'config.py'):
            os.remove(copy / stopped / name)
    (copy / 'results.csv').unlink()
    line = next(l for l in run_sweep(sweep_file, f'--sweep_dir={copy}', '--status=True').splitlines()
                if l.strip().startswith(stopped + ' '))
    assert line.split()[1] == 'unfinished', line


def test_finished_runs_are_reused_only_as_the_sweep_now_asks(sweeps, tmp_path):
    """A changed setting reused every finished run silently (results under the new settings' name); stop_after
    made runs end unfinished (a traceback); a torn log.jsonl was found only after the other runs had trained. Each
    is one line before anything runs."""
    import shutil
    root, _, _, sweep_file = sweeps
    copy = tmp_path / 'shared'
    shutil.copytree(root / 'shared', copy)
    (copy / 'results.csv').unlink()
    before = sorted(str(p) for p in copy.rglob('*'))
    changed = run_sweep(sweep_file, f'--sweep_dir={copy}', '--learning_rate=0.5', expect_ok=False)
    assert changed.returncode == 2 and "finished with other settings than this sweep gives it now (learning_rate " \
        in changed.stderr and len(changed.stderr.splitlines()) == 1, changed.stderr
    stopped = run_sweep(sweep_file, f'--sweep_dir={copy}', '--stop_after=3', expect_ok=False)
    assert stopped.returncode == 2 and "sets stop_after=3: a sweep runs every run to its end" in stopped.stderr
    victim = next(p for p in sorted(copy.iterdir()) if (p / 'summary.json').is_file())
    with open(victim / 'log.jsonl', 'a') as f:
        f.write('{"kind": "eval", "st')
    torn = run_sweep(sweep_file, f'--sweep_dir={copy}', '--status=True', expect_ok=False)
    assert torn.returncode == 2 and f"{victim}: its summary.json, log.jsonl" in torn.stderr and "log.jsonl line " \
        in torn.stderr, torn.stderr
    assert sorted(str(p) for p in copy.rglob('*')) == before


def test_killing_a_sweep_stops_its_runs(tmp_path):
    """`kill` (SIGTERM) of a local sweep stops the train.py runs it started (they outlived it before, and a rerun
    raced them); the sweep exits as Ctrl-C does (130). Started with SIGINT ignored, as a sweep started in the
    background from a script is (and under pytest-xdist): passing SIGINT on once left the runs going there."""
    import signal
    import time
    generic, target = make_sources(str(tmp_path / 'data'), target_base=1200, vocab=1300)
    sweep_file = tmp_path / 'long.py'
    sweep_file.write_text(f"base = ['config/tiny.py']\noverrides = {{'generic_dir': {generic!r}, 'target_dir': "
                          f"{target!r}, 'max_iters': 100000, 'eval_interval': 0}}\n"
                          f"grid = {{'seed': [1, 2]}}\nsweep_dir = {str(tmp_path / 'out')!r}\n")
    process = subprocess.Popen([sys.executable, 'sweep.py', str(sweep_file), '--jobs=2', '--share=False'], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, OMP_NUM_THREADS='1'),
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))  # as `sweep.py &`
    logs = [tmp_path / 'out' / name / 'log.jsonl' for name in ('seed1', 'seed2')]
    deadline = time.time() + 120
    while not all(log.is_file() and log.stat().st_size for log in logs) and time.time() < deadline:
        time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130 and 'interrupted: the runs were stopped' in stderr, stderr[-2000:]
    configs = [str(tmp_path / 'out' / name / 'config.py') for name in ('seed1', 'seed2')]

    def command_line(pid):
        try:
            with open(f'/proc/{pid}/cmdline', 'rb') as f:
                return f.read().decode(errors='replace')
        except OSError:  # it ended meanwhile
            return ''
    assert not [pid for pid in os.listdir('/proc') if pid.isdigit() and any(c in command_line(pid) for c in configs)]
    sizes = [log.stat().st_size for log in logs]
    time.sleep(1)
    assert [log.stat().st_size for log in logs] == sizes  # nothing writes to them any more
