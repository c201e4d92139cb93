"""
Data efficiency of replay, after the paper's "Data efficiency" analysis (Kotha & Liang, arXiv 2603.04964).

Reference runs (no replay, target spread over the whole run, 32 epochs) at unique target budgets D give the law
L(D) = A·D^(−B) + C; a run reaching final target loss L is worth D_eff = (A / (L − C))^(1/B) target tokens, and the
headline multiplier is D_eff(with replay) / D_eff(same protocol without replay) (paper, Flan: 1.87x fine-tuning,
2.06x mid-training). Where the paper's unconstrained fit broke (FineMath, StarCoder: B ≈ 1e-4, C hugely negative)
we enforce A > 0, B > 0, 0 ≤ C < min L, refuse degenerate fits and refuse a loss beyond the fitted loss range (but
for RANGE_TOLERANCE of its span); a D_eff outside the reference budgets is printed as extrapolated. With 3 budgets
the 3 parameters leave no degree of freedom: the curve can pass through every point, and R² is labelled so.

    python efficiency.py SWEEP_DIR     # reads SWEEP_DIR/results.csv (+ results.jsonl for evals)

results.csv: one row per run, empty or non-finite cell = missing (a run without a final loss failed, diverged or did
not finish: it is named, in no mean), text in a numeric column is refused, reference == 1 marks a reference run;
columns named val_*, acc_* and exact_match_* (task scores) are results, every other column but NOT_SETTINGS is a
setting (runs equal in all settings are seeds of one). Runs equal in all settings but ρ, α, δ (and the N and γ a plan
derives from ρ, where N grows with it: max_iters=0) are one protocol, whose best replay run is compared with its best
run without replay.
"""
import csv
import io
import json
import math
import os

import numpy as np

from configurator import UserError, parse_options, run_main

MIN_EXPONENT = 1e-3      # B at or below this: L barely depends on D and D_eff explodes (the paper's degenerate fits)
MIN_R2 = 0.9             # the law must explain this share of the loss variance across budgets, else it fits noise
RANGE_TOLERANCE = 0.01   # effective_data accepts L up to this fraction of the fitted loss span beyond either end
TEXT_COLUMNS = ('run', 'protocol', 'mode', 'lr_schedule', 'forked_from', 'out_dir')
# what sweep.py writes as numbers (and every result column, RESULT_PREFIXES): text there is a hand edit gone wrong
NUMERIC_COLUMNS = ('seed', 'data_seed', 'reference', 'cooldown_fraction', 'replay_fraction', 'rho_realised',
                   'stage2_allocation', 'stage2_fraction', 'gamma', 'target_tokens', 'target_epochs', 'max_iters',
                   'stage2_start', 'steps_computed', 'fork_step')
REQUIRED_COLUMNS = ('run', 'seed')  # every reader names runs, and pairs and averages them by seed
# not settings, so runs differing only in these are seeds of one setting; nor are the results (RESULT_PREFIXES)
NOT_SETTINGS = ('run', 'seed', 'data_seed', 'evals', 'task_evals', 'stage_table', 'rho_realised', 'steps_computed',
                'forked_from', 'fork_step', 'out_dir')  # evals .. stage_table: from results.jsonl; then sweep.py's
# final validation losses, final task scores (acc_<task>, acc_norm_<task>, exact_match_<task>_<filter>)
RESULT_PREFIXES = ('val_', 'acc_', 'exact_match_')
# ρ, α, δ and stage 2's step, or a `stages` list (a column where a sweep varies it): what replay changes
SCHEDULE_KNOBS = ('replay_fraction', 'stage2_allocation', 'stage2_fraction', 'stage2_start', 'stages')
# what a plan derives from ρ when N grows with it (max_iters=0: N = ⌈U·e / (S·(1 − ρ))⌉) and so γ = T/(N·S)
DERIVED_FROM_RHO = ('max_iters', 'gamma')

# ---- reading a sweep ------------------------------------------------------------------------------------------

def parse_cell(column, text):
    """A results.csv cell: None when empty or not finite (NaN, inf: a diverged run), float when numeric, else the
    stripped text; ValueError for text in a numeric column, which would otherwise drop its run unseen."""
    text = (text or '').strip()
    if text == '' or column in TEXT_COLUMNS:
        return text or None
    try:
        value = float(text)
    except ValueError:
        if column in NUMERIC_COLUMNS or column.startswith(RESULT_PREFIXES):
            raise ValueError(f"{column} is {text!r}, not a number") from None
        return text
    return value if math.isfinite(value) else None


