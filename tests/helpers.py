"""Helpers shared by the tests (conftest.py puts the repo root and this directory on sys.path):
- synthetic sources whose every token of window w is `base + w`, so the first token of a fed sequence says which
  window (and, by base, which source) train.py actually read;
- random-token sources with a small vocabulary (fast steps) for crash and numerics tests;
- running train.py, reading its log, comparing logs without wall-clock fields;
- results.csv / results.jsonl writers for the analysis scripts (efficiency.py, plot.py)."""
import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET_BASE = 20000  # target windows are tokens 20000+w; generic windows are tokens w (< 20000)
VOCAB = 32768
TIMING_KEYS = ('ms_per_step', 'elapsed_s', 'mfu', 'eval_s')


# ---- sources ---------------------------------------------------------------------------------------------------

def write_source(path, n_windows, block_size, base, val_windows=8, vocab=VOCAB):
    os.makedirs(path, exist_ok=True)
    for split, n in (('train', n_windows), ('val', val_windows)):
        tokens = np.repeat(base + np.arange(n + 1), block_size)[:n * block_size + 1].astype(np.uint16)
        tokens.tofile(os.path.join(path, f'{split}.bin'))
    meta = dict(tokenizer='synthetic', vocab_size=vocab, eot_token=vocab - 1, dtype='uint16')
    with open(os.path.join(path, 'meta.json'), 'w') as f:
        json.dump(meta, f)
    return path


def make_sources(root, block_size=32, generic_windows=400, target_windows=40, target_base=TARGET_BASE, vocab=VOCAB):
    """A generic source (window w is token w) and a target source (window w is token target_base + w)."""
    return (write_source(os.path.join(root, 'generic'), generic_windows, block_size, 0, vocab=vocab),
            write_source(os.path.join(root, 'target'), target_windows, block_size, target_base, vocab=vocab))


def write_random_source(path, train_tokens, val_tokens=32 * 16 + 1, seed=0, **meta):
    """Random tokens below 256, vocab_size 256: a 32K vocabulary makes each CPU step ~15x slower."""
    os.makedirs(path, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n in (('train', train_tokens), ('val', val_tokens)):
        rng.integers(0, 256, n, dtype=np.uint16).tofile(os.path.join(path, f'{split}.bin'))
    with open(os.path.join(path, 'meta.json'), 'w') as f:
        json.dump(dict(dict(tokenizer='toy', vocab_size=256, dtype='uint16'), **meta), f)
    return str(path)


# ---- train.py runs and their logs -------------------------------------------------------------------------------

def run_train(args, nproc=1, config='config/tiny.py'):
    """python train.py CONFIG --log_batch_ids=True ARGS (under torchrun with nproc > 1), one thread."""
    cmd = [sys.executable, 'train.py', *([config] if config else []), '--log_batch_ids=True', *args]
    if nproc > 1:
        cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={nproc}', *cmd[1:]]
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1')
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


def run_sweep(sweep_file, *args, env=None, expect_ok=True):
    """python sweep.py SWEEP_FILE ARGS in the repository, one thread per process; returns the CompletedProcess's
    stdout (or the CompletedProcess itself with expect_ok=False)."""
    env = dict(env or os.environ, OMP_NUM_THREADS='1')
    result = subprocess.run([sys.executable, 'sweep.py', sweep_file, *args], cwd=ROOT, capture_output=True,
                            text=True, timeout=600, env=env)
    if not expect_ok:
        return result
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def read_log(out_dir):
    with open(os.path.join(out_dir, 'log.jsonl')) as f:
        return [json.loads(line) for line in f]


def without_timing(log):
    """Log records minus wall-clock fields: what must be equal between two runs of the same plan on CPU."""
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in log]


def copy_for_resume(out_dir, step, resumed_dir):
    """A fresh run dir holding run out_dir's checkpoint after `step` steps and its whole log (which also holds the
    steps after `step`: a resume must cut them off and write them again)."""
    os.makedirs(resumed_dir)
    shutil.copy(os.path.join(out_dir, f'ckpt_{step}.pt'), os.path.join(resumed_dir, 'ckpt.pt'))
    shutil.copy(os.path.join(out_dir, 'log.jsonl'), os.path.join(resumed_dir, 'log.jsonl'))
    return resumed_dir


# ---- bad inputs: one `error:` line, exit status 2, before the model is built --------------------------------------

