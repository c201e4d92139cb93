"""
The numbers of a sweep that plot.py draws and its report states: series against ρ, seed bands, the spike at a
stage boundary, seed-spread verdicts, per-seed differences, and the text report (`python plot.py SWEEP_DIR
--report` writes it). Reads what efficiency.load_sweep reads; draws nothing.

Where several seeds share a setting, a point is the mean over the seeds and its spread their min to max.

Initial loss spike (every ρ of the series that holds the best final target loss), on the target validation loss
L(t) of the evals, with s = stage2_start (the eval at step s comes after s optimizer updates, so it is the last
value before stage 2; without an eval at s, the last one before it):
  recovery steps  r − s, where r is the first eval step after s with L(r) < L(s); "not recovered" if there is none;
                  0 when already the first eval after s is below L(s) (no spike).
  spike height    max L(t) − L(s) over the evals s < t < r (all t > s when not recovered); 0 when there are none.
So the spike is the excursion above the pre-stage-2 loss that starts at the boundary; a later rise (overfitting
the repeated target data) is not counted once the loss has recovered. Both are read off the seed-mean curve that is
drawn, at the resolution of the evals (spike_eval_interval).
"""
import math
import os

import numpy as np

from efficiency import (SCHEDULE_KNOBS, describe, describe_schedule, efficiency, efficiency_report, format_value,
                        seed_average, varying_keys)

LOSS_UNIT = 'nats/token'
ACC_METRICS = ('acc', 'acc_norm')  # task accuracy: results.csv columns <metric>_<task>


class Skip(Exception):
    """This plot cannot be drawn from this sweep; the message says why (printed as one line)."""


def rho_axis(replay_fraction):
    """The paper's x axis −log(1−ρ): ρ = .5, .75, .875 come out evenly spaced."""
    return -math.log1p(-replay_fraction)


def rho_label(replay_fraction):
    text = f"{replay_fraction:g}"
    return text[1:] if text.startswith('0.') else text


def spike_stats(evals, stage2_start):
    """(spike height, recovery steps or None) of the target loss at a stage boundary; definitions in the docstring.
    evals: [[step, target loss, ...], ...] in ascending steps."""
    before = [e[1] for e in evals if e[0] <= stage2_start and e[1] is not None]
    after = [(e[0], e[1]) for e in evals if e[0] > stage2_start and e[1] is not None]
    if not before or not after:
        raise ValueError(f"no target eval on both sides of stage2_start = {stage2_start:g}")
    boundary_loss = before[-1]
    recovered = next((step for step, loss in after if loss < boundary_loss), None)
    above = [loss for step, loss in after if recovered is None or step < recovered]
    height = max(above) - boundary_loss if above else 0.0
    return height, (None if recovered is None else (recovered - stage2_start if above else 0))


def series_against_rho(rows, column):
    """Seed-averaged `column` against ρ (ascending), one series per α and per other varying setting."""
    rows = [r for r in rows if r.get('reference') != 1 and isinstance(r.get('stage2_allocation'), float)
            and isinstance(r.get('replay_fraction'), float) and 0 <= r['replay_fraction'] < 1]
    entries = seed_average(rows, column)
    if not entries:
        raise Skip(f"no non-reference run has replay_fraction < 1, stage2_allocation and {column}")
    varying = varying_keys([e['settings'] for e in entries], exclude=SCHEDULE_KNOBS)
    grouped = {}
    for entry in entries:
        grouped.setdefault(tuple(entry['settings'][k] for k in varying + ['stage2_allocation']), []).append(entry)
    series = []
    for members in grouped.values():
        members.sort(key=lambda e: e['settings']['replay_fraction'])
        settings = {k: members[0]['settings'][k] for k in varying}
        alpha = members[0]['settings']['stage2_allocation']
        rho = [e['settings']['replay_fraction'] for e in members]
        series.append(dict(label=', '.join(filter(None, [f"α={format_value(alpha)}", describe(settings, varying)])),
                           settings=settings, stage2_allocation=alpha, replay_fraction=rho,
                           x=[rho_axis(r) for r in rho], mean=[e['mean'] for e in members],
                           min=[e['min'] for e in members], max=[e['max'] for e in members],
                           n=[e['n'] for e in members], runs=[e['runs'] for e in members]))
    return series


