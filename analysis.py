"""
The numbers of a sweep that plot.py draws and its report states: series against ρ, seed bands, the spike at a
stage boundary, seed-spread verdicts, per-seed differences, and the text report (`python plot.py SWEEP_DIR
--report` writes it); and gather, which writes the results.csv and results.jsonl they are read from
(efficiency.load_sweep) out of the runs' summaries. Draws nothing.

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
import csv
import json
import math
import os

import numpy as np

import layout
from configurator import UserError
from efficiency import (C_BOUND_NOTE, SCHEDULE_KNOBS, derived_keys, describe, efficiency, efficiency_report,
                        failed_runs, fit_caveat, format_value, multiplier_note, realised_rho, reference_rho_note,
                        rho_text, schedule_text, seed_average, spread_verdict, varying_keys)

LOSS_UNIT = 'nats/token'
ACC_METRICS = ('acc', 'acc_norm')  # task accuracy: results.csv columns <metric>_<task>
RESULT_COLUMNS = ['run', 'protocol', 'reference', 'seed', 'data_seed', 'mode', 'lr_schedule', 'cooldown_fraction',
                  'replay_fraction', 'rho_realised', 'stage2_allocation', 'stage2_fraction', 'gamma',
                  'target_tokens', 'target_epochs', 'max_iters', 'stage2_start', 'val_loss_target',
                  'val_loss_generic', 'steps_computed', 'forked_from', 'fork_step', 'out_dir']


class Skip(Exception):
    """This plot cannot be drawn from this sweep; the message says why (printed as one line)."""


def rho_axis(replay_fraction):
    """The paper's x axis −log(1−ρ): ρ = .5, .75, .875 come out evenly spaced."""
    return -math.log1p(-replay_fraction)


def rho_label(realised, asked=None):
    """rho_text for an axis tick: '.5', '.2 (asked .25)'."""
    return rho_text(realised, asked).replace('0.', '.')


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
    """Seed-averaged `column` against ρ, one series per protocol: runs equal in every setting but ρ and what the plan
    derives from it (δ, stage 2's start; N and γ where N grows with ρ, max_iters=0) form one line, one per α and per
    other varying setting. Points are grouped by the ρ asked (replay_fraction), ascending, and placed and labelled
    at the ρ realised (rho_realised: the plan's replay share after rounding; None where results.csv records none,
    placed at the ρ asked then). missing: per point, the runs of its setting without a final `column`."""
    rows = [r for r in rows if r.get('reference') != 1 and isinstance(r.get('replay_fraction'), float)
            and 0 <= r['replay_fraction'] < 1]
    entries = seed_average(rows, column)
    if not entries:
        raise Skip(f"no non-reference run has replay_fraction < 1 and {column}")
    varying = varying_keys([e['settings'] for e in entries], exclude=SCHEDULE_KNOBS)
    derived = derived_keys(entries)  # what efficiency_report's protocols leave out too
    series = []
    for members in group_by(entries, [k for k in varying if k not in derived]):
        members.sort(key=lambda e: e['settings']['replay_fraction'])
        labelled = [k for k in varying if len({format_value(e['settings'][k]) for e in members}) == 1]
        settings = {k: members[0]['settings'][k] for k in labelled}
        alpha = members[0]['settings'].get('stage2_allocation')
        rho = [e['settings']['replay_fraction'] for e in members]
        realised = [realised_rho(rows, e['runs']) for e in members]
        label = ', '.join(filter(None, [f"α={format_value(alpha)}" if alpha is not None else '',
                                        describe(settings, labelled)]))
        series.append(dict(label=label or 'all runs', settings=settings, stage2_allocation=alpha,
                           replay_fraction=rho, rho_realised=realised,
                           x=[rho_axis(asked if r is None else r) for asked, r in zip(rho, realised)],
                           mean=[e['mean'] for e in members], min=[e['min'] for e in members],
                           max=[e['max'] for e in members], n=[e['n'] for e in members],
                           runs=[e['runs'] for e in members], missing=[e['missing'] for e in members]))
    return series


