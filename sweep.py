"""
sweep.py: run a grid of train.py runs, computing the steps their plans share only once.

    python sweep.py config/sweep_midtrain.py [--key=value ...] [--gpus=0,1,2,3] [--gpus_per_run=1] [--jobs=1]
                    [--sweep_dir=out/x] [--dry_run=True] [--share=False] [--min_fork_step=0]
    python sweep.py config/sweep_midtrain.py --launcher=slurm --partition=gpu [--account=..] [--time=1440]
                    [--nodes=1] [--gpus_per_node=0] [--cpus_per_task=0] [--mem_gb=0] [--sbatch="{'qos': 'high'}"]
                    [--setup="['source .venv/bin/activate']"]            # submit the runs as SLURM jobs (slurm.py)
    python sweep.py config/sweep_midtrain.py --status=True     # each run's state; gathers results.csv
    python sweep.py config/sweep_midtrain.py --cancel=True     # cancel the sweep's queued and running jobs

A sweep file is plain Python that sets:
    include = ['config/sweep_reference.py']               # other sweep files read first (optional; their
                                                          # values are visible here: runs = [...] + runs)
    base = ['config/flan_midtrain.py']                    # config files every run starts from
    overrides = {'max_iters': 1024}                       # train.py keys set for every run
    grid = {'replay_fraction': [0, .5], 'seed': [1, 2]}   # cartesian product over these keys
    runs = [{}]                      # explicit runs, each crossed with the grid; a run may also carry the labels
                                     # 'protocol' (a group name, e.g. 'reference') and 'reference' (1 = a run of
                                     # the efficiency fit), which go to results.csv, not to train.py
    sweep_dir = 'out/sweep'          # runs go to sweep_dir/<name>, named from the values that vary
`--key=value` sets a train.py key for every run (e.g. --max_iters=100); sweep options are the ones listed above.

Prefix sharing. schedule.prefix_hashes(config, plan)[k] digests everything that fixes a run's state after k
steps: its non-schedule config, and for every step before k the ids it feeds, its LR, optimizer reset and evals.
Two runs with equal hashes at k reach the same weights, optimizer state and log up to k, so the second one forks
from a checkpoint of the first at k (train.py init_from='resume' with resume_from=that checkpoint; train.py
checks the hash again) instead of recomputing those steps. Runs form a tree: each forks from the run it shares
the longest prefix with (a maximum spanning tree, built greedily). A mid-training ρ sweep at α=1 with WSD shares
everything before its earliest stage 2. On CPU the forked runs are bit-identical to runs from scratch
(tests/test_sweep.py); --share=False turns sharing off.

Finished runs (summary.json present) are skipped, a run that crashed resumes from its own ckpt.pt, and every
summary is gathered into sweep_dir/results.csv and results.jsonl (one row per run, evals included in the .jsonl;
analysis.gather). A sweep that grows (runs added to a finished one) forks its new runs only from checkpoints that
exist (a finished run's kept ckpt_<k>.pt), else recomputes the shared prefix once in a new run, else runs from
scratch; each run records where it really started (<run>/started.json: forked_from, fork_step), and results.csv's
steps_computed, the dry run's total and the report's compute line count those steps.

Seeds: `seed` in a grid or run sets train.py's seed (init, dropout); for runs that load their weights with dropout
0 it sets data_seed too, the only randomness they have (seed_keys; the sweep prints which). The sweep prints each
run's realised ρ (with the one asked where rounding moved it), and as runs end, its progress in steps and an ETA.

Launchers. `local` (the default, launch.py) runs train.py here: one run at a time, one per GPU group of --gpus (under
torchrun when --gpus_per_run > 1), or --jobs CPU runs side by side; a fork starts when its parent finishes; `kill`
stops the sweep and its runs. `slurm` (slurm.py) submits each run as SLURM jobs through submitit and returns: a run
is split at the steps other runs fork from, each piece one job that waits for the one before with `afterok`; the
jobs are recorded in sweep_dir/jobs.json for --status and --cancel. Its options: docs/sweeps.md ("Resources").
--min_fork_step: a run forks only from a run it shares at least this many steps with (0 = 1 step locally; under
SLURM, max_iters / 16 of the forking run, since every fork point costs its parent one more wait in the queue).
"""
import csv
import itertools
import json
import os
import signal

