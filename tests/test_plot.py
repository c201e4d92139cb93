"""plot.py on a synthetic sweep: the plotted numbers equal results.csv read independently (CPU, seconds)."""
import csv
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from helpers import BASE_TOKENS, BUDGETS, ROOT, law, reference_rows, run_row, write_run, write_sweep
from analysis import spike_stats, write_report
from efficiency import load_sweep
from plot import PLOT_NAMES

REPLAY_FRACTIONS = (0.0, 0.5, 0.75, 0.875)
ALLOCATIONS = (1.0, 0.5, 0.25)
SEEDS = (1, 2)
MAX_ITERS, GAMMA = 200, 0.1


def evals_with_spike(stage2_start, final_loss, spike_height, seed):
    """Target loss falling to 3.6 at the boundary, a spike of `spike_height` that decays, then a slow fall."""
    steps = sorted(set(range(0, stage2_start, 20)) | {stage2_start} | set(range(stage2_start, stage2_start + 30, 2))
                   | set(range(stage2_start, MAX_ITERS, 20)) | {MAX_ITERS})
    evals = []
    for step in steps:
        after = step - stage2_start
        target = 6.0 - 2.4 * step / stage2_start if after <= 0 else \
            3.6 + spike_height * math.exp(-after / 6) - (3.6 - final_loss) * after / (MAX_ITERS - stage2_start)
        evals.append([step, round(target + 0.001 * seed, 6), round(4.5 - step / 1000, 6)])
    return evals


def synthetic_rows():
    rows = [dict(row, acc_demo=None, acc_norm_demo=None, task_evals={})  # no task in the reference runs
            for row in reference_rows([law(BUDGETS) + 0.003, law(BUDGETS) - 0.003])]
    for alpha in ALLOCATIONS:
        for rho in REPLAY_FRACTIONS:
            stage2_fraction = GAMMA * alpha / (1 - rho)
            stage2_start = round(MAX_ITERS * (1 - stage2_fraction))
            for seed in SEEDS:
                final = 3.0 + 0.4 * (rho - 0.6) ** 2 + 0.05 * alpha + 0.004 * seed * (1 + rho)
                row = run_row(f"a{alpha}_r{rho}_s{seed}", seed, BASE_TOKENS, round(final, 6), 0,
                              replay_fraction=rho, stage2_allocation=alpha)
                row.update(stage2_fraction=round(stage2_fraction, 6), stage2_start=stage2_start, gamma=GAMMA,
                           val_loss_generic=round(4.2 - 0.3 * rho + 0.002 * seed, 6),
                           evals=evals_with_spike(stage2_start, final, 0.3 * (1 - rho) + 0.05, seed))
                acc = round(0.5 + 0.2 * rho - 0.05 * alpha + 0.01 * seed, 6)  # a task: higher with replay
                row.update(acc_demo=acc, acc_norm_demo=round(acc - 0.05, 6), task_evals={'demo': [
                    [0, 0.25, 0.25], [stage2_start, 0.4, 0.38], [MAX_ITERS, acc, round(acc - 0.05, 6)]]})
                rows.append(row)
    return rows


def run_plot(directory, *flags):
    return subprocess.run([sys.executable, os.path.join(ROOT, 'plot.py'), str(directory), *flags], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope='module')
def plotted(tmp_path_factory):
    directory = tmp_path_factory.mktemp('sweep')
    write_sweep(directory, synthetic_rows())
    result = run_plot(directory, '--fit', '--pdf')
    assert result.returncode == 0, result.stderr
    with open(directory / 'plots' / 'plotted.json') as f:
        return directory, json.load(f)


def csv_stats(directory, column):
    """{(α, ρ): (mean, min, max)} over seeds of the non-reference rows, straight from results.csv."""
    values = {}
    with open(directory / 'results.csv', newline='') as f:
        for row in csv.DictReader(f):
            if row['reference'] == '0':
                key = (float(row['stage2_allocation']), float(row['replay_fraction']))
                values.setdefault(key, []).append(float(row[column]))
    return {key: (np.mean(v), min(v), max(v)) for key, v in values.items()}


def series_stats(series):
    return {(s['stage2_allocation'], rho): (mean, low, high) for s in series
            for rho, mean, low, high in zip(s['replay_fraction'], s['mean'], s['min'], s['max'])}


def assert_same_stats(plotted_stats, expected):
    assert set(plotted_stats) == set(expected)
    for key, values in expected.items():
        assert plotted_stats[key] == pytest.approx(values, abs=1e-9), key


def test_all_plots_written(plotted):
    directory, data = plotted
    for name in PLOT_NAMES:
        assert 'skipped' not in data[name], data[name]
        for extension in ('png', 'pdf'):
            assert os.path.getsize(directory / 'plots' / f"{name}.{extension}") > 1000