def setting_label(entry, keys, rows):
    """A seed_average entry's values of `keys` (ρ as realised: rho_text); without any, its run's name, or for several
    seeds 'mean of n seeds' (a mean is not any one seed's run)."""
    settings, realised = entry['settings'], realised_rho(rows, entry['runs'])
    parts = [f"{k}={rho_text(realised if realised is not None else settings[k], settings[k])}"
             if k == 'replay_fraction' and isinstance(settings.get(k), float)
             else f"{k}={format_value(settings.get(k))}" for k in keys]
    return ', '.join(parts) or (entry['runs'][0] if entry['n'] == 1 else f"mean of {entry['n']} seeds")


def group_by(entries, keys):
    """seed_average entries grouped by their values of `keys` and their α, in first-seen order."""
    groups = {}
    for entry in entries:
        key = tuple(entry['settings'].get(k) for k in keys + ['stage2_allocation'])
        groups.setdefault(key, []).append(entry)
    return list(groups.values())


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


def task_columns(rows):
    """Every task's final scores in results.csv (higher is better), tasks in name order: {task: [(column, metric,
    key), ...]}; key picks the score out of one of the task's evals (task_score). A multiple-choice task has
    acc_<task> and acc_norm_<task>, a generation task exact_match_<task>_<filter> per filter (no filter name holds
    a '_': none, regex, strict-match, flexible-extract)."""
    columns = {name: [(f'{metric}_{name}', metric, i) for i, metric in enumerate(ACC_METRICS, 1)]
               for name in task_names(rows)}
    for column in rows[0]:
        if column.startswith('exact_match_'):
            task, _, name = column[len('exact_match_'):].rpartition('_')
            columns.setdefault(task, []).append((column, f'exact_match ({name})', name))
    return dict(sorted(columns.items()))


def task_score(task_eval, key):
    """One score of a task eval in results.jsonl's task_evals: [step, acc, acc_norm] (key 1 or 2) for multiple
    choice, [step, {filter: exact_match}] (key: the filter) for generation."""
    return task_eval[1][key] if isinstance(key, str) else task_eval[key]


def per_seed_line(runs, baseline_rho, compare_rho, column='val_loss_target', higher_is_better=False, names=None):
    """The paired view: runs of one seed share everything before stage 2, so their difference is replay's alone.
    names: {ρ asked: its text} (rho_text)."""
    names = names or {}
    by_seed = {}  # a seed is (seed, data_seed): a sweep over a loaded model varies data_seed alone
    for r in runs:
        if isinstance(r.get(column), float):
            by_seed.setdefault((r['seed'], r.get('data_seed')), {})[r['replay_fraction']] = r[column]
    pairs = {seed: v[compare_rho] - v[baseline_rho] for seed, v in sorted(by_seed.items(), key=str)
             if compare_rho in v and baseline_rho in v}
    better = sum((d > 0) if higher_is_better else (d < 0) for d in pairs.values())
    varies = [len({key[i] for key in pairs}) > 1 for i in (0, 1)]
    if all(seed == data_seed for seed, data_seed in pairs):  # data_seed follows seed (its default): name it once
        varies[1] = False

    def label(key):  # the key that varies ('seed 2', 'data_seed 2', or both)
        parts = [f"{name} {value:g}" for name, value, vary in zip(('seed', 'data_seed'), key, varies) if vary]
        return '/'.join(parts) or f"seed {key[0]:g}"
    return (f"per seed, ρ = {names.get(compare_rho, f'{compare_rho:g}')} minus ρ = "
            f"{names.get(baseline_rho, f'{baseline_rho:g}')}: "
            + ', '.join(f"{label(seed)}: {d:+.4f}" for seed, d in pairs.items())
            + f" (replay better in {better} of {len(pairs)})")


