"""The constrained power-law fit, effective data, the multiplier, and `python efficiency.py SWEEP_DIR` (CPU, numpy)."""
import csv
import math
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from analysis import write_report
from efficiency import effective_data, efficiency, fit_power_law, load_sweep
from helpers import BASE_TOKENS, BUDGETS, ROOT, law, reference_rows, run_row, write_sweep


def test_noise_free_fit_recovers_parameters():
    fit = fit_power_law(BUDGETS, law(BUDGETS))
    for key, true in (('A', 2.0), ('B', 0.3), ('C', 1.5)):
        assert fit[key] == pytest.approx(true, rel=0.05)
    assert max(abs(r) for r in fit['residuals']) < 1e-6
    assert fit['loss_range'] == pytest.approx((law(16), law(1)))
    # the budget's unit must not matter: D in tokens rescales A only
    fit_tokens = fit_power_law(BUDGETS * BASE_TOKENS, law(BUDGETS))
    assert (fit_tokens['B'], fit_tokens['C']) == pytest.approx((0.3, 1.5), rel=0.05)


def test_noisy_fit_stays_close():
    # 0.5% multiplicative noise: A, B, C trade off against each other (A ranges ~0.7-6 over seeds), so the test holds
    # what efficiency depends on: the curve within 1% over the fitted range, D_eff within 10%, B within 30%
    noisy = law(BUDGETS) * (1 + 0.005 * np.random.default_rng(0).standard_normal(len(BUDGETS)))
    fit = fit_power_law(BUDGETS, noisy)
    grid = np.geomspace(1, 16, 50)
    np.testing.assert_allclose(fit['A'] * grid ** -fit['B'] + fit['C'], law(grid), rtol=0.01)
    assert effective_data(fit, law(4.0)) == pytest.approx(4.0, rel=0.10)
    assert fit['B'] == pytest.approx(0.3, rel=0.30)
    assert 0 <= fit['C'] < noisy.min()


@pytest.mark.parametrize('losses', [
    np.full(5, 3.0),                                                                  # exactly flat
    3.0 * (1 + 0.002 * np.random.default_rng(0).standard_normal(5)),                 # flat plus noise
    3.0 * (1 + 0.002 * np.random.default_rng(3).standard_normal(5)),
    law(BUDGETS)[::-1],                                                               # increasing with D
])
def test_degenerate_data_is_refused(losses):
    with pytest.raises(ValueError):
        fit_power_law(BUDGETS, losses)


def test_too_few_budgets_refused():
    with pytest.raises(ValueError, match='3 distinct'):
        fit_power_law([1, 1, 2, 2], [3.0, 3.0, 2.5, 2.5])


def test_effective_data_inverts_the_fit_and_refuses_outside():
    fit = fit_power_law(BUDGETS, law(BUDGETS))
    for D in (1.0, 1.5, 3.0, 7.0, 16.0):
        assert effective_data(fit, law(D)) == pytest.approx(D, rel=1e-6)
    for outside in (law(0.5), law(64.0)):
        with pytest.raises(ValueError, match='outside the fitted loss range'):
            effective_data(fit, outside)


def test_multiplier_on_a_hand_example():
    # A=1, B=1, C=0: D_eff = 1/L. With replay L=0.25 -> D_eff 4; without L=0.5 -> 2; D0 = 1 -> multiplier 2
    fit = dict(A=1.0, B=1.0, C=0.0, loss_range=(0.1, 1.0), budget_range=(1.0, 10.0), budgets=5)
    result = efficiency(fit, 0.25, 0.5, 1.0)
    assert result.pop('extrapolated') == [] and result == pytest.approx(dict(with_replay=4.0, without_replay=2.0,
                                                                              multiplier=2.0))
    result = efficiency(fit, 0.05, 0.5, 2.0)  # with-replay loss below the fitted range: not extrapolated
    assert result['with_replay'] is None and result['multiplier'] is None
    assert result['without_replay'] == pytest.approx(1.0)


