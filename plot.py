"""
Every plot of a sweep, regenerated from SWEEP_DIR/results.csv and results.jsonl alone.

    python plot.py SWEEP_DIR [--pdf] [--fit] [--report]

Writes SWEEP_DIR/plots/{replay_vs_loss,heatmap,spike,forgetting,efficiency,curves}.png, and for runs with `tasks`
{accuracy,task_curves}.png (and .pdf with --pdf), and plots/plotted.json, the numbers each plot draws. Where
several seeds share a setting, a point is the mean over the seeds and its error bar (or shaded band) spans their
min to max. Reference runs (reference == 1) appear only in efficiency.png. Series: one per protocol, i.e. per α
(stage2_allocation) and per value of any other setting that varies in the sweep (mode, target_tokens, ...) other
than ρ and what the plan derives from it (so runs whose N grows with ρ form one line). A plot whose columns are
missing is skipped with a one-line message.

spike.png: the initial loss spike (its height and recovery steps, as analysis.py defines them) at the stage
boundary, for every ρ of the series that holds the best final target loss.

curves.png: both validation losses over the steps of every setting (reference runs aside), for any stage list: each
stage start is marked, and the spike is measured as above at every stage start that restarts the LR schedule or
resets the optimizer (results.jsonl holds each run's stage table); a second row zooms on the last stage.

accuracy.png: each task's final scores against ρ, one series per α and other varying setting: a multiple-choice
task's acc and acc_norm (results.csv's acc_<task>, acc_norm_<task>), a generation task's exact_match per filter
(exact_match_<task>_<filter>, e.g. GSM8K's strict-match and flexible-extract). task_curves.png: the same scores over
the steps of every setting (results.jsonl's task_evals), each stage start marked. --report writes
SWEEP_DIR/report.txt: in each protocol, every ρ against ρ = 0 beside the seed spread (target and generic loss, each
task score, the efficiency multiplier) and the best ρ; a sweep that has none is one error before any plot, and a
report.txt of an earlier results.csv is removed (it would pass for this sweep's, as a stale plot would).

ρ: points and series are grouped by the ρ asked (replay_fraction) and placed and labelled at the ρ the plan realised
(rho_realised), with the one asked beside it where rounding moved it ('.2 (asked .25)').

The numbers (series, bands, spikes, the report) are analysis.py's; this file draws them.
"""
import json
import os

import numpy as np
import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt

from analysis import (LOSS_UNIT, Skip, best_point, rho_label, seed_band, seed_mean_curve, schedule_text,
                      series_against_rho, setting_label, spike_starts, spike_stats, stage_boundaries, task_columns,
                      task_score, write_report)
from configurator import UserError, parse_options, run_main
from efficiency import describe, efficiency_report, format_value, load_sweep, seed_average, varying_keys

PLOT_NAMES = ('replay_vs_loss', 'heatmap', 'spike', 'forgetting', 'efficiency', 'curves', 'accuracy', 'task_curves')


def require(rows, columns):
    missing = [column for column in columns if column not in rows[0]]
    if missing:
        raise Skip(f"results.csv has no column {', '.join(missing)}")


def seeds_note(series, zero_band=False):
    counts = sorted({n for s in series for n in s['n']})
    return f"bars{' and ρ = 0 bands' if zero_band else ''}: min–max over seeds (n = {', '.join(map(str, counts))})"