def test_replay_vs_loss_matches_csv(plotted):
    directory, data = plotted
    series = data['replay_vs_loss']['series']
    expected = csv_stats(directory, 'val_loss_target')
    assert_same_stats(series_stats(series), expected)
    for s in series:
        assert s['x'] == pytest.approx([-math.log(1 - rho) for rho in s['replay_fraction']])
        assert len(s['quadratic']) == 3
    (alpha, rho), (mean, _, _) = min(expected.items(), key=lambda item: item[1][0])
    best = data['replay_vs_loss']['best']
    assert (best['replay_fraction'], best['mean']) == pytest.approx((rho, mean))
    assert best['label'] == f"α={alpha:g}"


def test_heatmap_matches_csv(plotted):
    directory, data = plotted
    (panel,) = data['heatmap']['panels']
    expected = csv_stats(directory, 'val_loss_target')
    assert panel['replay_fraction'] == list(REPLAY_FRACTIONS) and panel['stage2_allocation'] == sorted(ALLOCATIONS)
    for i, rho in enumerate(panel['replay_fraction']):
        for j, alpha in enumerate(panel['stage2_allocation']):
            assert panel['mean'][i][j] == pytest.approx(expected[(alpha, rho)][0])
    (alpha, rho), (mean, _, _) = min(expected.items(), key=lambda item: item[1][0])
    assert panel['best'] == pytest.approx(dict(replay_fraction=rho, stage2_allocation=alpha, mean=mean))


def test_forgetting_matches_csv(plotted):
    directory, data = plotted
    for column in ('val_loss_generic', 'val_loss_target'):
        assert_same_stats(series_stats(data['forgetting'][column]), csv_stats(directory, column))


def test_spike_matches_jsonl(plotted):
    directory, data = plotted
    with open(directory / 'results.jsonl') as f:
        runs = {record['run']: record for record in map(json.loads, f)}
    curves = data['spike']['curves']
    assert [c['replay_fraction'] for c in curves] == list(REPLAY_FRACTIONS)
    for curve in curves:
        records = [runs[name] for name in curve['runs']]
        assert len(records) == len(SEEDS)
        stage2_start = records[0]['stage2_start']
        target = np.array([[e[1] for e in r['evals']] for r in records])
        assert curve['step'] == [e[0] - stage2_start for e in records[0]['evals']]
        assert curve['mean'] == pytest.approx(target.mean(axis=0).tolist())
        assert curve['min'] == pytest.approx(target.min(axis=0).tolist())
        mean_evals = [[e[0], m] for e, m in zip(records[0]['evals'], target.mean(axis=0))]
        assert (curve['spike_height'], curve['recovery_steps']) == pytest.approx(
            spike_stats(mean_evals, stage2_start))
    assert curves[0]['spike_height'] > curves[-1]['spike_height'] > 0  # the synthetic spike shrinks with ρ


def test_efficiency_plot_matches_csv(plotted):
    directory, data = plotted
    losses = {}
    with open(directory / 'results.csv', newline='') as f:
        for row in csv.DictReader(f):
            if row['reference'] == '1':
                losses.setdefault(float(row['target_tokens']), []).append(float(row['val_loss_target']))
    assert data['efficiency']['D'] == sorted(losses)
    assert data['efficiency']['L'] == pytest.approx([np.mean(losses[D]) for D in sorted(losses)])
    assert data['efficiency']['fit']['B'] == pytest.approx(0.3, rel=0.05)
    assert len(data['efficiency']['comparisons']) == 1


def test_accuracy_plots_match_csv_and_jsonl(plotted):
    directory, data = plotted
    for metric in ('acc', 'acc_norm'):
        assert_same_stats(series_stats(data['accuracy'][f'{metric}_demo']), csv_stats(directory, f'{metric}_demo'))
    with open(directory / 'results.jsonl') as f:
        runs = {record['run']: record for record in map(json.loads, f)}
    for column, metric in enumerate(('acc', 'acc_norm'), 1):
        curves = data['task_curves'][f'{metric}_demo']
        assert len(curves) == len(ALLOCATIONS) * len(REPLAY_FRACTIONS)
        for curve in curves:
            values = np.array([[e[column] for e in runs[name]['task_evals']['demo']] for name in curve['runs']])
            assert len(curve['runs']) == len(SEEDS) and curve['mean'] == pytest.approx(values.mean(axis=0).tolist())
            assert curve['step'] == [e[0] for e in runs[curve['runs'][0]]['task_evals']['demo']]


