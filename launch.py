"""
launch.py: sweep.py's local launcher: a planned sweep's runs as train.py processes on this machine, one per GPU
group of --gpus or --jobs side by side on CPUs, a fork started when its parent has finished, with the sweep's
progress in steps and an ETA as runs start and end. (slurm.py is the other launcher; layout.py says how a run
starts in its directory, for both.)
"""
import json
import os
import signal
import subprocess
import sys
import time

import layout
from analysis import rho_text
from runlog import duration

PROGRESS_INTERVAL = 60  # seconds between the sweep's progress lines while runs go on
LAUNCHED = []  # every train.py this sweep started (stop_runs ends those still running)


def launch(run, slot, options):
    """Start train.py for one run on one slot (a GPU group, or a CPU job); returns the Popen."""
    out = run['config']['out_dir']
    layout.write_run_config(os.path.join(out, 'config.py'), run['config'])
    args = [os.path.join(out, 'config.py'), *layout.start_args(out, run['fork_from'])]
    env = dict(os.environ, PYTHONUNBUFFERED='1')
    gpus = len(slot) if slot is not None and slot[0] != 'cpu' else 0
    train = os.path.join(layout.ROOT, 'train.py')
    cmd = [sys.executable, *layout.torchrun_args(gpus, run['config']['parallel']), train, *args]
    if gpus:
        env['CUDA_VISIBLE_DEVICES'] = ','.join(slot)
    elif options['jobs'] > 1:  # CPU runs side by side: split the cores instead of oversubscribing them
        env['OMP_NUM_THREADS'] = str(max(1, (os.cpu_count() or 1) // options['jobs']))
    log = open(os.path.join(out, 'stdout.log'), 'a')
    LAUNCHED.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=os.getcwd()))
    return LAUNCHED[-1]


def stop_runs(signal_number, frame):
    """On `kill` (SIGTERM): pass it on to the runs this sweep started (not SIGINT: a process started in the
    background ignores it), each resuming from its last checkpoint when the sweep is started again; then end as
    Ctrl-C ends every script."""
    running = [proc for proc in LAUNCHED if proc.poll() is None]
    for proc in running:
        proc.terminate()
    for proc in running:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
    raise KeyboardInterrupt


def execute(runs, order, options):
    """Run everything not done yet; a fork waits for its parent. Several at once across GPU groups or CPU jobs.
    Prints each start and end with the sweep's progress in steps and an ETA (the steps left at the rate so far),
    and every PROGRESS_INTERVAL seconds while runs go on."""
    gpus = [g for g in options['gpus'].split(',') if g.strip()]
    if gpus:
        k = options['gpus_per_run']
        slots = [tuple(gpus[i:i + k]) for i in range(0, len(gpus) - k + 1, k)]
    else:
        slots = [('cpu', str(i)) for i in range(options['jobs'])]
    pending = [i for i in order if not runs[i]['done']]
    running, free, failed, start = {}, list(slots), [], time.time()
    total, total_steps, ended_steps = len(pending), sum(runs[i]['steps_computed'] for i in pending), 0
    last_line = start
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
            if fork and not runs[i]['fork_from']:  # the parent kept no checkpoint there: all steps from scratch
                total_steps += runs[i]['fork_step']
                runs[i].update(forked_from='', fork_step=0, steps_computed=runs[i]['steps'])
            slot = free.pop(0)
            running[i] = (launch(runs[i], slot, options), slot)
            pending.remove(i)
            how = (f"forked from {runs[parent]['name']} at step {fork[1]}" if runs[i]['fork_from']
                   else "from scratch")
            print(f"[{total - len(pending)}/{total}] start {runs[i]['name']}: {how}", flush=True)
        time.sleep(0.2)
        if running and time.time() - last_line >= PROGRESS_INTERVAL:
            last_line = time.time()
            so_far = ended_steps + sum(steps_so_far(runs[j]) for j in running)
            print(f"  sweep: {progress_text(so_far, total_steps, start)}", flush=True)
        for i, (proc, slot) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[i]
            free.append(slot)
            runs[i]['done'] = proc.returncode == 0
            ended_steps += runs[i]['steps_computed']
            if not runs[i]['done']:
                failed.append(i)
                print(f"FAILED {runs[i]['name']} (exit {proc.returncode}): see "
                      f"{runs[i]['config']['out_dir']}/stdout.log", flush=True)
            else:
                with open(os.path.join(runs[i]['config']['out_dir'], 'summary.json')) as f:
                    final = json.load(f)['final']
                print(f"done {runs[i]['name']}{rho_note(runs[i])}: target "
                      f"{final.get('val_loss_target', float('nan')):.4f}, generic "
                      f"{final.get('val_loss_generic', float('nan')):.4f} "
                      f"({time.time() - start:.0f}s into the sweep)", flush=True)
            so_far = ended_steps + sum(steps_so_far(runs[j]) for j in running)
            print(f"  sweep: {total - len(pending) - len(running)}/{total} runs ended, "
                  f"{progress_text(so_far, total_steps, start)}", flush=True)
    return [runs[i]['name'] for i in failed]


def steps_so_far(run):
    """Steps a running run has computed: its log's last step past the step it started from."""
    started_at = run['steps'] - run['steps_computed']
    return max(0, min(run['steps_computed'], (layout.last_step(run['config']['out_dir']) or 0) - started_at))


def progress_text(done, total, start):
    """'120/400 steps (30%), 1m05s elapsed, ETA 2m32s' (the steps left at the rate so far)."""
    elapsed = time.time() - start
    eta = duration(elapsed * (total - done) / done) if done else 'unknown'
    return f"{done}/{total} steps ({100 * done / max(total, 1):.0f}%), {duration(elapsed)} elapsed, ETA {eta}"


def rho_note(run):
    """', ρ = 0.2 (asked 0.25)': the replay share the run's plan realises, for a run with target data."""
    asked, realised = run['rho']
    return f", ρ = {rho_text(realised, asked)}" if realised is not None else ''