def run_cli(directory):
    return subprocess.run([sys.executable, os.path.join(ROOT, 'efficiency.py'), str(directory)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_cli_fits_and_compares(tmp_path):
    rows = reference_rows([law(BUDGETS) + 0.002, law(BUDGETS) - 0.002])
    for rho, loss in ((0.0, law(1.2)), (0.5, law(2.0)), (0.75, law(2.5)), (0.875, law(1.5))):
        for seed in (0, 1):
            rows.append(run_row(f"r{rho}_s{seed}", seed, BASE_TOKENS, float(loss), 0, replay_fraction=rho,
                                stage2_allocation=1.0))
    write_sweep(tmp_path, rows)
    result = run_cli(tmp_path)
    assert result.returncode == 0, result.stderr
    assert 'A = ' in result.stdout and 'B = ' in result.stdout and 'C = ' in result.stdout
    assert 'residual' in result.stdout
    # the best replay run (ρ = .75, D_eff = 2.5) against ρ = 0 (D_eff = 1.2), not the later ρ = .875
    assert 'multiplier D_eff(with)/D_eff(without) = 2.083x' in result.stdout
    assert 'D_eff/D0 = 2.500' in result.stdout and 'D_eff/D0 = 1.200' in result.stdout


def test_cli_reports_outside_range(tmp_path):
    rows = reference_rows([law(BUDGETS)])
    rows += [run_row('plain', 0, BASE_TOKENS, float(law(1.5)), 0, replay_fraction=0.0, stage2_allocation=1.0),
             run_row('replay', 0, BASE_TOKENS, float(law(64.0)), 0, replay_fraction=0.5, stage2_allocation=1.0)]
    write_sweep(tmp_path, rows)
    result = run_cli(tmp_path)
    assert result.returncode == 0, result.stderr
    assert 'outside the fitted range: not extrapolating' in result.stdout
    assert 'n/a' in result.stdout


@pytest.mark.parametrize('losses', [np.full(5, 3.0), law(BUDGETS)[::-1]])
def test_cli_refuses_degenerate_sweep_in_one_line(tmp_path, losses):
    write_sweep(tmp_path, reference_rows([losses]))
    result = run_cli(tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith('error: ') and len(result.stderr.strip().splitlines()) == 1
    assert 'Traceback' not in result.stderr


def test_cli_missing_sweep_dir(tmp_path):
    result = run_cli(tmp_path / 'nope')
    assert result.returncode == 2 and 'not found' in result.stderr and 'Traceback' not in result.stderr


@pytest.mark.parametrize('name', ['results.csv', 'results.jsonl'])
def test_a_results_file_that_is_not_text_is_named(tmp_path, name):
    """Both readers (efficiency.py, plot.py) name the file and how to write it again, in one line."""
    write_sweep(tmp_path, reference_rows([law(BUDGETS)]))
    (tmp_path / name).write_bytes(b'\xff\xfe\x00binary')
    for script in ('efficiency.py', 'plot.py'):
        result = subprocess.run([sys.executable, script, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                                timeout=120)
        assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
        assert result.stderr.startswith(f"error: {tmp_path / name} is not a results file (")
        assert 'python sweep.py SWEEP_FILE --status=True' in result.stderr



def finetune_replay_rows(rhos=(0.0, 0.25, 0.5, 0.75), losses=(1.2, 1.6, 2.5, 2.0), max_iters=None):
    """config/finetune_replay.py's runs (mode='mixed', max_iters=0): N = ⌈U·e / (S·(1 − ρ))⌉ and γ = T/(N·S) grow
    with ρ (U = T = 128 sequences of 32 tokens, e = 1, S = 8); a final loss law(m) is worth m x D0 of target data.
    max_iters: N set by hand instead (mode='midtrain'), so γ is one at every ρ."""
    rows = []
    for rho, loss in zip(rhos, losses):
        N = max_iters or math.ceil(BASE_TOKENS / 32 / 8 / (1 - rho))
        rows += [dict(run_row(f"r{rho}_n{N}_s{seed}", seed, BASE_TOKENS, float(law(loss)), 0, replay_fraction=rho,
                              stage2_allocation=1.0), mode='midtrain' if max_iters else 'mixed', max_iters=N,
                      gamma=128 / (N * 8), stage2_fraction=1.0, stage2_start=0.0) for seed in (1, 2)]
    return rows


def test_runs_whose_n_grows_with_rho_are_one_protocol(tmp_path):
    """A fine-tuning sweep whose N is derived from ρ (max_iters and γ differ by ρ) is one protocol: its best replay
    run (ρ = .5, D_eff 2.5 x D0) is compared with its run without replay (1.2 x D0), in efficiency.py and in the
    report; an N set by hand stays a setting of its own (one comparison per N)."""
    references = reference_rows([law(BUDGETS) + 0.002, law(BUDGETS) - 0.002])
    write_sweep(tmp_path / 'derived', references + finetune_replay_rows())
    result = run_cli(tmp_path / 'derived')
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stdout.splitlines() if 'multiplier' in line] == [
        '  multiplier D_eff(with)/D_eff(without) = 2.083x (no spread measured)'], result.stdout
    assert 'with replay     ρ=0.5, α=1: L = ' in result.stdout
    report = write_report(load_sweep(str(tmp_path / 'derived')), str(tmp_path / 'derived'))
    assert ("target-data efficiency of the best replay run (ρ=0.5, α=1): 2.08x the no-replay run's (D_eff 2.50 vs "
            "1.20 x D0) (no spread measured)") in report
    by_hand = finetune_replay_rows((0.0, 0.5), (1.2, 2.5), 32) + finetune_replay_rows((0.0, 0.5), (1.2, 1.5), 64)
    write_sweep(tmp_path / 'by_hand', references + by_hand)
    result = run_cli(tmp_path / 'by_hand')
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stdout.splitlines() if 'multiplier' in line] == [
        '  multiplier D_eff(with)/D_eff(without) = 2.083x (no spread measured)',
        '  multiplier D_eff(with)/D_eff(without) = 1.250x (no spread measured)']


# ---- what a report may claim, and input refused in one line -------------------------------------------------------

def replay_sweep(tmp_path, plain, replay, budgets=BUDGETS, rho=0.5, **extra):
    """References at `budgets` (two seeds, ±0.002) and α = 1 runs at ρ = 0 and `rho`: [final target loss per seed]."""
    rows = [run_row(f"ref_{int(b)}_s{seed}", seed, int(b * BASE_TOKENS), float(law(b)) + 0.002 * (2 * seed - 1), 1)
            for seed in (0, 1) for b in budgets]
    rows += [run_row(f"r{r}_s{seed}", seed, BASE_TOKENS, None if loss is None else float(loss), 0, replay_fraction=r,
                     stage2_allocation=1.0, **extra)
             for r, losses in ((0.0, plain), (rho, replay)) for seed, loss in enumerate(losses, 1)]
    write_sweep(tmp_path, rows)
    return rows


def report_lines(directory):
    return write_report(load_sweep(str(directory)), str(directory)).splitlines()


def test_a_multiplier_carries_the_verdict_on_its_loss_difference(tmp_path):
    """The multiplier of a loss difference within the seed spread says so, in efficiency.py and in the report; one
    beyond it says that; 5 budgets leave R² unlabelled."""
    replay_sweep(tmp_path / 'noise', [law(1.2) - 0.05, law(1.2) + 0.05], [law(1.25) - 0.05, law(1.25) + 0.05])
    result = run_cli(tmp_path / 'noise')
    assert result.returncode == 0, result.stderr
    assert ' (the loss difference is within the seed spread)' in result.stdout
    assert 'budgets for 3 parameters' not in result.stdout
    lines = report_lines(tmp_path / 'noise')
    assert any(line.startswith('replay at ρ = 0.5 lowers the target loss by') and 'within noise' in line
               for line in lines)
    assert any(line.startswith('target-data efficiency of ρ = 0.5 over ρ = 0: 1.0') and
               line.endswith('x (the loss difference is within the seed spread)') for line in lines), lines
    replay_sweep(tmp_path / 'clear', [law(1.2) - 0.001, law(1.2) + 0.001], [law(2.5) - 0.001, law(2.5) + 0.001])
    assert ('  multiplier D_eff(with)/D_eff(without) = 2.083x (the loss difference is beyond the seed spread)'
            in run_cli(tmp_path / 'clear').stdout)
    assert ("target-data efficiency of ρ = 0.5 over ρ = 0: 2.08x (the loss difference is beyond the seed spread)"
            in report_lines(tmp_path / 'clear'))


def test_three_budgets_for_three_parameters_are_labelled(tmp_path):
    """3 budgets: the law has no degree of freedom left, so its R² = 1 is labelled as saying nothing."""
    replay_sweep(tmp_path, [law(1.2)] * 2, [law(2.0)] * 2, budgets=BUDGETS[:3])
    result = run_cli(tmp_path)
    assert result.returncode == 0, result.stderr
    caveat = "3 budgets for 3 parameters: the curve can pass through every point, R² says nothing about the fit"
    assert f"R² = 1.0000 ({caveat})" in result.stdout
    (line,) = [line for line in report_lines(tmp_path) if line.startswith('efficiency fit')]
    assert line.endswith(f"(R² = 1.000; {caveat})")


def test_a_d_eff_beyond_the_reference_budgets_is_labelled_extrapolated(tmp_path):
    """A loss just below the lowest reference loss (within RANGE_TOLERANCE) gives a D_eff past the largest budget:
    printed, and labelled extrapolated wherever it is."""
    replay_sweep(tmp_path, [law(1.2) - 0.001, law(1.2) + 0.001], [law(16) - 0.004, law(16) - 0.002])
    result = run_cli(tmp_path)
    assert result.returncode == 0, result.stderr
    assert re.search(r"with replay .*D_eff/D0 = 1[6-9]\.\d{3} \(extrapolated beyond the reference budgets\)",
                     result.stdout), result.stdout
    assert re.search(r"without replay .*D_eff/D0 = 1\.\d{3}\n", result.stdout), result.stdout
    assert re.search(r"multiplier .*x \(extrapolated beyond the reference budgets; the loss difference is beyond "
                     r"the seed spread\)", result.stdout), result.stdout
    lines = report_lines(tmp_path)
    assert sum('(extrapolated beyond the reference budgets; the loss difference' in line for line in lines) == 2


def test_efficiency_shows_the_realised_rho_or_says_it_is_unknown(tmp_path):
    rows = replay_sweep(tmp_path, [law(1.2)] * 2, [law(2.0)] * 2, rho=0.3)
    for row in rows:
        row['rho_realised'] = 0.3333 if row['replay_fraction'] == 0.3 else row['rho_realised']
    write_sweep(tmp_path, rows)
    assert '  with replay     ρ=0.3333 (asked 0.3), α=1: L = ' in run_cli(tmp_path).stdout
    write_sweep(tmp_path, [{k: v for k, v in row.items() if k != 'rho_realised'} for row in rows])
    stdout = run_cli(tmp_path).stdout
    assert '  with replay     ρ=0.3 asked (realised unknown), α=1: L = ' in stdout
    assert '  without replay  ρ=0 asked (realised unknown), α=1: L = ' in stdout


def edit_csv(path, edit):
    """Rewrite results.csv through edit(header, rows) -> (header, rows)."""
    with open(path, newline='') as f:
        header, *rows = list(csv.reader(f))
    header, rows = edit(header, rows)
    with open(path, 'w', newline='') as f:
        csv.writer(f).writerows([header] + rows)


def drop(*names):
    return lambda header, rows: ([c for c in header if c not in names],
                                 [[v for c, v in zip(header, row) if c not in names] for row in rows])


def set_cell(run, column, value):
    def edit(header, rows):
        for row in rows:
            if row[header.index('run')] == run:
                row[header.index(column)] = value
        return header, rows
    return edit


def assert_refused_before_writing(directory, message):
    """efficiency.py and plot.py --report: one `error:` line holding message, exit 2, nothing written."""
    for script, flags in (('efficiency.py', []), ('plot.py', ['--report'])):
        result = subprocess.run([sys.executable, script, str(directory), *flags], cwd=ROOT, capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, (script, result.stderr)
        assert result.stderr.startswith('error: ') and message in result.stderr, (script, result.stderr)
        assert not os.path.exists(directory / 'plots') and not os.path.exists(directory / 'report.txt')


@pytest.mark.parametrize('edit, why', [
    (drop('seed'), 'no column seed'),
    (drop('run', 'seed'), 'no column run, seed'),
    (set_cell('r0.5_s2', 'val_loss_target', 'abc'), "line 15, run r0.5_s2: val_loss_target is 'abc', not a number"),
    (set_cell('r0.0_s1', 'replay_fraction', 'half'), "line 12, run r0.0_s1: replay_fraction is 'half', not a number"),
])
def test_a_hand_edited_results_csv_is_refused_in_one_line(tmp_path, edit, why):
    """A missing column the readers need, or text in a numeric cell (which would silently drop its run), is one
    error naming the file, the line and run, and the column."""
    replay_sweep(tmp_path, [law(1.2)] * 2, [law(2.0)] * 2)
    edit_csv(tmp_path / 'results.csv', edit)
    assert_refused_before_writing(tmp_path, f"{tmp_path / 'results.csv'} is not a results file ({why}): gather it "
                                            "again with `python sweep.py SWEEP_FILE --status=True`")


@pytest.mark.parametrize('key, value, why', [
    ('evals', 'abc', 'evals is not a list of [step, target loss, generic loss]'),
    ('evals', [[0, 3.0]], 'evals is not a list of [step, target loss, generic loss]'),
    ('stage_table', [dict(start=0, lr='restart', reset_optimizer=False)],
     'stage_table is not a list of stages, each with a start and steps'),
    ('task_evals', dict(demo='abc'), 'task_evals is not {task: '),
])
def test_a_malformed_results_jsonl_is_refused_in_one_line(tmp_path, key, value, why):
    rows = replay_sweep(tmp_path, [law(1.2)] * 2, [law(2.0)] * 2)
    rows[12][key] = value  # line 13: r0.5_s1
    write_sweep(tmp_path, rows)
    assert_refused_before_writing(tmp_path, f"{tmp_path / 'results.jsonl'} is not a results file (line 13, run "
                                            f"r0.5_s1: {why}")


def test_an_empty_or_nan_cell_is_a_missing_value_and_its_run_is_named(tmp_path):
    """An empty or NaN final loss is no error: the run is missing from every mean, and named."""
    rows = replay_sweep(tmp_path, [law(1.2)] * 2, [law(2.0), None])
    rows[1]['val_loss_target'] = float('nan')  # a reference seed that diverged
    write_sweep(tmp_path, rows)
    result = run_cli(tmp_path)
    assert result.returncode == 0, result.stderr
    assert ("  with replay     ρ=0.5, α=1: L = 3.1245 over 1 seed(s) (r0.5_s2: no final loss), D_eff/D0 = "
            in result.stdout)
    assert "            8192     1    3.1265" in result.stdout  # the reference point's mean is over 1 seed
    assert ("runs with no final val_loss_target (failed, diverged or unfinished; in no mean): ref_2_s0, r0.5_s2"
            in result.stdout)