def test_report_compares_accuracy_against_the_seed_spread(tmp_path):
    """Per task, ρ = 0.5 against ρ = 0 as for the loss, higher being better."""
    rows = []
    for rho in (0.0, 0.5):
        for seed in SEEDS:
            acc = 0.5 + 0.2 * rho + 0.01 * seed
            rows.append(run_row(f"r{rho}_s{seed}", seed, BASE_TOKENS, 3.0 - rho, 0, replay_fraction=rho,
                                stage2_allocation=1.0, acc_demo=acc, acc_norm_demo=0.5 + 0.01 * seed))
    write_sweep(tmp_path, rows)
    report = write_report(load_sweep(str(tmp_path)), str(tmp_path))
    assert "acc_demo, no replay  (ρ = 0): 0.5150 ± 0.0050 (min 0.5100, max 0.5200, 2 seeds)" in report
    assert "replay at ρ = 0.5 raises acc_demo by 0.1000: beyond the seed spread (0.0100)" in report
    assert "per seed, ρ = 0.5 minus ρ = 0: seed 1: +0.1000, seed 2: +0.1000 (replay better in 2 of 2)" in report
    assert "replay at ρ = 0.5 lowers acc_norm_demo by 0.0000: within noise" in report


def test_spike_stats_on_a_hand_made_curve():
    evals = [[90, 3.0], [100, 2.5], [102, 2.9], [104, 2.7], [106, 2.6], [108, 2.4], [110, 2.6]]
    height, recovery = spike_stats(evals, 100)
    assert height == pytest.approx(0.4) and recovery == 8   # peak 2.9 - 2.5; back below 2.5 at step 108
    assert spike_stats([[0, 3.0], [10, 2.0], [12, 2.5], [14, 2.2]], 10) == pytest.approx((0.5, None))
    assert spike_stats([[10, 2.0], [12, 1.9], [14, 2.3]], 10) == (0.0, 0)       # no spike; a later rise is not one
    with pytest.raises(ValueError):
        spike_stats([[0, 3.0], [10, 2.0]], 10)


def test_missing_columns_skip_with_one_line(tmp_path):
    rows = [dict(run=f"r{i}", seed=1, val_loss_target=3.0 - 0.1 * i) for i in range(3)]
    write_sweep(tmp_path, rows)
    result = run_plot(tmp_path)
    assert result.returncode == 0 and 'Traceback' not in result.stderr
    skipped = [line for line in result.stdout.splitlines() if line.startswith('skipped')]
    assert len(skipped) == len(PLOT_NAMES)
    assert 'replay_fraction' in skipped[0]


def test_missing_sweep_is_one_line_error(tmp_path):
    result = run_plot(tmp_path / 'nope')
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert 'Traceback' not in result.stderr


@pytest.mark.parametrize('seed_gap, verdict', [(0.001, 'beyond the seed spread'), (0.5, 'within noise')])
def test_report_compares_rho_half_with_no_replay_against_the_seed_spread(tmp_path, seed_gap, verdict):
    """ρ=0.5 is 0.1 lower than ρ=0 on average; it counts only when that beats the spread between seeds."""
    rows = reference_rows([law(BUDGETS) + 0.003, law(BUDGETS) - 0.003])
    for rho, loss in ((0.0, 3.0), (0.5, 2.9), (0.75, 2.95)):
        for seed in SEEDS:
            rows.append(run_row(f"r{rho}_s{seed}", seed, BASE_TOKENS, loss + seed_gap * (seed - 1.5), 0,
                                replay_fraction=rho, stage2_allocation=1.0))
    write_sweep(tmp_path, rows)
    result = run_plot(tmp_path, '--report')
    assert result.returncode == 0, result.stderr
    report = (tmp_path / 'report.txt').read_text()
    assert report in result.stdout
    assert f"lowers the target loss by 0.1000 (3.3%): {verdict}" in report
    assert 'best ρ: 0.5 ' in report
    assert 'efficiency' in report


def test_curves_mark_every_stage_start_and_measure_the_spike_at_resets_and_restarts(tmp_path):
    """A three-stage sweep (no ρ, α): curves.png draws each setting's losses over steps with its stage starts, and
    measures the spike at stage 3 (which restarts the LR and resets the optimizer), not at stage 2 (continues)."""
    table = [dict(start=0, steps=60, lr='restart', reset_optimizer=False),
             dict(start=60, steps=20, lr='continue', reset_optimizer=False),
             dict(start=80, steps=20, lr='restart', reset_optimizer=True)]
    rows = []
    for lr, jump in ((3e-4, 0.2), (1e-3, 0.5)):
        for seed in SEEDS:
            evals = [[s, 4.0 - s / 500 + (jump * math.exp(-(s - 80) / 5) if s > 80 else 0) + 0.001 * seed, 4.5]
                     for s in range(0, 101, 4)]
            rows.append(dict(run_row(f"lr{lr}_s{seed}", seed, BASE_TOKENS, evals[-1][1], 0), stage3_lr=lr,
                             evals=evals, stage_table=table))
    write_sweep(tmp_path, rows)
    result = run_plot(tmp_path)
    assert result.returncode == 0 and 'wrote' in result.stdout and 'curves.png' in result.stdout, result.stderr
    with open(tmp_path / 'plots' / 'plotted.json') as f:
        curves = json.load(f)['curves']['curves']
    assert len(curves) == 2
    for curve in curves:
        assert curve['stage_starts'] == [60, 80]
        runs = [r for r in rows if r['run'] in curve['runs']]
        mean = np.mean([[e[1] for e in r['evals']] for r in runs], axis=0)
        assert curve['target']['mean'] == pytest.approx(mean.tolist())
        steps = [e[0] for e in runs[0]['evals']]
        height, recovery = spike_stats([[s, m] for s, m in zip(steps, mean)], 80)
        assert [s['start'] for s in curve['spikes']] == [80]
        assert (curve['spikes'][0]['spike_height'], curve['spikes'][0]['recovery_steps']) == pytest.approx(
            (height, recovery))
        assert height > 0.05  # the synthetic jump decays within the 4 steps between evals