def spread_text(entry):
    """A seed_average entry as 'mean ± half the min–max range (min, max, n seeds)', or where it has no spread, the
    mean and why (one seed; seeds whose runs came out identical); then the runs of its setting with no final value,
    which the mean is not over."""
    failed = (f"; no final value from {', '.join(entry['missing'])} (failed, diverged or unfinished)"
              if entry.get('missing') else '')
    if entry['n'] == 1:
        return f"{entry['mean']:.4f} (1 seed: no spread measured)" + failed
    if entry['max'] == entry['min']:
        return f"{entry['mean']:.4f} ({entry['n']} seeds gave identical runs: no spread measured)" + failed
    return (f"{entry['mean']:.4f} ± {(entry['max'] - entry['min']) / 2:.4f} (min {entry['min']:.4f}, max "
            f"{entry['max']:.4f}, {entry['n']} seeds)" + failed)


def accuracy_lines(runs, column, names):
    """The report's lines for one task score column (acc, acc_norm or a filter's exact_match: higher is better) in
    one protocol, every ρ against ρ = 0, judged against the seed spread as the target loss is. names: {ρ asked: its
    text}, ρ = 0 first."""
    by_rho = {e['settings']['replay_fraction']: e for e in seed_average(runs, column)}
    if 0.0 not in by_rho or len(by_rho) < 2:
        return [f"{column}: no runs at both ρ = 0 and a ρ > 0"]
    base = by_rho[0.0]
    lines = [f"{column}, no replay  (ρ = {names[0.0]}): {spread_text(base)}"]
    for rho, other in sorted(by_rho.items())[1:]:
        gain = other['mean'] - base['mean']
        lines += [f"{column}, replay     (ρ = {names[rho]}): {spread_text(other)}",
                  f"replay at ρ = {names[rho]} {'raises' if gain > 0 else 'lowers'} {column} by {abs(gain):.4f}: "
                  f"{spread_verdict(base, other, names)}",
                  per_seed_line(runs, 0.0, rho, column, higher_is_better=True, names=names)]
    by_rho_text = ', '.join(f"ρ={names[rho]}: {e['mean']:.4f}" for rho, e in sorted(by_rho.items()))
    return lines + [f"{column} by ρ: {by_rho_text}"]


def write_report(rows, sweep_dir):
    """A short text report of a replay sweep: in each protocol (series_against_rho: runs equal but for ρ) that has
    runs without replay, every ρ against ρ = 0, the best ρ, the change in generic loss, task scores and the
    efficiency multipliers; then the training steps the sweep computed. A difference smaller than the seed spread
    (the larger min-to-max range of the two settings) is called "within noise"; where no spread was measured, no
    verdict is given. ρ is the realised one, with the one asked where rounding moved it. Runs without a final loss
    are named, in no mean. Writes SWEEP_DIR/report.txt and returns the text; ValueError where the sweep has no
    report, after removing a report.txt of an earlier results.csv (it would pass for this sweep's, as a stale plot
    would)."""
    try:
        protocols = [s for s in series_against_rho(rows, 'val_loss_target') if 0.0 in s['replay_fraction']
                     and len(s['replay_fraction']) > 1]
    except Skip:
        protocols = []
    if not protocols:
        stale = os.path.join(sweep_dir, 'report.txt')
        removed = f" (removed {stale}, written from an earlier results.csv)" if os.path.isfile(stale) else ''
        if removed:
            os.remove(stale)
        raise ValueError("the sweep needs runs at ρ = 0 and at some ρ > 0 of one protocol for a report" + removed)
    try:
        report = efficiency_report(rows)
    except ValueError as e:
        report = e
    lines = [f"Replay report for {sweep_dir} (final validation loss in {LOSS_UNIT}; mean ± half the min–max range "
             f"over seeds)"]
    for series in protocols:
        if len(protocols) > 1:
            lines.append(f"protocol {series['label']}:")
        lines += protocol_lines(rows, series, report)
    if isinstance(report, ValueError):
        lines.append(f"efficiency: not computed ({report})")
    else:
        for c in report['comparisons']:
            if c['multiplier'] is not None:
                schedule = schedule_text(c['replay_run'], rows)
                lines.append(f"target-data efficiency of the best replay run ({schedule}): {c['multiplier']:.2f}x the "
                             f"no-replay run's (D_eff {c['with_replay']:.2f} vs {c['without_replay']:.2f} x D0)"
                             + multiplier_note(c, c['plain_run'], c['replay_run']))
            else:
                lines.append("efficiency: a loss lies outside the fitted range of the reference runs; not "
                             "extrapolating")
    lines += [failed for failed in [failed_runs(rows)] if failed]
    computed = [r['steps_computed'] for r in rows if isinstance(r.get('steps_computed'), float)]
    scratch = sum(r['max_iters'] for r in rows if isinstance(r.get('max_iters'), float))
    if computed:
        unknown = len(rows) - len(computed)
        lines.append(f"compute: {sum(computed):.0f} training steps with prefix sharing instead of {scratch:.0f}"
                     + (f" ({unknown} runs did not record theirs)" if unknown else ''))
    text = '\n'.join(lines) + '\n'
    with open(os.path.join(sweep_dir, 'report.txt'), 'w') as f:
        f.write(text)
    return text