def not_a_results_file(path, why):
    return f"{path} is not a results file ({why}): gather it again with `python sweep.py SWEEP_FILE --status=True`"


def read_results_file(path):
    try:
        with open(path, newline='') as f:
            return f.read()
    except UnicodeDecodeError as e:
        raise ValueError(not_a_results_file(path, f"{e.reason} at byte {e.start}")) from None


def load_sweep(sweep_dir):
    """Rows of SWEEP_DIR/results.csv as dicts, each with 'evals' ([[step, target, generic], ...]), 'task_evals'
    ({task: [[step, acc, acc_norm], ...]}, a generation task's [[step, {filter: exact_match}], ...]) and
    'stage_table' (schedule.py's stage table: start, steps, lr, reset_optimizer, ...) from results.jsonl matched by
    run name ([] or {} when the file or the run is absent). Every check (columns, cells, the shapes the plots
    read) runs here, so a reader never meets a malformed file halfway."""
    csv_path, jsonl_path = os.path.join(sweep_dir, 'results.csv'), os.path.join(sweep_dir, 'results.jsonl')
    if not os.path.isfile(csv_path):
        raise ValueError(f"{csv_path} not found (is {sweep_dir} a sweep directory?)")
    rows, reader = [], csv.DictReader(io.StringIO(read_results_file(csv_path)))
    try:
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or REQUIRED_COLUMNS)]  # empty: no runs
        if missing:
            raise ValueError(not_a_results_file(csv_path, f"no column {', '.join(missing)}"))
        first_line = {}  # run -> the line that has it
        for row in reader:
            where = f"line {reader.line_num}, run {row.get('run')}"
            extra = row.pop(None, [])  # DictReader's cells past the header; None: cells short of it
            if extra or None in row.values():  # a cut-off row lost its last cells (a loss may be cut short too)
                cells = sum(v is not None for v in row.values()) + len(extra)
                raise ValueError(not_a_results_file(csv_path, f"{where}: {cells} cells, the header has "
                                                              f"{len(reader.fieldnames)}"))
            if row['run'] in first_line:  # a run twice would count as one more seed
                raise ValueError(not_a_results_file(csv_path, f"{where}: the run is on line {first_line[row['run']]} "
                                                              f"too"))
            first_line[row['run']] = reader.line_num
            try:
                rows.append({k: parse_cell(k, v) for k, v in row.items()})
            except ValueError as e:
                raise ValueError(not_a_results_file(csv_path, f"{where}: {e}")) from None
    except csv.Error as e:
        raise ValueError(not_a_results_file(csv_path, e)) from None
    evals, lines = {}, read_results_file(jsonl_path).splitlines() if os.path.isfile(jsonl_path) else []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line) if line.strip() else {}
        except json.JSONDecodeError as e:
            raise ValueError(f"{jsonl_path} line {number} is not JSON: {e.msg}")
        if isinstance(record, dict) and 'run' in record:
            evals[str(record['run'])] = (record.get('evals') or [], record.get('task_evals') or {},
                                         record.get('stage_table') or [])
            wrong = malformed(*evals[str(record['run'])])
            if wrong:
                raise ValueError(not_a_results_file(jsonl_path, f"line {number}, run {record['run']}: {wrong}"))
    absent = [str(row.get('run')) for row in rows if str(row.get('run')) not in evals]
    if lines and absent:  # its curves would be drawn from the other seeds alone
        raise ValueError(not_a_results_file(jsonl_path, f"no record of run {absent[0]}, which results.csv has"))
    for row in rows:
        row['evals'], row['task_evals'], row['stage_table'] = evals.get(str(row.get('run')), ([], {}, []))
    return rows


def malformed(evals, task_evals, stage_table):
    """What of a results.jsonl record's evals, task_evals and stage_table is not the shape gather writes (and the
    plots index), or None."""
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
    value = lambda v: v is None or number(v)
    if not (isinstance(evals, list) and all(isinstance(e, list) and len(e) >= 3 and number(e[0])
                                            and value(e[1]) and value(e[2]) for e in evals)):
        return "evals is not a list of [step, target loss, generic loss]"
    if not (isinstance(task_evals, dict) and all(isinstance(v, list) and all(
            isinstance(e, list) and len(e) >= 2 and number(e[0]) and (isinstance(e[1], dict) or len(e) >= 3
                                                                      and value(e[1]) and value(e[2])) for e in v)
            for v in task_evals.values())):
        return "task_evals is not {task: [[step, acc, acc_norm] or [step, {filter: exact_match}], ...]}"
    if not (isinstance(stage_table, list) and all(isinstance(s, dict) and number(s.get('start'))
                                                  and number(s.get('steps')) for s in stage_table)):
        return "stage_table is not a list of stages, each with a start and steps"
    return None