# ---- issue 21: seeds that measured no spread, any ρ grid, series by protocol, zoom, means named as means ----------

def rho_rows(losses, seeds=SEEDS, **extra):
    """Non-reference α = 1 runs: {ρ: [final target loss per seed]}."""
    return [run_row(f"r{rho}_s{seed}", seed, BASE_TOKENS, loss, 0, replay_fraction=rho, stage2_allocation=1.0,
                    **extra) for rho, per_seed in losses.items() for seed, loss in zip(seeds, per_seed)]


def test_identical_seeds_and_one_seed_give_no_verdict(tmp_path):
    """Seeds that vary nothing (a loaded model with dropout 0) give identical runs: the report says no spread was
    measured instead of calling the effect 'beyond the seed spread (0.0000)'; likewise with a single seed."""
    write_sweep(tmp_path / 'same', rho_rows({0.0: [3.0, 3.0], 0.5: [2.9, 2.9]}))
    report = write_report(load_sweep(str(tmp_path / 'same')), str(tmp_path / 'same'))
    assert "lowers the target loss by 0.1000 (3.3%): seeds gave identical runs: no spread measured" in report
    assert "3.0000 (2 seeds gave identical runs: no spread measured)" in report
    assert 'beyond the seed spread' not in report and 'within noise' not in report
    write_sweep(tmp_path / 'one', rho_rows({0.0: [3.0], 0.5: [2.9]}, seeds=(1,)))
    report = write_report(load_sweep(str(tmp_path / 'one')), str(tmp_path / 'one'))
    assert "lowers the target loss by 0.1000 (3.3%): one seed: no spread measured" in report
    assert "3.0000 (1 seed: no spread measured)" in report
    assert 'beyond the seed spread' not in report and 'within noise' not in report


def test_report_compares_every_rho_with_no_replay_whatever_the_grid(tmp_path):
    """No ρ = 0.5 in the sweep: every ρ is compared with ρ = 0 and the best is named."""
    write_sweep(tmp_path, rho_rows({0.0: [3.0, 3.002], 0.25: [2.95, 2.952], 0.875: [2.8, 2.802]}))
    result = run_plot(tmp_path, '--report')
    assert result.returncode == 0, result.stderr
    report = (tmp_path / 'report.txt').read_text()
    for rho, gain in (('0.25', '0.0500'), ('0.875', '0.2000')):
        assert f"replay at ρ = {rho} lowers the target loss by {gain}" in report
        assert f"per seed, ρ = {rho} minus ρ = 0: seed 1: -{gain}, seed 2: -{gain} (replay better in 2 of 2)" in report
    assert "best ρ: 0.875 (target loss 2.8010)" in report


def test_runs_whose_n_grows_with_rho_form_one_series(tmp_path):
    """max_iters=0 derives N from ρ (and so γ): runs equal but for ρ and what it derives are one protocol, one line;
    a realised ρ that rounding moved places and labels its point."""
    rows = []
    for rho in (0.0, 0.5, 0.75):
        steps = 100 / (1 - rho)
        for row in rho_rows({rho: [3.0 - rho, 3.001 - rho]}):
            rows.append(dict(row, max_iters=steps, gamma=0.1 * (1 - rho), stage2_start=0.0,
                             rho_realised=0.7 if rho == 0.75 else rho))
    write_sweep(tmp_path, rows)
    result = run_plot(tmp_path, '--report')
    assert result.returncode == 0, result.stderr
    data = json.loads((tmp_path / 'plots' / 'plotted.json').read_text())
    (series,) = data['replay_vs_loss']['series']
    assert series['replay_fraction'] == [0.0, 0.5, 0.75] and series['rho_realised'] == [0.0, 0.5, 0.7]
    assert series['x'] == pytest.approx([0.0, math.log(2), -math.log(0.3)])
    assert data['replay_vs_loss']['best']['rho_realised'] == 0.7
    assert "replay at ρ = 0.7 (asked 0.75) lowers the target loss by 0.7500" in (tmp_path / 'report.txt').read_text()