import layout
import schedule
import slurm
from launch import execute, rho_note, stop_runs
from analysis import gather, read_finished, replay_of
from configurator import (DEFAULTS, UserError, check_rules, check_value, load_config, parse_value, print_help_if_asked,
                          read_config_file, run_main, split_argv)
from sources import split_sizes

SWEEP_FILE_KEYS = {'base': [], 'overrides': {}, 'grid': {}, 'runs': [{}], 'sweep_dir': 'out/sweep'}
OPTIONS = {'gpus': '', 'gpus_per_run': 1, 'jobs': 1, 'dry_run': False, 'share': True, 'sweep_dir': '',
           'min_fork_step': 0, 'launcher': 'local', 'status': False, 'cancel': False,
           # --launcher=slurm only (slurm.py)
           'partition': '', 'account': '', 'time': 1440, 'nodes': 1, 'gpus_per_node': 0, 'cpus_per_task': 0,
           'mem_gb': 0, 'sbatch': {}, 'setup': []}
# what each option's value must be (configurator.check_rules): nothing may wait for a resource that cannot exist
RULES = dict(gpus='GPU indices', gpus_per_run='0 or more', jobs='at least 1', min_fork_step='0 or more',
             launcher=('local', 'slurm'), sweep_dir='an output directory', time='at least 1', nodes='at least 1',
             gpus_per_node='0 or more', cpus_per_task='0 or more', mem_gb='0 or more')
LOCAL_OPTIONS = ('gpus', 'jobs')
SLURM_OPTIONS = ('partition', 'account', 'time', 'nodes', 'gpus_per_node', 'cpus_per_task', 'mem_gb', 'sbatch', 'setup')
LABELS = ('protocol', 'reference')
SHORT_NAMES = {'replay_fraction': 'rho', 'stage2_allocation': 'alpha', 'stage2_fraction': 'delta',
               'cooldown_fraction': 'cooldown', 'target_tokens': 'D', 'target_epochs': 'e', 'learning_rate': 'lr',
               'stage2_learning_rate': 'lr2', 'max_iters': 'N'}


def parse_args(argv):
    """Split argv into the sweep file, sweep options and train.py overrides (configurator's command line: --help,
    --key=value or --key value, bare booleans)."""
    print_help_if_asked(argv, __doc__)
    items = split_argv(argv, {**DEFAULTS, **OPTIONS})
    files = [text for key, text, _ in items if key is None]
    if len(files) != 1:
        raise UserError("usage: python sweep.py SWEEP_FILE.py [--key=value ...] (exactly one sweep file)")
    options, overrides = dict(OPTIONS), {}
    for key, text, where in items:
        if key in OPTIONS:
            options[key] = option_value(key, text, where)
        elif key is not None:
            overrides[key] = check_value(key, parse_value(text), where, {**DEFAULTS, **OPTIONS})  # hints: both
    if options['launcher'] not in ('local', 'slurm'):
        raise UserError(f"--launcher={options['launcher']} is not a launcher: use 'local' (the default) or 'slurm'")
    check_rules(options, RULES, prefix='--')
    gpus = [g for g in options['gpus'].split(',') if g.strip()]
    if gpus and not 1 <= options['gpus_per_run'] <= len(gpus):
        raise UserError(f"--gpus_per_run={options['gpus_per_run']} must be between 1 and the {len(gpus)} GPU(s) of "
                        f"--gpus={options['gpus']}: no run could ever start")
    given = {key for key, _, _ in items if key is not None}
    wrong = [k for k in (SLURM_OPTIONS if options['launcher'] == 'local' else LOCAL_OPTIONS) if k in given]
    if wrong:
        raise UserError(f"--{wrong[0]} is an option of the {'slurm' if options['launcher'] == 'local' else 'local'}"
                        f" launcher: {'add --launcher=slurm' if options['launcher'] == 'local' else 'drop it'}")
    sweep = dict(SWEEP_FILE_KEYS)
    for key, value in read_config_file(files[0], include_key='include').items():  # its base: the runs' configs
        if key not in SWEEP_FILE_KEYS:
            raise UserError(f"sweep file {files[0]} sets unknown key '{key}' (sweep files set: "
                            f"{', '.join(SWEEP_FILE_KEYS)})")
        sweep[key] = value
    sweep['sweep_dir'] = options['sweep_dir'] or sweep['sweep_dir']
    check_sweep_file(files[0], sweep)
    check_rules(sweep, dict(sweep_dir='an output directory'))
    return sweep, options, overrides