def seed_average(rows, column):
    """Per setting (all columns but run/seed names and results), the mean/min/max of `column` over its seeds, in
    first-seen order; rows where `column` is missing are left out of the numbers and named (missing: a failed,
    diverged or unfinished run must not vanish from what the mean is over)."""
    groups, failed = {}, {}
    for row in rows:
        key = tuple((k, v) for k, v in row.items() if k not in NOT_SETTINGS and not k.startswith(RESULT_PREFIXES))
        (groups if isinstance(row.get(column), float) else failed).setdefault(key, []).append(row)
    averaged = []
    for key, members in groups.items():
        values = np.array([row[column] for row in members])
        averaged.append(dict(settings=dict(key), mean=float(values.mean()), min=float(values.min()),
                             max=float(values.max()), n=len(values), runs=[row['run'] for row in members],
                             missing=[row.get('run') for row in failed.get(key, [])]))
    return averaged


def spread_verdict(base, other, names=None, short=False):
    """Whether two seed_average entries differ by more than the seed spread (the larger min–max range of the two).
    No verdict unless both sides measured a spread: one seed, or seeds that gave identical runs (a final value equal
    to the last digit on every seed: what seeds that vary nothing, e.g. `seed` of a loaded model without dropout,
    give) measure none, and a difference beyond a spread not measured says nothing. names: {ρ asked: its text};
    short: the form a line about the same difference appends (an efficiency multiplier)."""
    spread = max(base['max'] - base['min'], other['max'] - other['min'])
    unmeasured = [e for e in (base, other) if e['n'] == 1 or e['max'] == e['min']]
    if short:
        return ('no spread measured' if unmeasured else
                f"the loss difference is {'within' if abs(other['mean'] - base['mean']) <= spread else 'beyond'} "
                "the seed spread")
    if spread == 0:
        return ("one seed: no spread measured, so no verdict" if base['n'] == other['n'] == 1 else
                "seeds gave identical runs: no spread measured, so no verdict")
    if unmeasured:
        rho, n = unmeasured[0]['settings'].get('replay_fraction'), unmeasured[0]['n']
        why = '1 seed' if n == 1 else f"{n} seeds gave identical runs"
        return (f"no spread measured at ρ = {(names or {}).get(rho, format_value(rho))} ({why}), so no verdict"
                if rho is not None else f"no spread measured on one side ({why}), so no verdict")
    if abs(other['mean'] - base['mean']) <= spread:
        return 'within noise: the difference is smaller than the seed spread'
    return f"beyond the seed spread ({spread:.4f})"


def rho_text(realised, asked=None):
    """ρ as a run realised it (4 significant digits), and the ρ asked where rounding moved it: '0.2 (asked 0.25)';
    with no realised ρ recorded (an older results.csv), the one asked, said to be so."""
    if realised is None:
        return f"{asked:.4g} asked (realised unknown)"
    text = f"{realised:.4g}"
    return text + (f" (asked {asked:.4g})" if asked is not None and f"{asked:.4g}" != text else '')


def realised_rho(rows, runs):
    """The mean realised ρ (results.csv's rho_realised) of the named runs, or None when none records it."""
    values = [r['rho_realised'] for r in rows if r['run'] in runs and isinstance(r.get('rho_realised'), float)]
    return sum(values) / len(values) if values else None


def schedule_text(entry, rows):
    """A seed_average entry's ρ (as realised: rho_text) and α, in the paper's symbols: 'ρ=0.2 (asked 0.25), α=1'."""
    asked = entry['settings'].get('replay_fraction')
    if not isinstance(asked, float):
        return describe_schedule(entry['settings'])
    return (f"ρ={rho_text(realised_rho(rows, entry['runs']), asked)}, "
            f"α={format_value(entry['settings'].get('stage2_allocation'))}")


def format_value(value):
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else f"{value:.4g}"
    return str(value)


def describe(settings, keys):
    return ', '.join(f"{key}={format_value(settings.get(key))}" for key in keys)


def describe_schedule(settings):  # in the paper's symbols
    return describe(dict(ρ=settings.get('replay_fraction'), α=settings.get('stage2_allocation')), ('ρ', 'α'))


