"""The constrained power-law fit, effective data, the multiplier, and `python efficiency.py SWEEP_DIR` (CPU, numpy)."""
import math
import os
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
    fit = dict(A=1.0, B=1.0, C=0.0, loss_range=(0.1, 1.0))
    assert efficiency(fit, 0.25, 0.5, 1.0) == pytest.approx(dict(with_replay=4.0, without_replay=2.0,
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
        '  multiplier D_eff(with)/D_eff(without) = 2.083x'], result.stdout
    assert 'with replay     ρ=0.5, α=1: L = ' in result.stdout
    report = write_report(load_sweep(str(tmp_path / 'derived')), str(tmp_path / 'derived'))
    assert "target-data efficiency of the best replay run (ρ=0.5, α=1): 2.08x the no-replay run's" in report
    by_hand = finetune_replay_rows((0.0, 0.5), (1.2, 2.5), 32) + finetune_replay_rows((0.0, 0.5), (1.2, 1.5), 64)
    write_sweep(tmp_path / 'by_hand', references + by_hand)
    result = run_cli(tmp_path / 'by_hand')
    assert result.returncode == 0, result.stderr
    assert [line for line in result.stdout.splitlines() if 'multiplier' in line] == [
        '  multiplier D_eff(with)/D_eff(without) = 2.083x', '  multiplier D_eff(with)/D_eff(without) = 1.250x']