def draw_series(ax, series, zero_as_line):
    """Mean with min–max error bars per series on the −log(1−ρ) axis; ρ = 0 as a dotted line if zero_as_line.
    Returns each series' colour."""
    colors = []
    for s in series:
        points = [j for j, r in enumerate(s['replay_fraction']) if not (zero_as_line and r == 0)]
        pick = lambda key: np.array([s[key][j] for j in points])
        mean = pick('mean')
        line = ax.errorbar(pick('x'), mean, yerr=[mean - pick('min'), pick('max') - mean], marker='o', capsize=3,
                           label=s['label'])
        colors.append(line[0].get_color())
        if zero_as_line and 0.0 in s['replay_fraction']:
            j = s['replay_fraction'].index(0.0)
            ax.axhline(s['mean'][j], linestyle=':', color=colors[-1], label=f"{s['label']}, no replay (ρ = 0)")
            ax.axhspan(s['min'][j], s['max'][j], color=colors[-1], alpha=0.12, linewidth=0)  # its seed spread
    ticks = {x: rho_label(realised, asked) for s in series
             for x, realised, asked in zip(s['x'], s['rho_realised'], s['replay_fraction'])}
    ax.set_xticks(sorted(ticks), [ticks[x] for x in sorted(ticks)])
    ax.set_xlabel('replay fraction ρ realised (generic share of stage 2; axis spaced as −log(1−ρ))')
    return colors


def save(fig, out_dir, name, formats):
    fig.tight_layout()
    for extension in formats:
        fig.savefig(os.path.join(out_dir, f"{name}.{extension}"), dpi=120, bbox_inches='tight')  # keep legends
    plt.close(fig)


def plot_replay_vs_loss(rows, out_dir, formats, quadratic=False):
    require(rows, ['replay_fraction', 'stage2_allocation', 'val_loss_target'])
    series = series_against_rho(rows, 'val_loss_target')
    fig, ax = plt.subplots(figsize=(11, 5.5))
    colors = draw_series(ax, series, zero_as_line=True)
    i, j = best_point(series)
    best = dict(label=series[i]['label'], replay_fraction=series[i]['replay_fraction'][j],
                rho_realised=series[i]['rho_realised'][j], x=series[i]['x'][j], mean=series[i]['mean'][j])
    ax.plot(best['x'], best['mean'], marker='*', markersize=18, color='gold', markeredgecolor='black', linestyle='',
            label=f"best: {best['label']}, ρ = {rho_label(best['rho_realised'], best['replay_fraction'])}, "
                  f"L = {best['mean']:.4f}")
    for s, color in zip(series, colors) if quadratic else []:
        s['quadratic'] = None
        if len(s['x']) >= 3:  # least squares parabola in −log(1−ρ) through the seed means
            coefficients = np.polyfit(s['x'], s['mean'], 2)
            grid = np.linspace(min(s['x']), max(s['x']), 100)
            s['quadratic'] = coefficients.tolist()
            ax.plot(grid, np.polyval(coefficients, grid), linestyle='--', color=color, linewidth=1,
                    label=f"quadratic fit in −log(1−ρ), {s['label']}")
    ax.set_ylabel(f'final target val loss ({LOSS_UNIT})')
    ax.set_title('Final target loss against replay fraction')
    ax.legend(title=seeds_note(series, zero_band=True), fontsize=7, title_fontsize=7, loc='upper left',
              bbox_to_anchor=(1.01, 1))
    save(fig, out_dir, 'replay_vs_loss', formats)
    return dict(series=series, best=best)