def varying_keys(settings_list, exclude=()):
    """The setting keys whose value differs between some of the given settings dicts (they label series/groups)."""
    keys = dict.fromkeys(k for settings in settings_list for k in settings if k not in exclude)
    return [k for k in keys if len({format_value(settings.get(k)) for settings in settings_list}) > 1]


def derived_keys(entries):
    """The settings of seed_average entries that vary only as the plan derives them from ρ (DERIVED_FROM_RHO, where N
    grows with ρ: max_iters=0), so runs differing in ρ and these alone are one protocol; none where N or γ varies at
    a fixed ρ and α, as it does when set by hand (a setting of its own then)."""
    varying = varying_keys([e['settings'] for e in entries], exclude=SCHEDULE_KNOBS)
    derived = [k for k in varying if k in DERIVED_FROM_RHO]
    kept = [k for k in varying if k not in derived] + ['stage2_allocation', 'replay_fraction']
    seen = set()
    for entry in entries:
        key = tuple(entry['settings'].get(k) for k in kept)
        if key in seen:
            return []
        seen.add(key)
    return derived

# ---- the fit ----------------------------------------------------------------------------------------------------

def _fit_given_offset(log_D, L, C):
    """For a fixed C: least squares of log(L − C) on log D gives log A and −B. Returns (A, B, squared error in L)."""
    slope, intercept = np.polyfit(log_D, np.log(L - C), 1)
    A, B = math.exp(intercept), -slope
    error = float(np.sum((A * np.exp(-B * log_D) + C - L) ** 2)) if B > 0 else math.inf
    return A, B, error


def fit_power_law(D, L):
    """Fit L(D) = A·D^(−B) + C with A > 0, B > 0, 0 ≤ C < min L. C is searched on a grid over [0, min L) then refined
    by golden section, choosing the C of least squared error in L (loss) space; A and B come, for each C, from a
    linear fit in log space. Returns dict(A, B, C, residuals (L − fitted, per point), loss_range (min L, max L),
    budget_range (min D, max D), budgets (how many distinct D), r2, C_at_zero). Raises ValueError when fewer than 3
    distinct D, when L does not decrease with D, or when the fit is degenerate (B ≤ MIN_EXPONENT, or R² < MIN_R2)."""
    D, L = np.asarray(D, dtype=float).ravel(), np.asarray(L, dtype=float).ravel()
    if D.shape != L.shape or not (np.all(np.isfinite(D)) and np.all(np.isfinite(L)) and np.all(D > 0)):
        raise ValueError("the power-law fit needs as many losses as budgets, all finite, with every D > 0")
    budgets = np.unique(D)
    if len(budgets) < 3:
        raise ValueError(f"the power-law fit needs at least 3 distinct budgets D, got {len(budgets)}")
    mean_loss = [L[D == budget].mean() for budget in budgets]
    if not mean_loss[-1] < mean_loss[0]:
        raise ValueError("the loss does not decrease with D (flat or increasing): no power law to fit")
    log_D, L_min = np.log(D), float(L.min())
    error = lambda C: _fit_given_offset(log_D, L, C)[2]
    grid = L_min * np.linspace(0.0, 1.0, 401)[:-1]
    errors = [error(C) for C in grid]
    best = int(np.argmin(errors))
    if not math.isfinite(errors[best]):
        raise ValueError("the loss does not decrease with D: every C in [0, min L) gives B ≤ 0")
    # golden section between the best grid point's neighbours (the upper end stops just short of min L)
    low, high = grid[max(best - 1, 0)], grid[best + 1] if best + 1 < len(grid) else L_min * (1 - 1e-9)
    shrink = (math.sqrt(5) - 1) / 2
    for _ in range(100):
        left, right = high - shrink * (high - low), low + shrink * (high - low)
        low, high = (low, right) if error(left) <= error(right) else (left, high)
    C = min(((low + high) / 2, grid[best]), key=error)
    A, B, squared_error = _fit_given_offset(log_D, L, C)
    if B <= MIN_EXPONENT:
        raise ValueError(f"degenerate fit: B = {B:.2g} ≤ {MIN_EXPONENT:g}, the loss barely depends on D")
    r2 = 1 - squared_error / float(np.sum((L - L.mean()) ** 2))
    if r2 < MIN_R2:
        raise ValueError(f"degenerate fit: the power law explains {r2:.0%} of the loss variance (< {MIN_R2:.0%})")
    residuals = L - (A * D ** -B + C)
    return dict(A=A, B=B, C=C, residuals=residuals.tolist(), loss_range=(L_min, float(L.max())), r2=r2,
                budget_range=(float(budgets[0]), float(budgets[-1])), budgets=len(budgets), C_at_zero=C < 1e-6 * L_min)