def test_curves_zoom_on_the_last_stage_and_name_a_seed_mean_as_such(tmp_path):
    """One setting, two seeds: the curve is 'mean of 2 seeds' (not the first seed's run name), and a second row
    zooms on the last stage."""
    table = [dict(start=0, steps=180, lr='restart', reset_optimizer=False),
             dict(start=180, steps=20, lr='continue', reset_optimizer=False)]
    rows = [dict(run_row(f"seed{seed}", seed, BASE_TOKENS, 3.0, 0), stage_table=table,
                 evals=[[s, 4.0 - s / 100 + 0.01 * seed, 4.5] for s in range(0, 201, 10)]) for seed in SEEDS]
    write_sweep(tmp_path, rows)
    assert run_plot(tmp_path).returncode == 0
    data = json.loads((tmp_path / 'plots' / 'plotted.json').read_text())['curves']
    assert [c['label'] for c in data['curves']] == ['mean of 2 seeds']
    assert data['last_stage_zoom'] == dict(start=178.0, end=200)


def test_per_seed_pairs_runs_by_data_seed_too():
    """A sweep over a loaded model varies data_seed alone (seed fixed): each data_seed is its own pair, named as
    such, not one 'seed 1337' whose runs overwrite each other."""
    import analysis
    rows = [dict(seed=1337, data_seed=d, replay_fraction=rho, val_loss_target=loss)
            for d, rho, loss in ((1, 0.0, 2.0), (1, 0.5, 1.5), (2, 0.0, 2.2), (2, 0.5, 2.4))]
    line = analysis.per_seed_line(rows, 0.0, 0.5)
    assert line == "per seed, ρ = 0.5 minus ρ = 0: data_seed 1: -0.5000, data_seed 2: +0.2000 (replay better in 1 of 2)"
    demo = [dict(r, seed=r['data_seed'], data_seed=1337) for r in rows]  # the demo's shape: seed varies
    assert analysis.per_seed_line(demo, 0.0, 0.5).startswith("per seed, ρ = 0.5 minus ρ = 0: seed 1: -0.5000, seed 2:")


# ---- generation tasks: exact_match per filter, as acc ------------------------------------------------------------

def generation_scores(rho, seed, step):
    """A run's task scores at a step: GSM8K's two filters (strict-match higher with replay, flexible-extract not),
    a one-filter generation task and a multiple-choice one."""
    grow = step / 100
    return dict(gsm8k={'strict-match': round(0.3 + (0.2 * rho + 0.01 * seed) * grow, 6),
                       'flexible-extract': round(0.4 + 0.01 * seed * grow, 6)},
                short_answer={'none': round(0.1 + 0.1 * rho * grow + 0.02 * seed, 6)},
                choices=dict(acc=round(0.5 + 0.1 * rho * grow + 0.01 * seed, 6), acc_norm=0.5))


@pytest.fixture(scope='module')
def generation_sweep(tmp_path_factory):
    """Runs at ρ = 0 and 0.5, two seeds, as train.py leaves them (log.jsonl's task records: exact_match by filter
    for generation tasks), gathered as sweep.py gathers them, then plot.py --report."""
    import analysis
    directory = tmp_path_factory.mktemp('generation')
    runs = []
    for rho in (0.0, 0.5):
        for seed in SEEDS:
            records = []
            for step in (0, 50, 100):
                records.append(dict(kind='eval', step=step, val_loss_target=4.0 - (1 + rho) * step / 100 + 0.001 * seed,
                                    val_loss_generic=4.0))
                for task, scores in generation_scores(rho, seed, step).items():
                    numbers = scores if task == 'choices' else dict(exact_match=scores)
                    records.append(dict(kind='task', task=task, step=step, **numbers, n=8, eval_s=0.1))
            final = dict(val_loss_target=records[-4]['val_loss_target'], val_loss_generic=4.0,
                         tasks={r['task']: {k: r[k] for k in ('acc', 'acc_norm', 'exact_match', 'n') if k in r}
                                for r in records[-3:]})
            runs.append(write_run(directory / 'runs' / f"r{rho}_s{seed}", f"r{rho}_s{seed}", seed, rho, records,
                                  final))
    assert analysis.gather(runs, str(directory)) == 4
    result = run_plot(directory, '--report')
    assert result.returncode == 0, result.stderr
    with open(directory / 'plots' / 'plotted.json') as f:
        return directory, json.load(f)


GENERATION_COLUMNS = ('exact_match_gsm8k_flexible-extract', 'exact_match_gsm8k_strict-match',
                      'exact_match_short_answer_none')