def plot_heatmap(rows, out_dir, formats):
    require(rows, ['replay_fraction', 'stage2_allocation', 'val_loss_target'])
    panels = {}
    for s in series_against_rho(rows, 'val_loss_target'):
        if s['stage2_allocation'] is None:
            continue  # a stage list: no α axis
        panels.setdefault(json.dumps(s['settings'], sort_keys=True), []).append(s)
    panels = [p for p in panels.values() if len(p) >= 2 and len({r for s in p for r in s['replay_fraction']}) >= 2]
    if not panels:
        raise Skip("needs at least 2 values of α and 2 of ρ")
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 5), squeeze=False)
    plotted = []
    for ax, panel in zip(axes[0], panels):
        alphas = sorted(s['stage2_allocation'] for s in panel)
        rhos = sorted({r for s in panel for r in s['replay_fraction']})
        mean, spread = np.full((len(rhos), len(alphas)), np.nan), np.full((len(rhos), len(alphas)), np.nan)
        for s in panel:  # one seed or identical seeds measured no spread: no ± (NaN), not ±0
            for r, m, low, high, n in zip(s['replay_fraction'], s['mean'], s['min'], s['max'], s['n']):
                cell = rhos.index(r), alphas.index(s['stage2_allocation'])
                mean[cell], spread[cell] = m, (high - low) / 2 if n > 1 and high > low else np.nan
        image = ax.imshow(mean, cmap='viridis_r', aspect='auto', origin='lower')
        fig.colorbar(image, ax=ax, label=f'final target val loss ({LOSS_UNIT})')
        for (row, col), value in np.ndenumerate(mean):
            if not np.isnan(value):
                ax.text(col, row, f"{value:.4f}" + ('' if np.isnan(spread[row, col]) else
                                                    f"\n±{spread[row, col]:.4f}"), ha='center', va='center', fontsize=7,
                        color='white' if value > np.nanmean(mean) else 'black')
        best_row, best_col = np.unravel_index(np.nanargmin(mean), mean.shape)
        ax.add_patch(plt.Rectangle((best_col - 0.5, best_row - 0.5), 1, 1, fill=False, edgecolor='red', linewidth=3))
        ax.set_xticks(range(len(alphas)), [format_value(a) for a in alphas])
        realised = {r: {q for s in panel for q, asked in zip(s['rho_realised'], s['replay_fraction']) if asked == r}
                    for r in rhos}  # a row is the ρ asked; labelled by the ρ realised where all its cells agree
        ax.set_yticks(range(len(rhos)), [rho_label(*realised[r], r) if len(realised[r]) == 1 else
                                         f"{rho_label(r)} asked" for r in rhos])
        ax.set_xlabel('stage-2 allocation α (share of target data in stage 2)')
        ax.set_ylabel('replay fraction ρ')
        settings = describe(panel[0]['settings'], panel[0]['settings'])
        ax.set_title(f"Final target loss{': ' + settings if settings else ''}\ncell: mean over seeds ± half the "
                     "min–max range (no ±: one seed or identical\nseeds, no spread measured); red: best", fontsize=9)
        best = dict(replay_fraction=rhos[best_row], stage2_allocation=alphas[best_col],
                    mean=float(mean[best_row, best_col]))
        plotted.append(dict(settings=panel[0]['settings'], replay_fraction=rhos, stage2_allocation=alphas, best=best,
                            **{key: [[None if np.isnan(v) else v for v in row] for row in values.tolist()]
                               for key, values in (('mean', mean), ('spread', spread))}))  # JSON: no NaN
    save(fig, out_dir, 'heatmap', formats)
    return dict(panels=plotted)


def draw_curve(ax, band, label, stage_starts):
    """A seed-mean line over the steps, its min–max band over seeds and a dotted line at each stage start, in one
    colour. band: seed_band's (steps, mean, min, max). Returns the numbers drawn."""
    steps, mean, low, high = band
    line, = ax.plot(steps, mean, marker='.', markersize=3, label=label)
    ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.2)
    for start in stage_starts:
        ax.axvline(start, color=line.get_color(), linewidth=0.8, linestyle=':')
    return dict(step=list(steps), mean=mean.tolist(), min=low.tolist(), max=high.tolist())