def runner_up_note(target, best, names):
    """'; the next best, ρ = .., is .. behind: <verdict>' where the best ρ is not ahead beyond the seed spread (a
    lowest mean alone is not a best ρ), else ''."""
    if len(target) < 2:
        return ''
    second = min((rho for rho in target if rho != best), key=lambda rho: target[rho]['mean'])
    verdict = spread_verdict(target[second], target[best], short=True)
    gap = target[second]['mean'] - target[best]['mean']
    return '' if 'beyond' in verdict else f"; the next best, ρ = {names[second]}, is {gap:.4f} behind: {verdict}"


def protocol_lines(rows, series, report):
    """write_report's lines for one protocol: every ρ against ρ = 0 (target loss, generic loss, task scores, the
    efficiency multiplier where the reference fit holds) and the best ρ."""
    names = {asked: rho_text(realised, asked) for asked, realised in zip(series['replay_fraction'],
                                                                         series['rho_realised'])}
    members = {name for runs in series['runs'] + series['missing'] for name in runs}  # failed runs: to be named
    runs = [r for r in rows if r['run'] in members]
    target = {e['settings']['replay_fraction']: e for e in seed_average(runs, 'val_loss_target')}
    generic = {e['settings']['replay_fraction']: e for e in seed_average(runs, 'val_loss_generic')}
    base, compared = target[0.0], sorted(rho for rho in target if rho != 0.0)
    best = min(target, key=lambda rho: target[rho]['mean'])
    lines = [f"target loss, no replay  (ρ = {names[0.0]}): {spread_text(base)}"]
    for rho in compared:
        other = target[rho]
        gain = base['mean'] - other['mean']
        lines += [f"target loss, replay     (ρ = {names[rho]}): {spread_text(other)}",
                  f"replay at ρ = {names[rho]} {'lowers' if gain > 0 else 'raises'} the target loss by "
                  f"{abs(gain):.4f} ({100 * abs(gain) / base['mean']:.1f}%): {spread_verdict(base, other, names)}",
                  per_seed_line(runs, 0.0, rho, names=names)]
    by_rho = ', '.join(f"ρ={names[rho]}: {e['mean']:.4f}" for rho, e in sorted(target.items()))
    lines += [f"target loss by ρ: {by_rho}",
              f"best ρ: {names[best]} (target loss {target[best]['mean']:.4f}" + (
                  f"; over {target[best]['n']} of its {target[best]['n'] + len(target[best]['missing'])} runs, no "
                  f"final loss from {', '.join(target[best]['missing'])}" if target[best]['missing'] else '')
              + runner_up_note(target, best, names) + ")"]
    for rho in compared if 0.0 in generic else []:
        if rho in generic:  # reduces or raises only where the difference beats the seed spread, as the target loss
            change = generic[rho]['mean'] - generic[0.0]['mean']
            verdict = spread_verdict(generic[0.0], generic[rho], names)
            if f"{abs(change):.4f}" == '0.0000':
                verdict = 'no change'
            elif verdict.startswith('beyond'):
                effect = 'reduces forgetting of the generic domain' if change < 0 else 'raises the generic loss'
                verdict = f"replay {effect}, {verdict}"
            lines.append(f"generic loss: {generic[0.0]['mean']:.4f} at ρ = {names[0.0]}, {generic[rho]['mean']:.4f} "
                         f"at ρ = {names[rho]} ({change:+.4f}: {verdict})")
    for columns in task_columns(rows).values():  # acc, acc_norm, exact_match per filter: higher is better
        for column, _, _ in columns:
            lines += accuracy_lines(runs, column, names)
    if not isinstance(report, ValueError):
        fit = report['fit']
        notes = [note for note in (fit_caveat(fit), C_BOUND_NOTE if fit['C_at_zero'] else '',
                                   reference_rho_note(report, rows)) if note]
        lines.append(f"efficiency fit over the reference runs: L(D) = {fit['A']:.4g}·D^-{fit['B']:.4g} + "
                     f"{fit['C']:.4g} (R² = {fit['r2']:.3f}" + ''.join(f"; {note}" for note in notes) + ")")
        for rho in compared:
            fixed = efficiency(fit, target[rho]['mean'], base['mean'], base['settings']['target_tokens'])
            lines.append(f"target-data efficiency of ρ = {names[rho]} over ρ = {names[0.0]}: " +
                         (f"{fixed['multiplier']:.2f}x" + multiplier_note(fixed, base, target[rho])
                          if fixed['multiplier'] is not None else
                          "a loss lies outside the fitted range; not extrapolating"))
    return lines