def test_generation_tasks_are_plotted_as_accuracy(generation_sweep):
    """accuracy.png and task_curves.png draw exact_match per filter as they draw acc: seed means of results.csv
    against ρ, and of results.jsonl's task evals (exact_match by filter) over the steps."""
    directory, data = generation_sweep
    assert list(data['accuracy']) == ['acc_choices', 'acc_norm_choices', *GENERATION_COLUMNS]
    assert list(data['task_curves']) == list(data['accuracy'])
    for column in data['accuracy']:
        assert_same_stats(series_stats(data['accuracy'][column]), csv_stats(directory, column))
    rows = {row['run']: row for row in load_sweep(str(directory))}
    assert rows['r0.5_s1']['task_evals']['gsm8k'][-1] == [100, generation_scores(0.5, 1, 100)['gsm8k']]
    for column in GENERATION_COLUMNS:
        task, _, name = column[len('exact_match_'):].rpartition('_')
        curves = data['task_curves'][column]
        assert len(curves) == 2  # ρ = 0 and 0.5, each the mean of two seeds
        for curve in curves:
            assert len(curve['runs']) == len(SEEDS) and curve['step'] == [0, 50, 100]
            values = [[e[1][name] for e in rows[run]['task_evals'][task]] for run in curve['runs']]
            assert curve['mean'] == pytest.approx(np.mean(values, axis=0).tolist())
            assert curve['min'] == pytest.approx(np.min(values, axis=0).tolist())


def test_report_compares_exact_match_per_filter_against_the_seed_spread(generation_sweep):
    """Per generation task and filter, ρ = 0.5 against ρ = 0 as for acc: mean ± seed spread, the verdict, the paired
    per-seed line, higher being better."""
    directory, _ = generation_sweep
    lines = (directory / 'report.txt').read_text().splitlines()
    column = 'exact_match_gsm8k_strict-match'
    assert f"{column}, no replay  (ρ = 0): 0.3150 ± 0.0050 (min 0.3100, max 0.3200, 2 seeds)" in lines
    assert f"{column}, replay     (ρ = 0.5): 0.4150 ± 0.0050 (min 0.4100, max 0.4200, 2 seeds)" in lines
    verdict = lines.index(f"replay at ρ = 0.5 raises {column} by 0.1000: beyond the seed spread (0.0100)")
    assert lines[verdict + 1] == ("per seed, ρ = 0.5 minus ρ = 0: seed 1: +0.1000, seed 2: +0.1000 "
                                  "(replay better in 2 of 2)")
    assert f"{column} by ρ: ρ=0: 0.3150, ρ=0.5: 0.4150" in lines
    assert any(line.startswith("replay at ρ = 0.5 lowers exact_match_gsm8k_flexible-extract by 0.0000: within noise")
               for line in lines)
    assert "replay at ρ = 0.5 raises exact_match_short_answer_none by 0.0500: beyond the seed spread (0.0200)" in lines
    assert "replay at ρ = 0.5 raises acc_choices by 0.0500: beyond the seed spread (0.0100)" in lines


@pytest.mark.parametrize('file, text', [('summary.json', b'{not json'), ('summary.json', b'[1]'),
                                        ('summary.json', b'{"config": {}}'), ('summary.json', b'\xff\xfe'),
                                        ('log.jsonl', b'{"kind": "eval"}\n'), ('started.json', b'{"fork_step": 3}')])
def test_gather_names_a_run_whose_files_are_broken(tmp_path, file, text):
    """sweep.py gathers every finished run: a summary.json or log.jsonl that is not what train.py writes is one
    error naming the run and what to do, before results.csv is touched."""
    import analysis
    from configurator import UserError
    records = [dict(kind='eval', step=step, val_loss_target=3.0, val_loss_generic=3.0) for step in (0, 100)]
    runs = [write_run(tmp_path / 'runs' / name, name, seed, 0.5, records, dict(val_loss_target=3.0,
                                                                                  val_loss_generic=3.0))
            for name, seed in (('a', 1), ('b', 2))]
    assert analysis.gather(runs, str(tmp_path)) == 2
    before = (tmp_path / 'results.csv').read_bytes()
    (tmp_path / 'runs' / 'b' / file).write_bytes(text)
    with pytest.raises(UserError, match=rf"^{tmp_path / 'runs' / 'b'}: its summary.json, log.jsonl or started.json "
                                        r"is not what train.py and sweep.py write \(.*\): remove its summary.json "
                                        r"and start the sweep again"):
        analysis.gather(runs, str(tmp_path))
    assert (tmp_path / 'results.csv').read_bytes() == before


# ---- failed runs, the generic loss's verdict, unmeasured spreads, output paths ------------------------------------