def plot_curves(rows, out_dir, formats):
    """Target and generic validation loss over steps, one line per setting (seed mean; band: min–max over seeds),
    every stage start marked, and the spike (height, recovery) at each start that restarts the LR schedule or
    resets the optimizer. Works for any stage list (results.jsonl holds each run's stage table). A second row zooms
    on the last stage (from shortly before the earliest last-stage start to the end), which a long first stage
    otherwise squeezes into the right edge."""
    rows_by_name = {row['run']: row for row in rows}
    entries = seed_average([r for r in rows if r['evals'] and r.get('reference') != 1], 'val_loss_target')
    if not entries:
        raise Skip("no non-reference run has evals in results.jsonl and a val_loss_target")
    varying = varying_keys([e['settings'] for e in entries])
    last_starts = [s[-1] for s in (stage_boundaries(rows_by_name[e['runs'][0]]['stage_table']) for e in entries) if s]
    zoom = None
    if last_starts:  # from shortly before the earliest last-stage start, so every setting's last stage shows
        end = max(e[0] for entry in entries for name in entry['runs'] for e in rows_by_name[name]['evals'])
        zoom = dict(start=max(0, min(last_starts) - 0.1 * (end - min(last_starts))), end=end)
    fig, axes = plt.subplots(2 if zoom else 1, 2, figsize=(14, 11 if zoom else 5.5), squeeze=False)
    curves = []
    for entry in entries:
        runs, label = entry['runs'], setting_label(entry, varying, rows)
        table = rows_by_name[runs[0]]['stage_table']
        starts = stage_boundaries(table)
        curve = dict(label=label, runs=runs, stage_starts=starts, spikes=[])
        for column, name in ((1, 'target'), (2, 'generic')):
            band = seed_mean_curve(rows_by_name, runs, column)
            curve[name] = draw_curve(axes[0][column - 1], band, label, starts)
            if zoom:
                draw_curve(axes[1][column - 1], band, label, starts)
        for start in spike_starts(table):
            target = curve['target']
            try:
                height, recovery = spike_stats([[s, m] for s, m in zip(target['step'], target['mean'])], start)
            except ValueError:
                continue  # no eval on one side of this start
            curve['spikes'].append(dict(start=start, spike_height=height, recovery_steps=recovery))
        curves.append(curve)
    for row, where in zip(axes, ('over training', 'in the last stage')):
        for ax, name in zip(row, ('target', 'generic')):
            ax.set_xlabel('step (dotted: a stage starts)')
            ax.set_ylabel(f'{name} val loss ({LOSS_UNIT})')
            ax.set_title(f"{name.capitalize()} loss {where}")
    if zoom:
        for ax, name in zip(axes[1], ('target', 'generic')):
            visible = [v for c in curves for step, low, high in zip(c[name]['step'], c[name]['min'], c[name]['max'])
                       if step >= zoom['start'] for v in (low, high)]
            margin = 0.05 * (max(visible) - min(visible)) or 0.01
            ax.set_xlim(zoom['start'], zoom['end'])
            ax.set_ylim(min(visible) - margin, max(visible) + margin)
    axes[0][0].legend(title='line: seed mean; band: min–max over seeds', fontsize=7, title_fontsize=7)
    save(fig, out_dir, 'curves', formats)
    return dict(curves=curves, last_stage_zoom=zoom)


def task_axes(tasks, width):
    """A figure with a row per task and a panel per score (task_columns); a row's unused panels are hidden."""
    ncols = max(len(columns) for columns in tasks.values())
    fig, axes = plt.subplots(len(tasks), ncols, figsize=(width * ncols, 4.5 * len(tasks)), squeeze=False)
    for row_axes, columns in zip(axes, tasks.values()):
        for ax in row_axes[len(columns):]:
            ax.set_visible(False)
    return fig, axes


def plot_accuracy(rows, out_dir, formats):
    """Each task's final scores (acc and acc_norm, or exact_match per filter) against ρ, as replay_vs_loss draws
    the loss: mean over seeds, bars min–max."""
    tasks = task_columns(rows)
    if not tasks:
        raise Skip("results.csv has no task accuracy (no acc_<task> column: no run had `tasks`)")
    fig, axes = task_axes(tasks, 6.5)
    plotted = {}
    for row_axes, (name, columns) in zip(axes, tasks.items()):
        for ax, (column, metric, _) in zip(row_axes, columns):
            series = plotted[column] = series_against_rho(rows, column)
            draw_series(ax, series, zero_as_line=False)
            ax.set_ylabel(f'final {metric} on {name}')
            ax.set_title(f"Task accuracy against replay fraction: {name}, {metric}")
            ax.legend(title=seeds_note(series), fontsize=7, title_fontsize=7)
    save(fig, out_dir, 'accuracy', formats)
    return plotted