# ---- a sweep's results: results.csv and results.jsonl from its runs (sweep.py writes them) ----------------

def gather(runs, sweep_dir):
    """results.csv and results.jsonl from every finished run's summary.json and log.jsonl (the .jsonl also holds
    each run's evals, its task evals and its stages). Each task of a run's `tasks` adds the columns acc_<task> and
    acc_norm_<task> (its final accuracies), each generation task exact_match_<task>_<filter>; their curves are
    task_evals ([step, acc, acc_norm] or [step, {filter: exact_match}] an eval). replay_fraction is the ρ asked,
    rho_realised the replay share the plan realised; max_iters is the plan's N; forked_from, fork_step and
    steps_computed say where the run really started (its start record, layout.start_args; empty for a run that has
    none)."""
    extra = sorted({k for r in runs for k in r['swept']} - set(RESULT_COLUMNS))
    rows, task_names = [], set()
    for run in runs:
        out = run['config']['out_dir']
        if not os.path.isfile(os.path.join(out, 'summary.json')):
            continue
        row, evals, task_evals, stage_table, choice_tasks = read_finished(run, out, extra)
        rows.append((row, evals, task_evals, stage_table))
        task_names.update(choice_tasks)
    with open(os.path.join(sweep_dir, 'results.csv'), 'w', newline='') as f:
        task_columns = [f'{metric}_{task}' for task in sorted(task_names) for metric in ('acc', 'acc_norm')]
        task_columns += sorted({k for row, *_ in rows for k in row if k.startswith('exact_match_')})
        writer = csv.DictWriter(f, fieldnames=RESULT_COLUMNS + task_columns + extra, restval='')
        writer.writeheader()
        for row, *_ in rows:
            writer.writerow({k: '' if v is None else v for k, v in row.items()})
    with open(os.path.join(sweep_dir, 'results.jsonl'), 'w') as f:
        for row, evals, task_evals, stage_table in rows:
            f.write(json.dumps({**row, 'evals': evals, 'task_evals': task_evals, 'stage_table': stage_table}) + '\n')
    return len(rows)