def test_a_failed_run_is_named_and_its_one_seed_measures_no_spread(tmp_path):
    """Two seeds at ρ = .5, one diverged (NaN) and one at ρ = .75 with no final loss (empty): the report names them
    per ρ and in one line, gives no verdict for the ρ left with one seed, and says what the best ρ is over."""
    rows = rho_rows({0.0: [3.47, 3.48], 0.5: [3.455, float('nan')], 0.75: [3.5, 3.51, None]}, seeds=(1, 2, 3))
    write_sweep(tmp_path, rows)
    result = run_plot(tmp_path, '--report')
    assert result.returncode == 0, result.stderr
    lines = (tmp_path / 'report.txt').read_text().splitlines()
    assert ("target loss, replay     (ρ = 0.5): 3.4550 (1 seed: no spread measured); no final value from r0.5_s2 "
            "(failed, diverged or unfinished)") in lines
    assert ("replay at ρ = 0.5 lowers the target loss by 0.0200 (0.6%): no spread measured at ρ = 0.5 (1 seed), so "
            "no verdict") in lines
    assert ("target loss, replay     (ρ = 0.75): 3.5050 ± 0.0050 (min 3.5000, max 3.5100, 2 seeds); no final value "
            "from r0.75_s3 (failed, diverged or unfinished)") in lines
    assert ("best ρ: 0.5 (target loss 3.4550; over 1 of its 2 runs, no final loss from r0.5_s2; the next best, ρ = 0, "
            "is 0.0200 behind: no spread measured)") in lines  # a lowest mean over one seed is not a best ρ
    assert "runs with no final val_loss_target (failed, diverged or unfinished; in no mean): r0.5_s2, r0.75_s3" in lines
    assert 'beyond the seed spread' not in '\n'.join(lines[:4])
    (series,) = json.loads((tmp_path / 'plots' / 'plotted.json').read_text())['replay_vs_loss']['series']
    assert series['n'] == [2, 1, 2] and series['missing'] == [[], ['r0.5_s2'], ['r0.75_s3']]


def test_the_generic_loss_is_judged_against_its_seed_spread(tmp_path):
    """'reduces forgetting' only beyond the generic loss's seed spread; within it, or with no spread, no verdict; a
    difference of zero reads as no change."""
    generic = {0.0: [4.0, 4.0064], 0.25: [4.0, 4.0064], 0.5: [3.999, 4.0054], 0.75: [3.8, 3.801], 0.875: [4.3, 4.301]}
    rows = [dict(row, val_loss_generic=generic[row['replay_fraction']][row['seed'] - 1])
            for row in rho_rows({rho: [3.0 - 0.1 * rho, 3.001 - 0.1 * rho] for rho in generic})]
    write_sweep(tmp_path, rows)
    lines = [line for line in write_report(load_sweep(str(tmp_path)), str(tmp_path)).splitlines()
             if line.startswith('generic loss')]
    assert lines == [
        "generic loss: 4.0032 at ρ = 0, 4.0032 at ρ = 0.25 (+0.0000: no change)",
        "generic loss: 4.0032 at ρ = 0, 4.0022 at ρ = 0.5 (-0.0010: within noise: the difference is smaller than the "
        "seed spread)",
        "generic loss: 4.0032 at ρ = 0, 3.8005 at ρ = 0.75 (-0.2027: replay reduces forgetting of the generic domain, "
        "beyond the seed spread (0.0064))",
        "generic loss: 4.0032 at ρ = 0, 4.3005 at ρ = 0.875 (+0.2973: replay raises the generic loss, beyond the seed "
        "spread (0.0064))"]
    write_sweep(tmp_path, [dict(row, val_loss_generic=4.0 - 0.01 * row['replay_fraction'] - 0.001 * row['seed'])
                           for row in rho_rows({0.0: [3.0], 0.5: [2.9]}, seeds=(1,))])
    assert ("generic loss: 3.9990 at ρ = 0, 3.9940 at ρ = 0.5 (-0.0050: one seed: no spread measured, so no verdict)"
            in write_report(load_sweep(str(tmp_path)), str(tmp_path)))


def test_heatmap_shows_no_spread_where_none_was_measured(tmp_path):
    """A cell of one seed, or of seeds with identical runs, has no ± (plotted.json's spread: None), not ±0."""
    rows = rho_rows({0.0: [3.0, 3.01], 0.5: [2.9]}) + [dict(row, stage2_allocation=0.5) for row in
                                                          rho_rows({0.0: [3.1, 3.1], 0.5: [2.95]})]
    for row in rows:
        row['run'] += f"_a{row['stage2_allocation']}"
    write_sweep(tmp_path, rows)
    assert run_plot(tmp_path).returncode == 0
    (panel,) = json.loads((tmp_path / 'plots' / 'plotted.json').read_text())['heatmap']['panels']
    assert panel['stage2_allocation'] == [0.5, 1.0] and panel['replay_fraction'] == [0.0, 0.5]
    assert panel['spread'][0][1] == pytest.approx(0.005)
    assert panel['spread'][0][0] is None and panel['spread'][1] == [None, None]