def check_sweep_file(path, sweep):
    """The shapes expand() reads, each error naming the key (run names and out_dir: expand)."""
    shapes = dict(base=(list, str, "a list of config files, e.g. base = ['config/paper.py']"),
                  overrides=(dict, None, "a dict of config keys, e.g. overrides = {'max_iters': 100}"),
                  grid=(dict, None, "a dict of lists, e.g. grid = {'replay_fraction': [0, 0.5]}"),
                  runs=(list, dict, "a list of dicts, e.g. runs = [dict(name='a', replay_fraction=0.5)]"))
    for key, (kind, item, example) in shapes.items():
        if not isinstance(sweep[key], kind) or item and not all(isinstance(x, item) for x in sweep[key]):
            raise UserError(f"sweep file {path}: {key} must be {example}")
    for key, values in sweep['grid'].items():
        if not isinstance(values, (list, tuple)) or not values:
            raise UserError(f"sweep file {path}: grid[{key!r}] = {values!r} must be a non-empty list of values")
    for i, run in enumerate(sweep['runs']):  # the labels go to results.csv: a group name and a 0/1 flag
        for key, ok, what in (('protocol', isinstance(run.get('protocol', ''), str), 'a string (a group name)'),
                              ('reference', run.get('reference', 0) in (0, 1),
                               '0 or 1 (1: a run of the efficiency fit)')):
            if not ok:
                raise UserError(f"sweep file {path}: runs[{i}] {key}={run[key]!r} must be {what}")
    if not isinstance(sweep['sweep_dir'], str) or not sweep['sweep_dir'].strip():
        raise UserError(f"sweep file {path}: sweep_dir={sweep['sweep_dir']!r} must name the directory the runs go "
                        f"to, e.g. sweep_dir = 'out/my_sweep' (or give --sweep_dir)")


def option_value(key, text, where):
    """--key=text for a sweep option, typed like its default (check_value), except that a string option keeps the
    text as it is and a lone string is the one item of a list option (--setup='source .venv/bin/activate')."""
    default = OPTIONS[key]
    if isinstance(default, str):
        return text
    value = parse_value(text)
    if isinstance(default, list) and isinstance(value, str):
        value = [value]  # one setup line
    return check_value(key, value, where, OPTIONS)


def expand(sweep, cli_overrides):
    """Every run as (name, labels, config): explicit runs x grid, over base files and overrides."""
    grid_keys = list(sweep['grid'])
    combos = list(itertools.product(*(sweep['grid'][k] for k in grid_keys)))
    specs = []
    for run in sweep['runs']:
        for combo in combos:
            settings = {**sweep['overrides'], **{k: v for k, v in run.items() if k not in LABELS + ('name',)},
                        **dict(zip(grid_keys, combo))}
            specs.append((run, {**settings, **cli_overrides}))
    # name each run by the values that vary across the sweep
    varying = [k for k in dict.fromkeys(k for _, s in specs for k in s)
               if len({repr(s.get(k)) for _, s in specs}) > 1]
    runs, names = [], set()
    for run, settings in specs:
        name = run.get('name') or '_'.join(
            ([run['protocol']] if run.get('protocol') else []) +
            [f"{SHORT_NAMES.get(k, k)}{settings.get(k)}" for k in varying if k in settings]) or 'run'
        if name in names:
            raise UserError(f"two runs of the sweep are both named {name!r}: give them 'name' or vary a key")
        if not isinstance(name, str) or name in ('.', '..') or '/' in name or os.sep in name:
            raise UserError(f"run name {name!r} is not a plain directory name (a run writes to sweep_dir/<its "
                            f"name>): name the run yourself, runs = [dict(name=..., ...)]")
        if 'out_dir' in settings:
            raise UserError(f"sweep run {name} sets out_dir={settings['out_dir']!r}, but a run writes to "
                            f"sweep_dir/<its name>: drop it (and set sweep_dir, or --sweep_dir)")
        names.add(name)
        config = dict(load_config(sweep['base']))
        for key, value in settings.items():
            config[key] = check_value(key, value, f"sweep run {name}")
        config['out_dir'] = os.path.join(sweep['sweep_dir'], name)
        seeded = seed_keys(config) if 'seed' in settings else []
        if 'data_seed' in seeded and 'data_seed' not in settings:
            config['data_seed'] = config['seed']
        if config['max_iters'] == 0:  # mode='mixed' derives N from ρ: the sweep's step counts need it
            config['max_iters'] = schedule.make_plan(config)['N']
        labels = {'protocol': run.get('protocol', ''), 'reference': int(bool(run.get('reference', 0)))}
        runs.append(dict(name=name, labels=labels, config=config, seed_keys=seeded))
    return runs