# Each case is `python train.py ARGS` in a process forked from one that has imported train.py (torch is imported
# once, not once a case at ~2 s of CPU); runtime.GPT raises, so a case that got as far as building the model fails.
FORKED_TRAIN = r'''
import json, os, sys, traceback
sys.path.insert(0, os.getcwd())
import runtime
import train
from configurator import run_main


def no_model(*args, **kwargs):
    raise AssertionError("the model was built before the error")


runtime.GPT = no_model
results = []
for i, argv in enumerate(json.loads(sys.argv[1])):
    out, err = (os.path.join(sys.argv[2], f'{i}.{name}') for name in ('out', 'err'))
    pid = os.fork()
    if pid == 0:
        for fd, path in ((1, out), (2, err)):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
        sys.argv, code = ['train.py', *argv], 0
        try:
            run_main(train.main)  # what train.py's __main__ does
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else int(e.code is not None)
        except BaseException:
            traceback.print_exc()  # what the interpreter would print
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    results.append([os.waitstatus_to_exitcode(status), open(out).read(), open(err).read()])
print(json.dumps(results))
'''


def one_line_failures(expected, cases, tmp_path):
    """Run `python train.py ARGS` for each case (forked, FORKED_TRAIN). Returns the failures, cases whose result is
    not exit status 2 with one line `error: ...` holding the expected piece ((name, piece) per case), and every
    case's (exit status, stdout, stderr)."""
    result = subprocess.run([sys.executable, '-c', FORKED_TRAIN, json.dumps(cases), str(tmp_path)], cwd=ROOT,
                            env=dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1'),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    results, failures = json.loads(result.stdout), []
    for (name, piece), (rc, stdout, stderr) in zip(expected, results):
        lines = stderr.splitlines()
        if not (rc == 2 and len(lines) == 1 and lines[0].startswith('error: ') and piece in lines[0]):
            failures.append(f"{name}: rc={rc} stderr={stderr[-1500:]!r} stdout={stdout[-300:]!r}")
    return failures, results


# ---- sweep results for the analysis scripts ----------------------------------------------------------------------

BUDGETS = np.array([1.0, 2.0, 4.0, 8.0, 16.0])
BASE_TOKENS = 4096


def law(D, A=2.0, B=0.3, C=1.5):
    return A * np.asarray(D, dtype=float) ** -B + C


def write_sweep(directory, rows):
    """results.csv (every key but evals, task_evals and stage_table; None -> empty cell) and results.jsonl (every
    key), as sweep.py writes them."""
    os.makedirs(directory, exist_ok=True)
    columns = [k for k in rows[0] if k not in ('evals', 'task_evals', 'stage_table')]
    with open(os.path.join(directory, 'results.csv'), 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows([['' if row.get(k) is None else row[k] for k in columns] for row in rows])
    with open(os.path.join(directory, 'results.jsonl'), 'w') as f:
        f.writelines(json.dumps(row) + '\n' for row in rows)


def run_row(name, seed, target_tokens, loss, reference, replay_fraction=None, stage2_allocation=None, **extra):
    return dict(run=name, seed=seed, data_seed=seed, mode='midtrain', lr_schedule='cosine', cooldown_fraction=0.1,
                replay_fraction=replay_fraction, stage2_allocation=stage2_allocation, stage2_fraction=None,
                gamma=None, target_tokens=target_tokens, target_epochs=32, max_iters=200, stage2_start=None,
                val_loss_target=loss, val_loss_generic=4.0, reference=reference,
                protocol='reference' if reference else 'replay',
                # sweep.py's per-run bookkeeping: differs between seeds, must not split them
                rho_realised=replay_fraction, steps_computed=100 + seed, forked_from=f"run{seed}" if seed else None,
                fork_step=10 * seed, out_dir=f"out/{name}", **extra)


def reference_rows(losses_per_seed):
    return [run_row(f"ref_{int(b)}_s{seed}", seed, int(b * BASE_TOKENS), float(loss), 1)
            for seed, losses in enumerate(losses_per_seed) for b, loss in zip(BUDGETS, losses)]


def write_run(out_dir, name, seed, replay_fraction, records, final, N=100, gamma=0.1):
    """A finished mid-training run (α = 1, δ = γ/(1 − ρ)) as analysis.gather reads it: summary.json (config, plan,
    final) and log.jsonl (records), no started.json. Returns the run as sweep.py passes it to gather."""
    delta = gamma / (1 - replay_fraction)
    start = round(N * (1 - delta))
    config = dict(seed=seed, data_seed=seed, mode='midtrain', lr_schedule='cosine', cooldown_fraction=0.1,
                  target_tokens=BASE_TOKENS, target_epochs=32, out_dir=str(out_dir))
    stages = [dict(start=0, steps=start, lr='restart', reset_optimizer=False),
              dict(start=start, steps=N - start, lr='continue', reset_optimizer=False)]
    plan = dict(N=N, gamma=gamma, rho=replay_fraction, rho_realised=replay_fraction, replay_share=replay_fraction,
                alpha=1.0, delta=delta, stage2_start=start, stages=stages)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, 'summary.json'), 'w') as f:
        json.dump(dict(config=config, plan=plan, final=final), f)
    with open(os.path.join(out_dir, 'log.jsonl'), 'w') as f:
        f.writelines(json.dumps(record) + '\n' for record in records)
    return dict(name=name, labels=dict(protocol='replay', reference=0), config=config, swept=set())