def plot_task_curves(rows, out_dir, formats):
    """Each task's scores (acc and acc_norm, or exact_match per filter) over the steps, one line per setting (seed
    mean; band: min–max over seeds), every stage start marked (results.jsonl: task_evals and stage_table)."""
    tasks = task_columns(rows)
    if not tasks:
        raise Skip("results.csv has no task accuracy (no acc_<task> column: no run had `tasks`)")
    rows_by_name = {row['run']: row for row in rows}
    entries_by_task = {}  # every task's settings, before the figure: a task without evals skips the whole plot
    for name, columns in tasks.items():
        entries_by_task[name] = seed_average([r for r in rows if r['task_evals'].get(name) and r.get('reference') != 1],
                                             columns[0][0])
        if not entries_by_task[name]:
            raise Skip(f"no non-reference run has task evals of {name} in results.jsonl")
    fig, axes = task_axes(tasks, 7)
    plotted = {}
    for row_axes, (name, columns) in zip(axes, tasks.items()):
        entries = entries_by_task[name]
        varying = varying_keys([e['settings'] for e in entries])
        labels = [setting_label(e, varying, rows) for e in entries]
        starts = [stage_boundaries(rows_by_name[e['runs'][0]]['stage_table']) for e in entries]
        for ax, (column, metric, key) in zip(row_axes, columns):
            curves = plotted[column] = []
            for entry, label, stage_starts in zip(entries, labels, starts):
                runs = entry['runs']
                band = seed_band([{e[0]: task_score(e, key) for e in rows_by_name[run]['task_evals'][name]}
                                  for run in runs])
                curves.append(dict(label=label, runs=runs, stage_starts=stage_starts,
                                   **draw_curve(ax, band, label, stage_starts)))
            ax.set_xlabel('step (dotted: a stage starts)')
            ax.set_ylabel(f'{metric} on {name}')
            ax.set_title(f"Task accuracy over training: {name}, {metric}")
            ax.legend(title='line: seed mean; band: min–max over seeds', fontsize=7, title_fontsize=7)
    save(fig, out_dir, 'task_curves', formats)
    return plotted


def plot_spike(rows, out_dir, formats):
    """Target loss around the stage boundary, every ρ of the series holding the best final-loss setting."""
    require(rows, ['replay_fraction', 'stage2_allocation', 'val_loss_target', 'stage2_start'])
    rows_by_name = {row['run']: row for row in rows}
    usable = [r for r in rows if r['evals'] and isinstance(r.get('stage2_start'), float) and r['stage2_start'] > 0]
    if not usable:
        raise Skip("no run has evals in results.jsonl and a stage2_start > 0")
    series = series_against_rho(usable, 'val_loss_target')
    chosen = series[best_point(series)[0]]
    fig, ax = plt.subplots(figsize=(8, 5.5))
    curves, stage2_lengths = [], []
    for rho, realised, runs in zip(chosen['replay_fraction'], chosen['rho_realised'], chosen['runs']):
        stage2_start = rows_by_name[runs[0]]['stage2_start']
        steps, mean, low, high = seed_mean_curve(rows_by_name, runs)
        try:
            height, recovery = spike_stats([[s, m] for s, m in zip(steps, mean)], stage2_start)
        except ValueError as e:
            print(f"spike: skipping ρ = {rho_label(realised, rho)}: {e}")
            continue
        relative = np.array(steps) - stage2_start
        recovery_text = 'not recovered' if recovery is None else f"recovered after {recovery:g} steps"
        line, = ax.plot(relative, mean, marker='.', label=f"ρ = {rho_label(realised, rho)}: spike {height:+.4f}, "
                        f"{recovery_text}")
        ax.fill_between(relative, low, high, color=line.get_color(), alpha=0.2)
        max_iters = rows_by_name[runs[0]].get('max_iters')
        stage2_lengths.append((max_iters if isinstance(max_iters, float) else steps[-1]) - stage2_start)
        curves.append(dict(replay_fraction=rho, rho_realised=realised, stage2_start=stage2_start,
                           step=relative.tolist(), mean=mean.tolist(), min=low.tolist(), max=high.tolist(),
                           spike_height=height, recovery_steps=recovery, runs=runs))
    if not curves:
        raise Skip("no run has target evals on both sides of its stage2_start")
    ax.axvline(0, color='black', linewidth=0.8, linestyle='--')
    window = -0.25 * max(stage2_lengths), max(stage2_lengths)
    visible = [value for c in curves for step, low, high in zip(c['step'], c['min'], c['max'])
               if window[0] <= step <= window[1] for value in (low, high)]  # the y range of the window only
    margin = 0.05 * (max(visible) - min(visible)) or 0.01
    ax.set_xlim(*window)
    ax.set_ylim(min(visible) - margin, max(visible) + margin)
    ax.set_xlabel('steps relative to the start of stage 2 (optimizer updates)')
    ax.set_ylabel(f'target val loss ({LOSS_UNIT})')
    ax.set_title(f"Initial loss spike at the stage boundary ({chosen['label']})")
    ax.legend(title='line: seed mean; band: min–max over seeds', fontsize=7, title_fontsize=7)
    save(fig, out_dir, 'spike', formats)
    return dict(label=chosen['label'], curves=curves)