@pytest.mark.parametrize('path, kind', [('plots', 'directory'), ('report.txt', 'file'),
                                        ('plots/heatmap.png', 'file')])
def test_an_output_path_of_the_wrong_kind_is_refused_before_anything_is_written(tmp_path, path, kind):
    write_sweep(tmp_path, rho_rows({0.0: [3.0, 3.01], 0.5: [2.9, 2.91]}))
    os.makedirs(tmp_path / 'plots', exist_ok=True)
    (tmp_path / 'plots' / 'replay_vs_loss.png').write_bytes(b'an earlier plot')
    if kind == 'directory':
        shutil.rmtree(tmp_path / 'plots')
        (tmp_path / path).write_text('a file')
    else:
        os.makedirs(tmp_path / path)
    result = run_plot(tmp_path, '--report')
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith(f"error: {tmp_path / path} exists and is not a {kind}: move it away")
    assert not os.path.exists(tmp_path / 'plots' / 'plotted.json') and os.path.isdir(tmp_path / path) != (
        kind == 'directory')
    if kind == 'file':
        assert (tmp_path / 'plots' / 'replay_vs_loss.png').read_bytes() == b'an earlier plot'


def test_a_sweep_without_a_report_fails_before_any_plot_and_removes_a_stale_report(tmp_path):
    """--report on a sweep with no ρ = 0 run: one error before any plot is written; a report.txt of an earlier
    results.csv would pass for this one's, so it is removed, and the error says so."""
    write_sweep(tmp_path, rho_rows({0.5: [2.9, 2.91]}))
    (tmp_path / 'report.txt').write_text('an earlier report\n')
    result = run_plot(tmp_path, '--report')
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr == (f"error: the sweep needs runs at ρ = 0 and at some ρ > 0 of one protocol for a report "
                             f"(removed {tmp_path / 'report.txt'}, written from an earlier results.csv)\n")
    assert not os.path.exists(tmp_path / 'report.txt') and not os.path.exists(tmp_path / 'plots')
    result = run_plot(tmp_path, '--report')
    assert result.returncode == 2 and result.stderr == (
        "error: the sweep needs runs at ρ = 0 and at some ρ > 0 of one protocol for a report\n")


def test_cut_duplicated_or_unmatched_results_rows_are_refused(tmp_path):
    """A row cut short (its last loss cut to '3.7'), a run twice (one more seed) and a run that results.jsonl lacks
    (curves from the other seeds alone) were read silently: each is one line naming the file and the line."""
    rows = rho_rows({0.0: [3.47, 3.48], 0.5: [3.45, 3.46]})
    for case, edit, expected in [
            ('cut', lambda text: text.rstrip('\n').rsplit(',', 3)[0] + '\n', "line 5, run r0.5_s2: 20 cells, the "
                                                                                "header has 23"),
            ('twice', lambda text: text + text.splitlines()[2] + '\n', "line 6, run r0.0_s2: the run is on line 3"),
            ('unmatched', None, "results.jsonl is not a results file (no record of run r0.5_s2, which results.csv "
                                "has)")]:
        write_sweep(tmp_path / case, rows)
        if edit:
            (tmp_path / case / 'results.csv').write_text(edit((tmp_path / case / 'results.csv').read_text()))
        else:
            jsonl = tmp_path / case / 'results.jsonl'
            jsonl.write_text(''.join(jsonl.read_text().splitlines(keepends=True)[:3]))
        result = run_plot(tmp_path / case, '--report')
        assert result.returncode == 2 and expected in result.stderr, (case, result.stderr)
        assert len(result.stderr.splitlines()) == 1 and not (tmp_path / case / 'report.txt').exists()


def test_the_report_says_when_reference_runs_replay_and_when_c_is_at_its_bound(tmp_path):
    """Reference runs that replay make D_eff count that recipe's data; a fit that pinned C at 0 says so in the
    report as efficiency.py does (the report dropped it)."""
    rows = [dict(row, rho_realised=0.5) for row in reference_rows([[4.0, 3.9, 3.8, 3.7, 3.6]])]  # C wants < 0
    rows += rho_rows({0.0: [3.9, 3.91], 0.5: [3.86, 3.87]})
    write_sweep(tmp_path, rows)
    fit_line = next(line for line in run_plot(tmp_path, '--report') and (tmp_path / 'report.txt').read_text()
                    .splitlines() if line.startswith('efficiency fit'))
    assert fit_line.endswith("; C at its bound 0: the unconstrained fit wanted C < 0; reference runs at ρ = 0.5)"), \
        fit_line
    assert "reference runs at ρ = 0.5" in subprocess.run([sys.executable, os.path.join(ROOT, 'efficiency.py'),
                                                          str(tmp_path)], capture_output=True, text=True).stdout
