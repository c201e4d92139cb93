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
summary is gathered into sweep_dir/results.csv and results.jsonl (one row per run, evals included in the .jsonl).

Launchers. `local` (the default) runs train.py here: one run at a time, one per GPU group of --gpus (under
torchrun when --gpus_per_run > 1), or --jobs CPU runs side by side; a fork starts when its parent finishes.
`slurm` (slurm.py) submits each run as SLURM jobs through submitit and returns: a run is split at the steps other
runs fork from, each piece is one job, and the pieces that continue from a step wait for it with `afterok`. Its
options: partition, account, time (minutes), nodes (per run), gpus_per_node (0 = gpus_per_run / nodes),
cpus_per_task (0 = 8 per GPU), mem_gb (0 = the cluster's default), sbatch (any other sbatch option, a dict),
setup (shell lines run on the node first, a list). gpus_per_run = 0 runs on CPUs. The jobs are recorded in
sweep_dir/jobs.json; --status=True and --cancel=True read it.
--min_fork_step: a run forks only from a run it shares at least this many steps with (0 = 1 step locally; under
SLURM, max_iters / 16 of the forking run, since every fork point costs its parent one more wait in the queue).
"""
import csv
import itertools
import json
import os
import subprocess
import sys
import time

import layout
import schedule
import slurm
from configurator import UserError, check_value, load_config, parse_value, read_config_file, run_main

SWEEP_FILE_KEYS = {'base': [], 'overrides': {}, 'grid': {}, 'runs': [{}], 'sweep_dir': 'out/sweep'}
OPTIONS = {'gpus': '', 'gpus_per_run': 1, 'jobs': 1, 'dry_run': False, 'share': True, 'sweep_dir': '',
           'min_fork_step': 0, 'launcher': 'local', 'status': False, 'cancel': False,
           # --launcher=slurm only (slurm.py)
           'partition': '', 'account': '', 'time': 1440, 'nodes': 1, 'gpus_per_node': 0, 'cpus_per_task': 0,
           'mem_gb': 0, 'sbatch': {}, 'setup': []}
LOCAL_OPTIONS = ('gpus', 'jobs')
SLURM_OPTIONS = ('partition', 'account', 'time', 'nodes', 'gpus_per_node', 'cpus_per_task', 'mem_gb', 'sbatch',
                 'setup')
LABELS = ('protocol', 'reference')
SHORT_NAMES = {'replay_fraction': 'rho', 'stage2_allocation': 'alpha', 'stage2_fraction': 'delta',
               'cooldown_fraction': 'cooldown', 'target_tokens': 'D', 'target_epochs': 'e', 'learning_rate': 'lr',
               'stage2_learning_rate': 'lr2', 'max_iters': 'N'}
RESULT_COLUMNS = ['run', 'protocol', 'reference', 'seed', 'data_seed', 'mode', 'lr_schedule', 'cooldown_fraction',
                  'replay_fraction', 'rho_realised', 'stage2_allocation', 'stage2_fraction', 'gamma',
                  'target_tokens', 'target_epochs', 'max_iters', 'stage2_start', 'val_loss_target',
                  'val_loss_generic', 'steps_computed', 'forked_from', 'fork_step', 'out_dir']


def parse_args(argv):
    """Split argv into the sweep file, sweep options and train.py overrides."""
    files = [a for a in argv if not a.startswith('--')]
    if len(files) != 1:
        raise UserError("usage: python sweep.py SWEEP_FILE.py [--key=value ...] (exactly one sweep file)")
    options, overrides = dict(OPTIONS), {}
    for arg in argv:
        if not arg.startswith('--'):
            continue
        if '=' not in arg:
            raise UserError(f"argument {arg} must look like --key=value")
        key, text = arg[2:].split('=', 1)
        if key in OPTIONS:
            options[key] = option_value(key, text)
        else:
            overrides[key] = check_value(key, parse_value(text), f"argument {arg}")
    if options['launcher'] not in ('local', 'slurm'):
        raise UserError(f"--launcher={options['launcher']} is not a launcher: use 'local' (the default) or 'slurm'")
    given = {a[2:].split('=', 1)[0] for a in argv if a.startswith('--')}
    wrong = [k for k in (SLURM_OPTIONS if options['launcher'] == 'local' else LOCAL_OPTIONS) if k in given]
    if wrong:
        raise UserError(f"--{wrong[0]} is an option of the {'slurm' if options['launcher'] == 'local' else 'local'}"
                        f" launcher: {'add --launcher=slurm' if options['launcher'] == 'local' else 'drop it'}")
    sweep = dict(SWEEP_FILE_KEYS)
    for key, value in read_config_file(files[0]).items():
        if key not in SWEEP_FILE_KEYS:
            raise UserError(f"sweep file {files[0]} sets unknown key '{key}' (sweep files set: "
                            f"{', '.join(SWEEP_FILE_KEYS)})")
        sweep[key] = value
    sweep['sweep_dir'] = options['sweep_dir'] or sweep['sweep_dir']
    return sweep, options, overrides


def option_value(key, text):
    """--key=text for a sweep option, typed like its default (check_value), except that a string option keeps the
    text as it is and a lone string is the one item of a list option (--setup='source .venv/bin/activate')."""
    default = OPTIONS[key]
    if isinstance(default, str):
        return text
    value = parse_value(text)
    if isinstance(default, list) and isinstance(value, str):
        value = [value]  # one setup line
    if value is None:  # check_value lets None through (for keys that default to None); no sweep option takes it
        value = text
    return check_value(key, value, f"argument --{key}={text}", OPTIONS)


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
        names.add(name)
        config = dict(load_config(sweep['base']))
        for key, value in settings.items():
            config[key] = check_value(key, value, f"sweep run {name}")
        config['out_dir'] = os.path.join(sweep['sweep_dir'], name)
        labels = {'protocol': run.get('protocol', ''), 'reference': int(bool(run.get('reference', 0)))}
        runs.append(dict(name=name, labels=labels, config=config))
    return runs


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


def fork_tree(hashes, min_fork):
    """parent[i], fork_step[i] (None, 0 for a root) and a run order: a greedy maximum spanning tree over shared
    prefixes, rooted at run 0, so each run forks from the placed run it shares the most steps with. A forked run
    computes only the steps after its own fork, so it can hand out checkpoints only at later steps; an earlier
    shared prefix is taken from its ancestors, which share it too. Run j forks only at min_fork[j] steps or more."""
    n = len(hashes)
    parent, fork_step, placed = [None] * n, [0] * n, [0]
    best = [(0, None)] * n

    def offer(i):  # run i was placed: it can serve forks at steps it computes itself
        for j in range(n):
            if j not in placed:
                k = shared_prefix(hashes[i], hashes[j])
                if k > fork_step[i] and k >= min_fork[j]:  # k > fork_step[i] >= 0: always 1 step or more
                    best[j] = max(best[j], (k, i), key=lambda b: b[0])
    offer(0)
    order = [0]
    while len(placed) < n:
        i = max((j for j in range(n) if j not in placed), key=lambda j: (best[j][0], -j))
        fork_step[i], parent[i] = best[i]
        placed.append(i)
        order.append(i)
        offer(i)
    return parent, fork_step, order


def launch(run, slot, options):
    """Start train.py for one run on one slot (a GPU group, or a CPU job); returns the Popen."""
    out = run['config']['out_dir']
    layout.write_run_config(os.path.join(out, 'config.py'), run['config'])
    args = [os.path.join(out, 'config.py'), *layout.resume_args(out, run['fork_from'])]
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    gpus = len(slot) if slot is not None and slot[0] != 'cpu' else 0
    train = os.path.join(layout.ROOT, 'train.py')
    cmd = [sys.executable, *layout.torchrun_args(gpus, run['config']['parallel']), train, *args]
    if gpus:
        env['CUDA_VISIBLE_DEVICES'] = ','.join(slot)
    elif options['jobs'] > 1:  # CPU runs side by side: split the cores instead of oversubscribing them
        env['OMP_NUM_THREADS'] = str(max(1, (os.cpu_count() or 1) // options['jobs']))
    log = open(os.path.join(out, 'stdout.log'), 'a')
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=os.getcwd())


def execute(runs, order, options):
    """Run everything not done yet; a fork waits for its parent. Several at once across GPU groups or CPU jobs."""
    gpus = [g for g in options['gpus'].split(',') if g.strip()]
    if gpus:
        k = options['gpus_per_run']
        slots = [tuple(gpus[i:i + k]) for i in range(0, len(gpus) - k + 1, k)]
    else:
        slots = [('cpu', str(i)) for i in range(options['jobs'])]
    pending = [i for i in order if not runs[i]['done']]
    running, free, failed, start = {}, list(slots), [], time.time()
    total = len(pending)
    while pending or running:
        for i in list(pending):
            parent = runs[i]['parent']
            if not free or (parent is not None and not runs[parent]['done']):
                continue
            if parent is not None and parent in failed:
                pending.remove(i)
                failed.append(i)
                continue
            fork = (runs[parent]['config']['out_dir'], runs[i]['fork_step']) if parent is not None else None
            runs[i]['fork_from'] = fork if fork and layout.kept(*fork) else None
            slot = free.pop(0)
            running[i] = (launch(runs[i], slot, options), slot)
            pending.remove(i)
            how = (f"forked from {runs[parent]['name']} at step {fork[1]}" if runs[i]['fork_from']
                   else "from scratch")
            print(f"[{total - len(pending)}/{total}] start {runs[i]['name']}: {how}", flush=True)
        time.sleep(0.2)
        for i, (proc, slot) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[i]
            free.append(slot)
            runs[i]['done'] = proc.returncode == 0
            if not runs[i]['done']:
                failed.append(i)
                print(f"FAILED {runs[i]['name']} (exit {proc.returncode}): see "
                      f"{runs[i]['config']['out_dir']}/stdout.log", flush=True)
            else:
                with open(os.path.join(runs[i]['config']['out_dir'], 'summary.json')) as f:
                    final = json.load(f)['final']
                print(f"done {runs[i]['name']}: target {final.get('val_loss_target', float('nan')):.4f}, "
                      f"generic {final.get('val_loss_generic', float('nan')):.4f} "
                      f"({time.time() - start:.0f}s into the sweep)", flush=True)
    return [runs[i]['name'] for i in failed]


def gather(runs, sweep_dir):
    """results.csv and results.jsonl from every finished run's summary.json and log.jsonl (the .jsonl also holds
    each run's evals, its task evals and its stages). Each task of a run's `tasks` adds the columns acc_<task> and
    acc_norm_<task> (its final accuracies)."""
    extra = sorted({k for r in runs for k in r['swept']} - set(RESULT_COLUMNS))
    rows, task_names = [], set()
    for run in runs:
        out = run['config']['out_dir']
        if not os.path.isfile(os.path.join(out, 'summary.json')):
            continue
        with open(os.path.join(out, 'summary.json')) as f:
            summary = json.load(f)
        with open(os.path.join(out, 'log.jsonl')) as f:
            records = [json.loads(line) for line in f]
        evals = [[r['step'], r['val_loss_target'], r['val_loss_generic']] for r in records if r['kind'] == 'eval']
        task_evals = {}  # task -> [[step, acc, acc_norm], ...]
        for r in records:
            if r['kind'] == 'task':
                task_evals.setdefault(r['task'], []).append([r['step'], r['acc'], r['acc_norm']])
        final_tasks = summary['final'].get('tasks', {})
        task_names.update(final_tasks)
        accuracy = {f'{metric}_{task}': numbers[metric] for task, numbers in final_tasks.items()
                    for metric in ('acc', 'acc_norm')}
        config, plan = summary['config'], summary['plan']
        row = dict(run=run['name'], **run['labels'], seed=config['seed'], data_seed=config['data_seed'],
                   mode=config['mode'], lr_schedule=config['lr_schedule'],
                   cooldown_fraction=config['cooldown_fraction'],
                   # a stage list has no single ρ: the generic share of its stages that hold target data
                   replay_fraction=plan['rho'] if plan['rho'] is not None else plan['replay_share'],
                   rho_realised=plan['rho_realised'] if plan['rho'] is not None else plan['replay_share'],
                   stage2_allocation=plan['alpha'],
                   stage2_fraction=plan['delta'], gamma=plan['gamma'], target_tokens=config['target_tokens'],
                   target_epochs=config['target_epochs'], max_iters=config['max_iters'],
                   stage2_start=plan['stage2_start'], val_loss_target=summary['final'].get('val_loss_target'),
                   val_loss_generic=summary['final'].get('val_loss_generic'),
                   steps_computed=run['steps_computed'], forked_from=run['forked_from'],
                   fork_step=run['fork_step'] if run['forked_from'] else 0, out_dir=out,
                   **{k: config.get(k) for k in extra}, **accuracy)
        # plan['stages']: where each stage starts, its LR restart and optimizer reset
        rows.append((row, evals, task_evals, plan['stages']))
    with open(os.path.join(sweep_dir, 'results.csv'), 'w', newline='') as f:
        task_columns = [f'{metric}_{task}' for task in sorted(task_names) for metric in ('acc', 'acc_norm')]
        writer = csv.DictWriter(f, fieldnames=RESULT_COLUMNS + task_columns + extra, restval='')
        writer.writeheader()
        for row, *_ in rows:
            writer.writerow({k: '' if v is None else v for k, v in row.items()})
    with open(os.path.join(sweep_dir, 'results.jsonl'), 'w') as f:
        for row, evals, task_evals, stage_table in rows:
            f.write(json.dumps({**row, 'evals': evals, 'task_evals': task_evals, 'stage_table': stage_table}) + '\n')
    return len(rows)


def plan_sweep(sweep, options, cli_overrides):
    """The sweep's runs, each with its config, parent, fork step and steps computed, and the order to start them."""
    runs = expand(sweep, cli_overrides)
    swept = set(sweep['grid']) | {k for r in sweep['runs'] for k in r if k not in LABELS + ('name',)}
    hashes = []
    for run in runs:
        config = run['config']
        plan = schedule.make_plan(config, schedule.split_windows(config['target_dir'], config['block_size']),
                                  schedule.split_windows(config['generic_dir'], config['block_size']))
        hashes.append(schedule.prefix_hashes(config, plan) if options['share'] else [run['name']])
        run.update(swept=swept, done=os.path.isfile(os.path.join(config['out_dir'], 'summary.json')))
    # every fork point splits a SLURM job in two (one more wait in the queue): there, fork only where it saves much
    min_fork = [options['min_fork_step'] or (max(1, r['config']['max_iters'] // 16)
                                             if options['launcher'] == 'slurm' else 1) for r in runs]
    parent, fork_step, order = fork_tree(hashes, min_fork)
    for i, run in enumerate(runs):
        run.update(parent=parent[i], fork_step=fork_step[i],
                   forked_from=runs[parent[i]]['name'] if parent[i] is not None else '',
                   steps_computed=run['config']['max_iters'] - fork_step[i])
        if parent[i] is not None:  # the parent keeps a checkpoint at the fork step
            steps = runs[parent[i]]['config']['checkpoint_steps']
            runs[parent[i]]['config']['checkpoint_steps'] = sorted(set(steps) | {fork_step[i]})
    return runs, order


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
        if os.path.isdir(sweep['sweep_dir']):
            n = gather(runs, sweep['sweep_dir'])
            print(f"gathered {n} finished runs into {sweep['sweep_dir']}/results.csv and results.jsonl")
        return
    from_scratch = sum(r['config']['max_iters'] for r in runs)
    shared = sum(r['steps_computed'] for r in runs)
    print(f"sweep {sweep['sweep_dir']}: {len(runs)} runs, {shared} steps with prefix sharing instead of "
          f"{from_scratch} ({from_scratch - shared} saved); {sum(r['done'] for r in runs)} already done")
    for i in order:
        run = runs[i]
        how = f"fork of {run['forked_from']} at step {run['fork_step']}" if run['forked_from'] else "from scratch"
        print(f"  {run['name']}: {how}, {run['steps_computed']} steps{' (done)' if run['done'] else ''}")
    if options['launcher'] == 'slurm':
        slurm.submit(runs, order, sweep['sweep_dir'], options)
        return
    if options['dry_run']:
        return
    os.makedirs(sweep['sweep_dir'], exist_ok=True)
    failed = execute(runs, order, options)
    n = gather(runs, sweep['sweep_dir'])
    print(f"gathered {n} runs into {sweep['sweep_dir']}/results.csv and results.jsonl")
    if failed:
        raise UserError(f"{len(failed)} run(s) failed: {', '.join(failed)} (see their stdout.log); rerun the same "
                        f"command to retry them")


if __name__ == '__main__':
    run_main(main)