def plot_forgetting(rows, out_dir, formats):
    require(rows, ['replay_fraction', 'stage2_allocation', 'val_loss_target', 'val_loss_generic'])
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    plotted = {}
    for ax, column, what in zip(axes, ['val_loss_generic', 'val_loss_target'], ['generic', 'target']):
        plotted[column] = series_against_rho(rows, column)
        draw_series(ax, plotted[column], zero_as_line=False)
        ax.set_ylabel(f'final {what} val loss ({LOSS_UNIT})')
        ax.set_title(f"{what.capitalize()} loss against replay fraction"
                     + (' (forgetting of pre-training data)' if what == 'generic' else ''))
        ax.legend(title=seeds_note(plotted[column]), fontsize=7, title_fontsize=7)
    save(fig, out_dir, 'forgetting', formats)
    return plotted


def plot_efficiency(rows, out_dir, formats):
    require(rows, ['reference', 'target_tokens', 'val_loss_target'])
    if not any(row.get('reference') == 1 for row in rows):
        raise Skip("no reference runs (reference == 1)")
    try:
        report = efficiency_report(rows)
    except ValueError as e:
        raise Skip(f"no fit: {e}")
    fit, reference = report['fit'], report['reference']
    D = np.array([p['settings']['target_tokens'] for p in reference])
    L = np.array([p['mean'] for p in reference])
    fig, ax = plt.subplots(figsize=(9, 6))
    ax.errorbar(D, L, yerr=[L - [p['min'] for p in reference], [p['max'] for p in reference] - L], marker='o',
                linestyle='', capsize=3, color='black', label='reference runs (no replay); bars: min–max over seeds')
    grid = np.geomspace(D.min(), D.max(), 200)
    ax.plot(grid, fit['A'] * grid ** -fit['B'] + fit['C'], color='gray',
            label=f"fit A·D^−B + C: A = {fit['A']:.3g}, B = {fit['B']:.3g}, C = {fit['C']:.3g}")
    for c in report['comparisons']:
        for side, run, marker in (('with_replay', c['replay_run'], 'o'), ('without_replay', c['plain_run'], 's')):
            name = f"{c['label']}, {schedule_text(run, rows)}"
            if c[side] is None:
                ax.axhline(run['mean'], linestyle=':', label=f"{name}: outside the fitted range")
                continue
            multiplier = f" ({c['multiplier']:.2f}x no replay)" if side == 'with_replay' and c['multiplier'] else ''
            beyond = ', extrapolated beyond the reference budgets' if side in c['extrapolated'] else ''
            line, = ax.plot([c['D0'], c[side] * c['D0']], [run['mean']] * 2, linestyle='--',
                            label=f"{name}: D_eff/D0 = {c[side]:.2f}{beyond}{multiplier}")
            ax.plot(c[side] * c['D0'], run['mean'], marker=marker, color=line.get_color())
    ax.set_xscale('log')
    ax.set_xlabel('unique target tokens D (log scale); dashed: from the run\'s D0 to its D_eff')
    ax.set_ylabel(f'final target val loss ({LOSS_UNIT})')
    ax.set_title('Data efficiency: effective target data of replay and no-replay runs')
    ax.legend(fontsize=7, loc='upper center', bbox_to_anchor=(0.5, -0.12))
    save(fig, out_dir, 'efficiency', formats)
    return dict(D=D.tolist(), L=L.tolist(), min=[p['min'] for p in reference], max=[p['max'] for p in reference],
                fit={k: fit[k] for k in ('A', 'B', 'C', 'r2', 'loss_range')},
                comparisons=[{k: c[k] for k in ('group', 'D0', 'with_replay', 'without_replay', 'multiplier')}
                             for c in report['comparisons']])