def fit_caveat(fit):
    """What R² is worth: with as many budgets as parameters the curve can pass through every point (R² = 1, residuals
    0) whatever the law, so it measures nothing. '' where degrees of freedom are left."""
    if fit['budgets'] > 3:
        return ''
    return (f"{fit['budgets']} budgets for 3 parameters: the curve can pass through every point, R² says nothing "
            "about the fit")


C_BOUND_NOTE = "C at its bound 0: the unconstrained fit wanted C < 0"


def reference_rho_note(report, rows):
    """'reference runs at ρ = ...' where they replay (the paper's spread their target over the whole run, at
    ρ = 1 − γ): D_eff is then counted in that recipe's data; '' for reference runs without replay."""
    rho = realised_rho(rows, {name for point in report['reference'] for name in point['runs']})
    return f"reference runs at ρ = {rho:.4g}" if rho else ''


def multiplier_note(result, base, other):
    """The caveats an efficiency result's multiplier carries, ' (...)': a D_eff beyond the reference budgets, and
    whether the loss difference behind it beats the seed spread (base, other: its seed_average entries)."""
    notes = ['extrapolated beyond the reference budgets'] * bool(result['extrapolated'])
    return f" ({'; '.join(notes + [spread_verdict(base, other, short=True)])})"


def failed_runs(rows, column='val_loss_target'):
    """The runs without a final `column`, as one line (or ''): they are in no mean, so they are named."""
    names = [str(r.get('run')) for r in rows if not isinstance(r.get(column), float)]
    return (f"runs with no final {column} (failed, diverged or unfinished; in no mean): {', '.join(names)}"
            if names else '')


def effective_data(fit, L):
    """D_eff = (A / (L − C))^(1/B); ValueError when L is outside the fitted loss range (beyond RANGE_TOLERANCE of
    its span), rather than extrapolating far; efficiency labels the D_eff that lands beyond the reference budgets."""
    low, high = fit['loss_range']
    slack = RANGE_TOLERANCE * (high - low)
    if not (low - slack <= L <= high + slack) or L <= fit['C']:
        raise ValueError(f"loss {L:.4f} is outside the fitted loss range [{low:.4f}, {high:.4f}]: not extrapolating")
    return (fit['A'] / (L - fit['C'])) ** (1 / fit['B'])


def efficiency(fit, L_with, L_without, D0):
    """D_eff(L_with)/D0, D_eff(L_without)/D0 and the paper's multiplier D_eff(with replay)/D_eff(without), as a dict.
    A side whose loss is outside the fitted range is None (not extrapolated), and then so is the multiplier; one
    whose D_eff lies beyond the reference budgets (RANGE_TOLERANCE lets a loss just past the range through, and the
    curve need not meet the end points) is named in 'extrapolated'."""
    result = dict(with_replay=None, without_replay=None, multiplier=None, extrapolated=[])
    low, high = fit['budget_range']
    for side, L in (('with_replay', L_with), ('without_replay', L_without)):
        try:
            D_eff = effective_data(fit, L)
        except ValueError:
            continue
        result[side] = D_eff / D0
        if not low <= D_eff <= high:
            result['extrapolated'].append(side)
    if result['with_replay'] is not None and result['without_replay'] is not None:
        result['multiplier'] = result['with_replay'] / result['without_replay']
    return result

# ---- a sweep's report ---------------------------------------------------------------------------------------------

