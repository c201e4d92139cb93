"""The plan-identity table: for every run config in config/ and every run of every sweep file, a digest of what
each step does: (stage, lr, optimizer reset, eval before it, is_target, ids), plus the eval after the last step.
tests/data/plan_table.json was written by `python tests/plan_table.py --write` run against the planner as it was
before plans became stage lists (commit c3c5d5c: schedule.py, sweep.py and config/ of that commit); test_plan_identity.py recomputes it with today's planner. Split sizes
are fixed here, not read from prepared data (whose size depends on the Python version)."""
import glob
import hashlib
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
import schedule  # noqa: E402
import sweep  # noqa: E402
from configurator import load_config  # noqa: E402

TABLE = os.path.join(ROOT, 'tests', 'data', 'plan_table.json')
# (target windows, generic windows) for a run that needs U pool windows and G generic windows: big enough that
# nothing repeats in any config, and a small split (the pool plus 7 windows; a third of the generic windows the run
# needs) that makes every run reshuffle its generic data (the repeat path)
SPLITS = {'big': lambda U, G: (65536, 1_500_000), 'small': lambda U, G: (U + 7, G // 3 + 1)}


def run_configs():
    """(name, config) of every run config and every sweep run, paths relative to the repo root."""
    out = []
    for path in sorted(glob.glob(os.path.join(ROOT, 'config', '*.py'))):
        name = os.path.basename(path)
        if name.startswith(('model_', 'sweep_')):
            continue
        out.append((f'config/{name}', load_config([os.path.relpath(path, ROOT)])))
    for path in sorted(glob.glob(os.path.join(ROOT, 'config', 'sweep_*.py'))):
        spec, _, overrides = sweep.parse_args([os.path.relpath(path, ROOT)])
        for run in sweep.expand(spec, overrides):
            out.append((f"{os.path.relpath(path, ROOT)}:{run['name']}", run['config']))
    return out


def plan_digest(config, target_windows, generic_windows):
    plan = schedule.make_plan(config, target_windows, generic_windows)
    h = hashlib.sha256()
    for t in range(plan['N']):
        is_target, ids = schedule.step_batch(plan, t)
        h.update(f"{t}|{schedule.stage_of(plan, t)}|{schedule.lr_at(plan, t)!r}|"
                 f"{bool(schedule.resets_optimizer_at(plan, t))}|{bool(schedule.evals_at(plan, t))}|".encode())
        h.update(is_target.astype(bool).tobytes())
        h.update(ids.astype('int64').tobytes())
    h.update(f"end|{bool(schedule.evals_at(plan, plan['N']))}".encode())
    return h.hexdigest()


def table():
    rows, done = {}, {}
    for name, config in run_configs():
        plan = schedule.make_plan(config)
        for split, sizes in SPLITS.items():
            windows = sizes(plan['U'], plan['generic_total'])
            # sweep files share runs (the reference runs are in several): each distinct plan is digested once
            key = json.dumps([{k: v for k, v in config.items() if k != 'out_dir'}, windows], sort_keys=True)
            if key not in done:
                done[key] = plan_digest(config, *windows)
            rows[f'{name}|{split}'] = done[key]
    return rows


if __name__ == '__main__':
    if sys.argv[1:] != ['--write']:
        sys.exit("usage: python tests/plan_table.py --write")
    os.chdir(ROOT)
    with open(TABLE, 'w') as f:
        json.dump(table(), f, indent=1, sort_keys=True)