def seed_keys(config):
    """The train.py keys a sweep's `seed` sets in a run. `seed` draws the model's init and dropout, so in a run that
    loads its weights (init_from a checkpoint or a model directory) with dropout 0 it would change nothing: there it
    sets data_seed too (the target pool, the target order and the generic permutation: all that varies such a run),
    unless the sweep sets data_seed itself. A run from scratch keeps the paired design: its seeds share the data
    order and differ in init (and dropout)."""
    loads_weights = config['init_from'] not in ('scratch', 'resume')
    return ['seed', 'data_seed'] if loads_weights and config['dropout'] == 0 else ['seed']


def seeds_note(runs):
    """What a sweep's seeds vary, one line (None when no run sets `seed`)."""
    kinds = {tuple(r['seed_keys']) for r in runs if r['seed_keys']}
    if not kinds:
        return None
    why = {('seed',): "seed sets seed (model init and dropout)",
           ('seed', 'data_seed'): "seed sets seed and data_seed (these runs load their weights and have dropout 0, "
                                  "so only the data order varies: target pool, target order, generic permutation)"}
    return "seeds: " + "; ".join(why[k] for k in sorted(kinds))


def shared_prefix(a, b):
    """The largest k with a[k] == b[k] (hashes are cumulative: equal at k means equal at every step before)."""
    lo, hi = -1, min(len(a), len(b)) - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[mid] == b[mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def fork_tree(hashes, min_fork, done=None, kept=None, continues_after=None):
    """parent[i], fork_step[i] (None, 0 for a root) and a run order: a greedy maximum spanning tree over shared
    prefixes, so each run forks from the placed run it shares the most steps with, at a checkpoint that exists or
    will. Finished runs (done[i]) come first, as roots: they serve forks only at the checkpoints they kept (kept[i]:
    steps), so a sweep grown after its checkpoints were removed recomputes the prefix in one new run (or each new
    run from scratch) rather than promising forks from files that are gone. Without finished runs the tree is
    rooted at run 0. A run still to compute serves the steps after its own fork step and after
    continues_after[i] (the last step its log holds when it continues its own checkpoint, else -1), and its kept
    checkpoints before those; an earlier shared prefix is taken from its ancestors, which share it too. Run j forks
    only at min_fork[j] steps or more."""
    n = len(hashes)
    done, kept = done or [False] * n, kept or [set()] * n
    continues_after = continues_after or [-1] * n
    parent, fork_step = [None] * n, [0] * n
    placed = [i for i in range(n) if done[i]] or [0]
    best = [(0, None)] * n

    def fork_point(i, j):
        k = shared_prefix(hashes[i], hashes[j])
        if not done[i] and k > max(fork_step[i], continues_after[i]):
            return k  # run i computes step k itself and keeps a checkpoint there
        return max((step for step in kept[i] if step <= k), default=0)

    def offer(i):  # run i was placed: it can serve forks at the steps fork_point allows
        for j in range(n):
            if j not in placed:
                k = fork_point(i, j)
                if k >= max(1, min_fork[j]):
                    best[j] = max(best[j], (k, i), key=lambda b: b[0])
    for i in placed:
        offer(i)
    order = list(placed)
    while len(placed) < n:
        i = max((j for j in range(n) if j not in placed), key=lambda j: (best[j][0], -j))
        fork_step[i], parent[i] = best[i]
        placed.append(i)
        order.append(i)
        offer(i)
    return parent, fork_step, order


def plan_sweep(sweep, options, cli_overrides):
    """The sweep's runs, each with its config, steps (the plan's N), ρ (asked, realised), parent, fork step and
    steps computed, and the order to start them. A finished run's fork and steps are the ones it recorded when it
    started (None when it has no start record); it serves forks only from the checkpoints it kept."""
    runs = expand(sweep, cli_overrides)
    swept = set(sweep['grid']) | {k for r in sweep['runs'] for k in r if k not in LABELS + ('name',)}
    hashes = []
    for run in runs:
        config = run['config']
        if config['stop_after']:  # its runs would end unfinished, and the sweep waits for finished ones
            raise UserError(f"sweep run {run['name']} sets stop_after={config['stop_after']}: a sweep runs every run "
                            f"to its end; drop it (kill or Ctrl-C stops a sweep, and the same command resumes it)")
        try:
            plan = schedule.make_plan(config, *split_sizes(config))
        except UserError as e:
            raise UserError(f"sweep run {run['name']}: {e}") from None
        hashes.append(schedule.prefix_hashes(config, plan) if options['share'] else [run['name']])
        run.update(swept=swept, done=os.path.isfile(os.path.join(config['out_dir'], 'summary.json')),
                   steps=plan['N'], rho=replay_of(schedule.summarize(config, plan)))
        if run['done']:
            check_finished(run)
    # every fork point splits a SLURM job in two (one more wait in the queue): there, fork only where it saves much
    min_fork = [options['min_fork_step'] or (max(1, r['steps'] // 16) if options['launcher'] == 'slurm' else 1)
                for r in runs]
    outs = [r['config']['out_dir'] for r in runs]
    continues_after = [(layout.last_step(out) or 0) if layout.latest(out) else -1 for out in outs]
    parent, fork_step, order = fork_tree(hashes, min_fork, [r['done'] for r in runs],
                                         [layout.kept_steps(out) for out in outs], continues_after)
    for i, run in enumerate(runs):
        try:
            started = layout.read_start(outs[i]) if run['done'] else None
        except ValueError as e:
            raise UserError(str(e)) from None
        if run['done']:  # what it recorded when it started, not what this tree would make of it now
            run.update(parent=None, fork_step=started['fork_step'] if started else None,
                       forked_from=started['forked_from'] if started else None,
                       steps_computed=run['steps'] - started['fork_step'] if started else None)
            continue
        run.update(parent=parent[i], fork_step=fork_step[i],
                   forked_from=runs[parent[i]]['name'] if parent[i] is not None else '',
                   steps_computed=run['steps'] - fork_step[i])
        if parent[i] is not None and not runs[parent[i]]['done']:  # the parent keeps a checkpoint at the fork step
            steps = runs[parent[i]]['config']['checkpoint_steps']
            runs[parent[i]]['config']['checkpoint_steps'] = sorted(set(steps) | {fork_step[i]})
    return runs, order


# keys that say where a run's files go or how it is computed, not what it computes: a finished run is reused
# whatever they are now (resume_from and init_from='resume' are how a fork starts)
NOT_RESULTS = set(schedule.IO_KEYS) - {'init_from'} | {
    'overwrite', 'log_interval', 'log_batch_ids', 'device', 'compile', 'backend', 'parallel',
    'activation_checkpointing', 'dist_timeout_s'}


def check_finished(run):
    """A finished run is reused only as what this sweep asks of it (its config.py, as sweep.py wrote it at its
    start, against the run's config now), and its files must be readable: both before anything runs."""
    out = run['config']['out_dir']
    read_finished(run, out, [])  # one error line where summary.json or log.jsonl is broken
    path = os.path.join(out, 'config.py')
    if not os.path.isfile(path):
        return  # not started by sweep.py: nothing to compare with
    try:
        then = {**DEFAULTS, **read_config_file(path)}
    except UserError:
        raise UserError(f"{path} is not the config sweep.py wrote for run {run['name']}: restore it, or remove "
                        f"{out} to redo the run") from None
    same = lambda a, b: json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)
    changed = [f"{k} {then.get(k)!r} -> {v!r}" for k, v in run['config'].items()
               if k not in NOT_RESULTS and not same(then.get(k), v)]
    if changed:
        raise UserError(f"sweep run {run['name']} finished with other settings than this sweep gives it now "
                        f"({'; '.join(changed[:3])}{'; ...' if len(changed) > 3 else ''}): its results would be "
                        f"reported as this sweep's; restore the settings, give this sweep another sweep_dir, or "
                        f"remove {out} to redo the run")


def gathered_runs(sweep_dir):
    """The run names in sweep_dir/results.csv (none when it is absent or unreadable: gathering rewrites it)."""
    try:
        with open(os.path.join(sweep_dir, 'results.csv'), newline='') as f:
            return {row.get('run') for row in csv.DictReader(f)}
    except (OSError, ValueError, csv.Error):
        return set()


def main(argv):
    sweep, options, cli_overrides = parse_args(argv)
    if options['status'] or options['cancel']:
        options.update(slurm.submitted_options(sweep['sweep_dir']))  # the tree its jobs were made from
    runs, order = plan_sweep(sweep, options, cli_overrides)
    if options['cancel']:
        slurm.cancel(sweep['sweep_dir'])
        return
    if options['status']:
        slurm.status(runs, order, sweep['sweep_dir'])
        gone = sorted(gathered_runs(sweep['sweep_dir']) & {r['name'] for r in runs if not r['done']})
        if gone:  # their rows may be all that is left of them
            print(f"results.csv kept as it is: it holds {len(gone)} run(s) of this sweep that are no longer finished "
                  f"({', '.join(gone)}: no summary.json); run the sweep to redo them, or remove results.csv to "
                  f"gather the finished runs alone")
        elif os.path.isdir(sweep['sweep_dir']):
            n = gather(runs, sweep['sweep_dir'])
            print(f"gathered {n} finished runs into {sweep['sweep_dir']}/results.csv and results.jsonl")
        return
    from_scratch = sum(r['steps'] for r in runs)
    shared = sum(r['steps_computed'] for r in runs if r['steps_computed'] is not None)
    unknown = sum(r['steps_computed'] is None for r in runs)
    print(f"sweep {sweep['sweep_dir']}: {len(runs)} runs, {shared} steps with prefix sharing instead of "
          f"{from_scratch} ({from_scratch - shared} saved); {sum(r['done'] for r in runs)} already done"
          + (f" ({unknown} of them recorded no start: their steps are not counted)" if unknown else ''))
    if seeds_note(runs):
        print(seeds_note(runs))
    for i in order:
        run = runs[i]
        how = (f"fork of {run['forked_from']} at step {run['fork_step']}" if run['forked_from'] else
               "from scratch" if run['forked_from'] == '' else "start not recorded")
        steps = '?' if run['steps_computed'] is None else run['steps_computed']
        print(f"  {run['name']}: {how}, {steps} steps{rho_note(run)}{' (done)' if run['done'] else ''}")
    if options['launcher'] == 'slurm':
        slurm.submit(runs, order, sweep['sweep_dir'], options)
        return
    if options['dry_run']:
        return
    os.makedirs(sweep['sweep_dir'], exist_ok=True)
    previous = signal.signal(signal.SIGTERM, stop_runs)  # no run outlives the sweep (Ctrl-C reaches them itself)
    try:
        failed = execute(runs, order, options)
    finally:
        signal.signal(signal.SIGTERM, previous)
    n = gather(runs, sweep['sweep_dir'])
    print(f"gathered {n} runs into {sweep['sweep_dir']}/results.csv and results.jsonl")
    if failed:
        raise UserError(f"{len(failed)} run(s) failed: {', '.join(failed)} (see their stdout.log); rerun the same "
                        f"command to retry them")


if __name__ == '__main__':
    run_main(main, interrupted='interrupted: the runs were stopped; the same command resumes them')