def efficiency_report(rows):
    """Fit the reference runs (seed means per target_tokens) and compare, in every group of non-reference runs
    that share all settings but ρ, α, δ (and what the plan derives from ρ: derived_keys), the best ρ > 0 setting
    with the best ρ = 0 one (lowest seed-mean final target loss). Returns dict(fit, reference=[seed-averaged
    points], comparisons=[...])."""
    reference = [p for p in seed_average([r for r in rows if r.get('reference') == 1], 'val_loss_target')
                 if isinstance(p['settings'].get('target_tokens'), float)]
    if not reference:
        raise ValueError("no reference runs (reference == 1 with target_tokens and val_loss_target): nothing to fit")
    # target_epochs may vary with D: references that hold the number of target sequences fixed see D x the data
    # 1/D as often (config/sweep_demo.py); the paper's hold the epochs fixed
    differing = varying_keys([p['settings'] for p in reference],
                             exclude=('target_tokens', 'target_epochs', 'gamma') + SCHEDULE_KNOBS)
    if differing:
        raise ValueError(f"the reference runs differ in {', '.join(differing)}, not only in target_tokens")
    reference.sort(key=lambda p: p['settings']['target_tokens'])
    fit = fit_power_law([p['settings']['target_tokens'] for p in reference], [p['mean'] for p in reference])
    settings = [e for e in seed_average([r for r in rows if r.get('reference') != 1], 'val_loss_target')
                if isinstance(e['settings'].get('replay_fraction'), float)
                and isinstance(e['settings'].get('target_tokens'), float)]
    ignored, groups = SCHEDULE_KNOBS + tuple(derived_keys(settings)), {}
    for entry in settings:
        groups.setdefault(tuple((k, v) for k, v in entry['settings'].items() if k not in ignored), []).append(entry)
    comparisons = []
    for group, entries in groups.items():
        replay = [e for e in entries if e['settings']['replay_fraction'] > 0]
        plain = [e for e in entries if e['settings']['replay_fraction'] == 0]
        if replay and plain:
            replay_run, plain_run = min(replay, key=lambda e: e['mean']), min(plain, key=lambda e: e['mean'])
            D0 = dict(group)['target_tokens']
            comparisons.append(dict(group=dict(group), D0=D0, replay_run=replay_run, plain_run=plain_run,
                                    **efficiency(fit, replay_run['mean'], plain_run['mean'], D0)))
    varying = varying_keys([c['group'] for c in comparisons], exclude=('protocol', 'mode', 'target_tokens'))
    for c in comparisons:
        c['label'] = describe(c['group'], ['protocol', 'mode', 'target_tokens'] + varying)
    return dict(fit=fit, reference=reference, comparisons=comparisons)


def main(argv):
    sweep_dir = parse_options(argv, {}, positional=['sweep_dir'], usage='python efficiency.py SWEEP_DIR',
                              doc=__doc__)['sweep_dir']
    try:
        rows = load_sweep(sweep_dir)
        report = efficiency_report(rows)
    except (ValueError, OSError) as e:
        raise UserError(str(e)) from None
    fit, caveat, reference_note = report['fit'], fit_caveat(report['fit']), reference_rho_note(report, rows)
    print(f"reference fit L(D) = A·D^-B + C (D: unique target tokens; C by least squares in loss space), "
          f"R² = {fit['r2']:.4f}" + (f" ({caveat})" if caveat else '') +
          f"\n  A = {fit['A']:.6g}   B = {fit['B']:.6g}   C = {fit['C']:.6g}"
          + (f"   ({C_BOUND_NOTE})" if fit['C_at_zero'] else '')
          + (f"\n  {reference_note}" if reference_note else ''))
    print(f"  {'D':>14} {'seeds':>5} {'L mean':>9} {'fitted':>9} {'residual':>9}")
    for point, residual in zip(report['reference'], fit['residuals']):
        print(f"  {format_value(point['settings']['target_tokens']):>14} {point['n']:>5} {point['mean']:>9.4f} "
              f"{point['mean'] - residual:>9.4f} {residual:>+9.4f}")
    if not report['comparisons']:
        print("no group of runs has both a ρ > 0 and a ρ = 0 setting to compare")
    for c in report['comparisons']:
        print(c['label'] + ':')
        for side, run in (('with_replay', c['replay_run']), ('without_replay', c['plain_run'])):
            failed = f" ({', '.join(run['missing'])}: no final loss)" if run['missing'] else ''
            print(f"  {side.replace('_', ' '):<15} {schedule_text(run, rows)}: L = {run['mean']:.4f} "
                  f"over {run['n']} seed(s){failed}, D_eff/D0 = "
                  + ("outside the fitted range: not extrapolating" if c[side] is None else f"{c[side]:.3f}"
                     + (" (extrapolated beyond the reference budgets)" if side in c['extrapolated'] else '')))
        print("  multiplier D_eff(with)/D_eff(without) = "
              + ("n/a (outside the fitted range)" if c['multiplier'] is None else f"{c['multiplier']:.3f}x"
                 + multiplier_note(c, c['plain_run'], c['replay_run'])))
    failed = failed_runs(rows)
    if failed:
        print(failed)


if __name__ == '__main__':
    run_main(main)