OPTIONS = dict(pdf=False,      # also write PDFs
               fit=False,      # quadratic fit in −log(1−ρ) on replay_vs_loss
               report=False)   # also write SWEEP_DIR/report.txt: every ρ against ρ=0, best ρ, efficiency,
                               # forgetting, task accuracy


def main(argv):
    args = parse_options(argv, OPTIONS, positional=['sweep_dir'],
                         usage='python plot.py SWEEP_DIR [--pdf] [--fit] [--report]', doc=__doc__)
    try:
        rows = load_sweep(args['sweep_dir'])
    except (ValueError, OSError) as e:
        raise UserError(str(e)) from None
    if not rows:
        raise UserError(f"{args['sweep_dir']}/results.csv has no runs")
    out_dir, report_path = os.path.join(args['sweep_dir'], 'plots'), os.path.join(args['sweep_dir'], 'report.txt')
    outputs = [os.path.join(out_dir, f"{name}.{extension}") for name in PLOT_NAMES for extension in ('png', 'pdf')]
    for path in [out_dir, os.path.join(out_dir, 'plotted.json')] + outputs + [report_path] * args['report']:
        if os.path.lexists(path) and os.path.isdir(path) != (path == out_dir):  # checked before anything is written
            raise UserError(f"{path} exists and is not a {'directory' if path == out_dir else 'file'}: move it away, "
                            f"plot.py writes its {'plots' if path == out_dir else 'output'} there")
    try:  # before any plot: a sweep without a report fails before it has drawn anything
        report = write_report(rows, args['sweep_dir']) if args['report'] else ''
    except ValueError as e:
        raise UserError(str(e)) from None
    os.makedirs(out_dir, exist_ok=True)
    formats = ['png'] + (['pdf'] if args['pdf'] else [])
    plots = dict(zip(PLOT_NAMES, (plot_replay_vs_loss, plot_heatmap, plot_spike, plot_forgetting, plot_efficiency,
                                  plot_curves, plot_accuracy, plot_task_curves)))
    for path in filter(os.path.exists, outputs):  # a stale file from an earlier run would pass for this sweep's plot
        os.remove(path)
    plotted = {}
    for name in PLOT_NAMES:
        extra = dict(quadratic=args['fit']) if name == 'replay_vs_loss' else {}
        try:
            plotted[name] = plots[name](rows, out_dir, formats, **extra)
            print(f"wrote {os.path.join(out_dir, name)}.png")
        except Skip as e:
            plt.close('all')  # a plot may find it cannot draw after opening its figure
            plotted[name] = dict(skipped=str(e))
            print(f"skipped {name}.png: {e}")
    with open(os.path.join(out_dir, 'plotted.json'), 'w') as f:
        json.dump(plotted, f, indent=1, default=float)  # default: numpy numbers
    print(report, end='')


if __name__ == '__main__':
    run_main(main)