def best_point(series):
    """(series index, point index) of the lowest mean over all series."""
    return min(((i, j) for i, s in enumerate(series) for j in range(len(s['mean']))),
               key=lambda ij: series[ij[0]]['mean'][ij[1]])


def seed_mean_curve(rows_by_name, runs, column=1):
    """Target loss (column 2: generic) per step, mean/min/max over the runs' evals, on the steps every run has."""
    return seed_band([{e[0]: e[column] for e in rows_by_name[name]['evals'] if e[column] is not None}
                      for name in runs])


def seed_band(curves):
    """(steps, mean, min, max) over several runs' {step: value} curves, on the steps every run has."""
    steps = sorted(set.intersection(*(set(c) for c in curves)))
    values = np.array([[c[step] for step in steps] for c in curves])
    return steps, values.mean(axis=0), values.min(axis=0), values.max(axis=0)


def stage_boundaries(stage_table):
    """Steps where a stage starts after step 0 (a stage of no steps starts nowhere): each is marked on a curve."""
    return [s['start'] for s in stage_table if s['steps'] and s['start'] > 0]


def spike_starts(stage_table):
    """Steps where a stage restarts the LR schedule or resets the optimizer: where an initial loss spike is due."""
    return [s['start'] for s in stage_table
            if s['steps'] and s['start'] > 0 and (s['lr'] == 'restart' or s['reset_optimizer'])]


def task_names(rows):
    """Tasks whose final accuracy results.csv holds (columns acc_<task>)."""
    return sorted({k[4:] for k in rows[0] if k.startswith('acc_') and not k.startswith('acc_norm_')})


def per_seed_line(runs, baseline_rho, compare_rho, column='val_loss_target', higher_is_better=False):
    """The paired view: runs of one seed share everything before stage 2, so their difference is replay's alone."""
    by_seed = {}
    for r in runs:
        if isinstance(r.get(column), float):
            by_seed.setdefault(r['seed'], {})[r['replay_fraction']] = r[column]
    pairs = {seed: v[compare_rho] - v[baseline_rho] for seed, v in sorted(by_seed.items())
             if compare_rho in v and baseline_rho in v}
    better = sum((d > 0) if higher_is_better else (d < 0) for d in pairs.values())
    return (f"per seed, ρ = {compare_rho:g} minus ρ = {baseline_rho:g}: "
            + ', '.join(f"seed {seed:g}: {d:+.4f}" for seed, d in pairs.items())
            + f" (replay better in {better} of {len(pairs)})")


def spread_text(entry):
    """A seed_average entry as 'mean ± half the min–max range (min, max, n seeds)'."""
    return (f"{entry['mean']:.4f} ± {(entry['max'] - entry['min']) / 2:.4f} (min {entry['min']:.4f}, max "
            f"{entry['max']:.4f}, {entry['n']} seeds)")


def spread_verdict(base, other):
    """Whether two seed_average entries differ by more than the seed spread (the larger min–max range of the two)."""
    spread = max(base['max'] - base['min'], other['max'] - other['min'])
    if abs(other['mean'] - base['mean']) <= spread:
        return 'within noise: the difference is smaller than the seed spread'
    return f"beyond the seed spread ({spread:.4f})"


def accuracy_lines(runs, column, baseline_rho, compare_rho):
    """The report's lines for one task accuracy column (higher is better), judged against the seed spread as the
    target loss is."""
    by_rho = {e['settings']['replay_fraction']: e for e in seed_average(runs, column)}
    if baseline_rho not in by_rho or compare_rho not in by_rho:
        return [f"{column}: no runs at both ρ = {baseline_rho:g} and ρ = {compare_rho:g}"]
    base, other = by_rho[baseline_rho], by_rho[compare_rho]
    gain = other['mean'] - base['mean']
    return [f"{column}, no replay  (ρ = {baseline_rho:g}): {spread_text(base)}",
            f"{column}, replay     (ρ = {compare_rho:g}): {spread_text(other)}",
            f"replay at ρ = {compare_rho:g} {'raises' if gain > 0 else 'lowers'} {column} by {abs(gain):.4f}: "
            f"{spread_verdict(base, other)}",
            per_seed_line(runs, baseline_rho, compare_rho, column, higher_is_better=True),
            f"{column} by ρ: " + ', '.join(f"ρ={rho:g}: {e['mean']:.4f}" for rho, e in sorted(by_rho.items()))]