def read_finished(run, out, extra):
    """gathered_run, or one error line where the run's files are not what train.py and sweep.py write."""
    try:
        return gathered_run(run, out, extra)
    except (ValueError, KeyError, TypeError, AttributeError) as e:  # not JSON, or not what train.py writes
        raise UserError(f"{out}: its summary.json, log.jsonl or started.json is not what train.py and sweep.py "
                        f"write ({type(e).__name__}: {e}): remove its summary.json and start the sweep again to "
                        f"redo the run") from None


def gathered_run(run, out, extra):
    """One finished run's results.csv row, evals, task evals, stage table (plan['stages']: where each stage starts,
    its LR restart and optimizer reset) and multiple-choice tasks, from out/summary.json and out/log.jsonl."""
    with open(os.path.join(out, 'summary.json')) as f:
        summary = json.load(f)
    records = []
    with open(os.path.join(out, 'log.jsonl')) as f:
        for number, line in enumerate(f, 1):
            try:
                records.append(json.loads(line))
            except ValueError as e:  # the parser's own position is within the line: say which line
                raise ValueError(f"log.jsonl line {number}: {e}") from None
    evals = [[r['step'], r['val_loss_target'], r['val_loss_generic']] for r in records if r['kind'] == 'eval']
    task_evals = {}  # task -> [[step, acc, acc_norm], ...], a generation task's [[step, {filter: exact_match}]]
    for r in records:
        if r['kind'] == 'task':
            task_evals.setdefault(r['task'], []).append(
                [r['step'], r['acc'], r['acc_norm']] if 'acc' in r else [r['step'], r['exact_match']])
    final_tasks = summary['final'].get('tasks', {})
    accuracy = {f'{metric}_{task}': numbers[metric] for task, numbers in final_tasks.items()
                for metric in ('acc', 'acc_norm') if metric in numbers}
    accuracy.update({f'exact_match_{task}_{name}': value for task, numbers in final_tasks.items()
                     for name, value in numbers.get('exact_match', {}).items()})
    config, plan = summary['config'], summary['plan']
    asked, realised = replay_of(plan)
    started = layout.read_start(out)
    row = dict(run=run['name'], **run['labels'], seed=config['seed'], data_seed=config['data_seed'],
               mode=config['mode'], lr_schedule=config['lr_schedule'],
               cooldown_fraction=config['cooldown_fraction'],
               replay_fraction=asked, rho_realised=realised, stage2_allocation=plan['alpha'],
               stage2_fraction=plan['delta'], gamma=plan['gamma'], target_tokens=config['target_tokens'],
               target_epochs=config['target_epochs'], max_iters=plan['N'],
               stage2_start=plan['stage2_start'], val_loss_target=summary['final'].get('val_loss_target'),
               val_loss_generic=summary['final'].get('val_loss_generic'),
               steps_computed=plan['N'] - started['fork_step'] if started else None,
               forked_from=started['forked_from'] if started else None,
               fork_step=started['fork_step'] if started else None, out_dir=out,
               **{k: config.get(k) for k in extra}, **accuracy)
    return row, evals, task_evals, plan['stages'], [t for t, numbers in final_tasks.items() if 'acc' in numbers]


def replay_of(plan):
    """(ρ asked, ρ realised) of a plan summary (summary.json's plan): a two-stage plan's replay_fraction and the
    replay share its stage 2 realised after rounding; a stage list asks none and realises its replay_share (the
    generic share of its stages that hold target data)."""
    realised = plan['rho_realised'] if plan['rho_realised'] is not None else plan['replay_share']
    return (plan['rho'], realised) if plan['rho'] is not None else (plan['replay_share'], plan['replay_share'])