def write_report(rows, sweep_dir, baseline_rho=0.0, compare_rho=0.5):
    """A short text report of a replay sweep's α = 1 runs: ρ = compare_rho against ρ = baseline_rho (both fixed
    before the runs), the best ρ, the efficiency multiplier and the change in generic loss. A difference smaller
    than the seed spread (the larger min-to-max range of the two settings) is called "within noise". Returns the
    text."""
    runs = [r for r in rows if r.get('reference') != 1 and r.get('stage2_allocation') == 1.0]
    target = {e['settings']['replay_fraction']: e for e in seed_average(runs, 'val_loss_target')}
    generic = {e['settings']['replay_fraction']: e for e in seed_average(runs, 'val_loss_generic')}
    if baseline_rho not in target or compare_rho not in target:
        raise ValueError(f"the sweep needs runs at ρ = {baseline_rho:g} and ρ = {compare_rho:g} for a report")
    base, other = target[baseline_rho], target[compare_rho]
    gain = base['mean'] - other['mean']
    best = min(target.values(), key=lambda e: e['mean'])
    lines = [f"Replay report for {sweep_dir} (final validation loss in {LOSS_UNIT}; mean ± half the min–max range "
             f"over seeds)",
             f"target loss, no replay  (ρ = {baseline_rho:g}): {spread_text(base)}",
             f"target loss, replay     (ρ = {compare_rho:g}): {spread_text(other)}",
             f"replay at ρ = {compare_rho:g} {'lowers' if gain > 0 else 'raises'} the target loss by {abs(gain):.4f} "
             f"({100 * abs(gain) / base['mean']:.1f}%): {spread_verdict(base, other)}",
             per_seed_line(runs, baseline_rho, compare_rho),
             "target loss by ρ: " + ', '.join(f"ρ={rho:g}: {e['mean']:.4f}" for rho, e in sorted(target.items())),
             f"best ρ: {best['settings']['replay_fraction']:g} (target loss {best['mean']:.4f})"]
    if baseline_rho in generic and compare_rho in generic:
        change = generic[compare_rho]['mean'] - generic[baseline_rho]['mean']
        lines.append(f"generic loss: {generic[baseline_rho]['mean']:.4f} at ρ = {baseline_rho:g}, "
                     f"{generic[compare_rho]['mean']:.4f} at ρ = {compare_rho:g} ({change:+.4f}: replay "
                     f"{'reduces' if change < 0 else 'does not reduce'} forgetting of the generic domain)")
    for name in task_names(rows):  # task accuracy (acc, acc_norm), higher is better
        for metric in ACC_METRICS:
            lines += accuracy_lines(runs, f'{metric}_{name}', baseline_rho, compare_rho)
    try:
        report = efficiency_report(rows)
        fit = report['fit']
        lines.append(f"efficiency fit over the reference runs: L(D) = {fit['A']:.4g}·D^-{fit['B']:.4g} + "
                     f"{fit['C']:.4g} (R² = {fit['r2']:.3f})")
        fixed = efficiency(fit, other['mean'], base['mean'], base['settings']['target_tokens'])
        lines.append(f"target-data efficiency of ρ = {compare_rho:g} over ρ = {baseline_rho:g}: " +
                     (f"{fixed['multiplier']:.2f}x" if fixed['multiplier'] is not None else
                      "a loss lies outside the fitted range; not extrapolating"))
        for c in report['comparisons']:
            if c['multiplier'] is not None:
                schedule = describe_schedule(c['replay_run']['settings'])
                lines.append(f"target-data efficiency of the best replay run ({schedule}): {c['multiplier']:.2f}x the "
                             f"no-replay run's (D_eff {c['with_replay']:.2f} vs {c['without_replay']:.2f} x D0)")
            else:
                lines.append("efficiency: a loss lies outside the fitted range of the reference runs; not "
                             "extrapolating")
    except ValueError as e:
        lines.append(f"efficiency: not computed ({e})")
    computed = sum(r['steps_computed'] for r in rows if isinstance(r.get('steps_computed'), float))
    scratch = sum(r['max_iters'] for r in rows if isinstance(r.get('max_iters'), float))
    if computed:
        lines.append(f"compute: {computed:.0f} training steps with prefix sharing instead of {scratch:.0f}")
    text = '\n'.join(lines) + '\n'
    with open(os.path.join(sweep_dir, 'report.txt'), 'w') as f:
        f.write(text)
    return text
