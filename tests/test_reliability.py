"""Crashes and bad inputs, end to end on CPU (docs/resume.md):
- kill -9 at random points, then init_from=resume until done == the uninterrupted run (log and summary);
- a save killed at a random point, or failing on a full disk, never leaves an unloadable ckpt.pt;
- a NaN loss stops the run, names the step and keeps the last good checkpoint;
- every bad config or input is one `error:` line and exit 2, before the model is built;
- a resume with a changed schedule is refused, and accepted with --force_resume=True.
Random-token data with a 256-token vocabulary: a 32K vocabulary makes each CPU step ~15x slower."""
import contextlib
import io
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from helpers import ROOT, one_line_failures, read_log, without_timing, write_random_source

ENV = dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1')
BLOCK = 32
# finetune: stage 2 (steps 22..29) restarts the LR and resets the optimizer, which a resume must reproduce. Train
# logs every 4 steps and checkpoints every 3, so most checkpoints fall inside an open train-loss window.
RUN = ['config/tiny.py', '--mode=finetune', '--max_iters=30', '--checkpoint_interval=3', '--log_interval=4',
       '--eval_interval=7', '--log_batch_ids=True', '--checkpoint_steps=[15]']


def train(*args, **popen):
    return subprocess.Popen([sys.executable, 'train.py', *args], cwd=ROOT, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen)


def run_train(*args):
    proc = train(*args)
    stdout, stderr = proc.communicate(timeout=300)
    return proc.returncode, stdout, stderr


def summary(out):
    with open(os.path.join(out, 'summary.json')) as f:
        s = json.load(f)
    return {k: s[k] for k in ('final', 'plan', 'sequences', 'tokens', 'generic_cursor_end')}


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp('data')
    return dict(generic=write_random_source(root / 'generic', BLOCK * 400, seed=0),
                target=write_random_source(root / 'target', BLOCK * 40, seed=1), root=root)


@pytest.fixture(scope='module')
def reference(data, tmp_path_factory):
    """(its arguments, finished): the uninterrupted run, started in the background (the kill test runs beside it
    on the second core); finished() waits for it and returns its out_dir."""
    out = str(tmp_path_factory.mktemp('reference'))
    args = RUN + [f"--generic_dir={data['generic']}", f"--target_dir={data['target']}"]
    proc, done = train(*args, f'--out_dir={out}'), []

    def finished():
        if not done:
            stdout, stderr = proc.communicate(timeout=300)
            assert proc.returncode == 0, stdout[-2000:] + stderr[-3000:]
            done.append(out)
        return out
    yield args, finished
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


# ---------------------------------------------------------------------------------------------------------------
# kill -9 and resume
# ---------------------------------------------------------------------------------------------------------------

def wait_for_header(proc):
    """Read stdout up to train.py's 'run ...' line (printed once the log is set up, right before the loop).
    Returns the step it resumes at (0 = fresh), or None if the process ended first."""
    for line in proc.stdout:
        if line.startswith('run '):
            match = re.search(r'resuming at step (\d+)', line)
            return int(match.group(1)) if match else 0
    return None


def last_fed(out):
    """The last step whose batch record is in log.jsonl (-1 if none); a torn last line is skipped."""
    last = -1
    with open(os.path.join(out, 'log.jsonl')) as f:
        for line in f:
            if '"batch"' in line and line.endswith('\n'):
                last = json.loads(line)['step']
    return last


def test_kill9_at_random_points_then_resume_equals_uninterrupted(reference, tmp_path):
    args, reference_out = reference
    out = str(tmp_path / 'killed')
    rng = random.Random(20250611)  # reproducible kill points; the assertions hold wherever a kill lands

    def start():  # what a job scheduler does after a preemption
        resume = os.path.isfile(os.path.join(out, 'ckpt.pt'))
        return train(*args, f'--out_dir={out}', f"--init_from={'resume' if resume else 'scratch'}")

    kills, resumed_at = 0, []
    # two kills in stage 1, one just after the stage-2 checkpoint (the resume must then reset the optimizer), one late
    for lo, hi in ((1, 8), (9, 16), (22, 22), (24, 28)):
        kill_after = rng.randint(lo, hi)
        proc = start()
        at = wait_for_header(proc)
        if at is not None:
            resumed_at.append(at)
            while proc.poll() is None and last_fed(out) < kill_after:
                time.sleep(0.002)
            time.sleep(rng.uniform(0, 0.03))  # land anywhere in the next step: forward, eval, log write or save
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        kills += proc.returncode == -signal.SIGKILL
    # one more kill right after a resume has rewritten the log, before it checkpoints anything
    proc = start()
    resumed_at.append(wait_for_header(proc))
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    kills += proc.returncode == -signal.SIGKILL
    # what a kill inside a write can leave: a torn log line and a checkpoint's temporary file
    with open(os.path.join(out, 'log.jsonl'), 'a') as f:
        f.write('{"kind": "train", "step": 2')
    with open(os.path.join(out, 'ckpt.pt.tmp999999'), 'wb') as f:
        f.write(b'PK\x03\x04 half a checkpoint')

    proc = start()
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stdout[-2000:] + stderr[-3000:]
    assert kills >= 3, resumed_at
    assert len({s for s in resumed_at if s}) >= 2, resumed_at  # resumed from several different checkpoints
    reference_out = reference_out()
    assert without_timing(read_log(out)) == without_timing(read_log(reference_out))
    assert summary(out) == summary(reference_out)
    assert not [name for name in os.listdir(out) if '.tmp' in name]


# ---------------------------------------------------------------------------------------------------------------
# interrupted and failing saves
# ---------------------------------------------------------------------------------------------------------------

# Forked savers replace ckpt.pt with step 1, 2, ... (a 2 MB tensor filled with the step) until SIGKILLed at a
# random moment; then a saver whose file-size limit makes the write fail midway, as a full disk does.
SAVER = r'''
import json, os, random, resource, signal, sys, time
import torch
sys.path.insert(0, os.getcwd())
from configurator import UserError
from checkpoint import save_checkpoint
path, rng, trials = sys.argv[1], random.Random(int(sys.argv[2])), int(sys.argv[3])
big = torch.empty(500_000)  # 2 MB: tens of saves a second


def state(i):
    return {'step': i, 'w': big.fill_(float(i))}


def loaded():
    try:
        s = torch.load(path, map_location='cpu', weights_only=True)
        return s['step'], bool(s['w'].numel() == big.numel() and (s['w'] == s['step']).all())
    except Exception as e:
        return None, repr(e)


def fork(child):
    """Run child(write_end) in a forked process; returns (pid, read_end)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            child(w)
        finally:
            os._exit(0)
    os.close(w)
    return pid, r


def read_all(r):
    out = b''
    while chunk := os.read(r, 65536):
        out += chunk
    os.close(r)
    return out


def save_forever(w, first):
    for i in range(first, 10 ** 9):
        save_checkpoint(path, state(i))
        os.write(w, b'.')  # one byte per completed save


save_checkpoint(path, state(0))
step, kills = 0, []
for trial in range(trials):
    pid, r = fork(lambda w: save_forever(w, step + 1))
    time.sleep(rng.uniform(0.01, 0.4))
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    completed = len(read_all(r))
    got, whole = loaded()
    tmp = f'{path}.tmp{pid}'
    kills.append(dict(before=step, completed=completed, loaded=got, whole=whole, tmp_left=os.path.exists(tmp)))
    if os.path.exists(tmp):
        os.remove(tmp)
    if got is None:
        break
    step = got


def full_disk(w):
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))  # writes past 1 MB fail
    try:
        save_checkpoint(path, state(step + 1))
        os.write(w, b'saved anyway')
    except UserError as e:
        os.write(w, str(e).encode())


pid, r = fork(full_disk)
os.waitpid(pid, 0)
message = read_all(r).decode()
got, whole = loaded()
print(json.dumps(dict(kills=kills, full_disk=dict(before=step, message=message, loaded=got, whole=whole,
                                                  left=sorted(os.listdir(os.path.dirname(path)))))))
'''


def test_killed_or_failing_save_leaves_a_loadable_checkpoint(tmp_path):
    path = str(tmp_path / 'ckpt.pt')
    result = subprocess.run([sys.executable, '-c', SAVER, path, '7', '8'], cwd=ROOT, env=ENV, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.splitlines()[-1])
    for kill in report['kills']:
        # the newest completed save, or the one whose rename landed just before the kill; never torn
        assert kill['loaded'] in (kill['before'] + kill['completed'], kill['before'] + kill['completed'] + 1), kill
        assert kill['whole'] is True, kill
    assert len(report['kills']) == 8
    # the kills did land inside save_checkpoint: mid-write (its .tmp file left behind) or after the rename
    inside = [k['tmp_left'] or k['loaded'] == k['before'] + k['completed'] + 1 for k in report['kills']]
    assert sum(inside) >= 4, report
    disk = report['full_disk']
    assert disk['message'].startswith(f'cannot write checkpoint {path}') and 'unchanged' in disk['message'], disk
    assert disk['loaded'] == disk['before'] and disk['whole'] is True, disk
    assert disk['left'] == ['ckpt.pt'], disk  # the failed save removed its temporary file


# ---------------------------------------------------------------------------------------------------------------
# NaN
# ---------------------------------------------------------------------------------------------------------------

def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(data, tmp_path):
    """Stage 2 (from step 22) restarts at a huge LR: its first update sends the weights to ~1e30 and the next
    forward overflows. The checkpoint at 22 (stage boundary) is good; the one due at 24, inside the log window
    that holds the NaN (logs after steps 22 and 25), must be skipped."""
    import torch
    out = str(tmp_path / 'nan')
    rc, stdout, stderr = run_train(*RUN, f"--generic_dir={data['generic']}", f"--target_dir={data['target']}",
                                   f'--out_dir={out}', '--stage2_learning_rate=1e30', '--checkpoint_interval=2',
                                   '--log_interval=5', '--eval_interval=0', '--spike_eval_steps=0',
                                   '--checkpoint_steps=[]')
    assert rc == 2 and 'Traceback' not in stderr, stderr[-3000:]
    assert re.fullmatch(r"error: the training loss is (nan|inf) at step 25/30 \(the mean over steps 23\.\.25\); "
                        r"stopping\. \S+/ckpt\.pt \(after 22 steps\) is the last good checkpoint: .*\n", stderr), stderr
    assert 'not checkpointing after 24 steps' in stdout
    checkpoint = torch.load(os.path.join(out, 'ckpt.pt'), map_location='cpu', weights_only=True)
    assert checkpoint['step'] == 22
    assert all(torch.isfinite(v).all() for v in checkpoint['model'].values())
    assert not [name for name in os.listdir(out) if '.tmp' in name]


# ---------------------------------------------------------------------------------------------------------------
# bad configs and inputs: one line, exit 2, before the model
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def bad_inputs(data, reference):
    """Broken copies of the data, a broken config file and checkpoints."""
    root = data['root']
    dirs = dict(
        other_tokenizer=write_random_source(root / 'other_tokenizer', BLOCK * 40, seed=1, tokenizer='gpt2'),
        other_vocab=write_random_source(root / 'other_vocab', BLOCK * 40, seed=1, vocab_size=512),
        no_val=write_random_source(root / 'no_val', BLOCK * 40, seed=1),
        empty_train=write_random_source(root / 'empty_train', BLOCK * 40, seed=1),
        short_train=write_random_source(root / 'short_train', 20, seed=1),
        short_val=write_random_source(root / 'short_val', BLOCK * 40, val_tokens=20, seed=1),
        changed=write_random_source(root / 'changed', BLOCK * 40, seed=2),  # same sizes as the target, other tokens
        meta_changed=write_random_source(root / 'meta_changed', BLOCK * 40, seed=1, eot_token=0),  # same tokens
        bad_meta=write_random_source(root / 'bad_meta', BLOCK * 40, seed=1),
        odd_bytes=write_random_source(root / 'odd_bytes', BLOCK * 40, seed=1),
        big_id=write_random_source(root / 'big_id', BLOCK * 40, seed=1),  # meta.json without max_token_id
        big_id_meta=write_random_source(root / 'big_id_meta', BLOCK * 40, seed=1, max_token_id=300),
    )
    tokens = np.fromfile(os.path.join(dirs['big_id'], 'train.bin'), dtype=np.uint16)
    tokens[0] = 256  # one id past the 256-token vocabulary, where the sampled slices look
    tokens.tofile(os.path.join(dirs['big_id'], 'train.bin'))
    os.remove(os.path.join(dirs['no_val'], 'val.bin'))
    open(os.path.join(dirs['empty_train'], 'train.bin'), 'w').close()
    with open(os.path.join(dirs['odd_bytes'], 'train.bin'), 'ab') as f:
        f.write(b'\0')  # half a token: a torn copy
    with open(os.path.join(dirs['bad_meta'], 'meta.json'), 'w') as f:
        f.write('{"tokenizer": "toy", "vocab_size": 256,')  # a copy cut short
    with open(root / 'nan_lr.py', 'w') as f:
        f.write("learning_rate = float('nan')\n")
    with open(root / 'syntax_error.py', 'w') as f:
        f.write('max_iters = 10 +\n')
    ref = reference[1]()
    with open(os.path.join(ref, 'ckpt.pt'), 'rb') as f:
        whole = f.read()
    with open(root / 'truncated.pt', 'wb') as f:
        f.write(whole[:len(whole) // 2])  # what a non-atomic save killed midway would leave
    for name in ('resume_lr', 'resume_seed', 'resume_data', 'resume_shape', 'resume_offset', 'resume_meta'):
        os.makedirs(root / name)
        shutil.copy(os.path.join(ref, 'ckpt_15.pt'), root / name / 'ckpt.pt')
    return dict(dirs, root=str(root), ref=ref)


# (case, arguments after a good run's, a piece of the one expected line). {root} and {ref} are filled in; a value
# that names a bad_inputs entry (--target_dir=no_val) becomes its path.
BAD = [
    ('unknown key', ['--learning_rat=1e-3'], "unknown config key 'learning_rat' in argument --learning_rat=1e-3 "
                                              "(did you mean 'learning_rate'?)"),
    ('wrong type', ['--max_iters=ten'], "config key 'max_iters' in argument --max_iters=ten must be int"),
    ('flag without a value', ['--max_iters'], "argument --max_iters must look like --key=value"),
    ('missing config file', ['config/no_such.py'], "config file config/no_such.py not found"),
    ('config file error', ['{root}/syntax_error.py'], "syntax_error.py failed to run: SyntaxError"),
    ('NaN in a config file', ['{root}/nan_lr.py'], "learning_rate=nan must be a positive number"),
    ('negative max_iters', ['--max_iters=-5'], "max_iters=-5 must be at least 1"),
    ('fraction out of range', ['--replay_fraction=1.5'], "replay_fraction=1.5 must be a number between 0 and 1"),
    ('inconsistent ρ, α, δ', ['--stage2_fraction=0.9'], "stage2_fraction=0.9 are inconsistent"),
    ('bad mode', ['--mode=fine-tune'], "mode='fine-tune' must be 'midtrain' or 'finetune'"),
    ('bad dtype', ['--dtype=float64'], "dtype='float64' must be 'auto', 'float32', 'bfloat16' or 'float16'"),
    ('bad device', ['--device=gpu'], "device='gpu' is not a torch device"),
    ('heads do not divide the width', ['--n_head=3'], "n_embd=32 must be divisible by n_head=3"),
    ('out_dir is a file', ['--out_dir={root}/nan_lr.py'], "nan_lr.py' is a file, not a directory"),
    ('missing data dir', ['--generic_dir={root}/nowhere'], "nowhere' does not exist: build it with prepare/"),
    ('missing val split', ['--target_dir=no_val'], "no_val/val.bin is missing or empty"),
    ('empty train split', ['--target_dir=empty_train'], "empty_train/train.bin is missing or empty"),
    ('torn train split', ['--target_dir=odd_bytes'],
     "odd_bytes/train.bin has 2561 bytes, not a whole number of uint16 tokens"),
    ('broken meta.json', ['--target_dir=bad_meta'], "bad_meta/meta.json is not a valid meta.json"),
    ('token id beyond the vocabulary', ['--target_dir=big_id'],
     "big_id: train.bin holds token id 256, but the model's vocabulary has 256 ids"),
    ('meta.json records an id beyond the vocabulary', ['--target_dir=big_id_meta'],
     "big_id_meta: meta.json's max_token_id holds token id 300, but the model's vocabulary has 256 ids"),
    ('tokenizer mismatch', ['--target_dir=other_tokenizer'], "different tokenizers ('toy' vs 'gpt2')"),
    ('vocab mismatch', ['--target_dir=other_vocab'], "different vocab_sizes (256 vs 512)"),
    ('block longer than a split', ['--target_dir=short_train'],
     "short_train/train.bin has 20 tokens, fewer than one block_size=32 sequence"),
    ('pool larger than the split', ['--target_tokens=3200', '--target_epochs=1'],
     "asks for 100 unique target sequences but the target train split holds only 39 windows"),
    ('val split too small', ['--target_dir=short_val'], "short_val/val.bin has 20 tokens and val_tokens=2048: "
                                                        "validation needs at least block_size+1=33"),
    ('init_from missing', ['--init_from={root}/nope.pt'], "nope.pt' is not 'scratch', 'resume' or an existing"),
    ('init_from other architecture', ['--init_from={ref}/ckpt.pt', '--n_layer=3'],
     "does not fit this model or data (n_layer 2 -> 3)"),
    ('corrupt checkpoint', ['--init_from={root}/truncated.pt'], "): it is corrupt or not a checkpoint"),
    ('resume without checkpoint', ['--init_from=resume'], "ckpt.pt does not exist: start with init_from='scratch'"),
    ('resume_from without resume', ['--resume_from={ref}/ckpt_15.pt'], "is only read with init_from='resume'"),
    ('resume, schedule changed', ['--out_dir={root}/resume_lr', '--init_from=resume', '--learning_rate=0.002'],
     "changed since it was saved: learning_rate 0.003 -> 0.002. Restore them, or use --force_resume=True"),
    ('resume, seed changed', ['--out_dir={root}/resume_seed', '--init_from=resume', '--data_seed=7'],
     "changed since it was saved: data_seed 1337 -> 7. Restore them"),
    ('resume, data changed', ['--out_dir={root}/resume_data', '--init_from=resume', '--target_dir=changed'],
     "changed since it was saved: target_dir data (contents)"),
    ('resume, batch shape changed (same S)', ['--out_dir={root}/resume_shape', '--init_from=resume',
                                              '--batch_size=2', '--gradient_accumulation_steps=4'],
     "changed since it was saved: batch_size 4 -> 2; gradient_accumulation_steps 2 -> 4. Restore them"),
    ('resume, generic_offset changed', ['--out_dir={root}/resume_offset', '--init_from=resume',
                                        '--generic_offset=5'],
     "changed since it was saved: generic_offset 0 -> 5. Restore them"),
    ('resume, meta.json changed', ['--out_dir={root}/resume_meta', '--init_from=resume', '--target_dir=meta_changed'],
     "changed since it was saved: target_dir data (meta.json). Restore them"),
]


def test_bad_inputs_fail_fast_with_one_clear_line(bad_inputs, data, tmp_path):
    cases = []
    for i, (_, extra, _) in enumerate(BAD):
        args = [*RUN[:-1], f"--generic_dir={data['generic']}", f"--target_dir={data['target']}",
                f'--out_dir={tmp_path}/case{i}']  # RUN less its checkpoint_steps, which need max_iters >= 15
        for arg in extra:  # config files too go last: files and flags apply left to right
            key, _, value = arg.format(**bad_inputs).partition('=')
            args.append(f'{key}={bad_inputs[value]}' if value in bad_inputs else arg.format(**bad_inputs))
        cases.append(args)
    assert len(BAD) >= 15
    failures, _ = one_line_failures([(name, expected) for name, _, expected in BAD], cases, tmp_path)
    assert not failures, '\n'.join(failures)


def test_the_plan_reads_broken_data_dirs_without_a_traceback(bad_inputs, data):
    """schedule.py and sweep.py read a data directory's size themselves (without torch): each broken copy of the
    data above gives a plan or one error line, and a broken meta.json the error naming it."""
    names = [arg.partition('=')[2] for _, extra, _ in BAD for arg in extra if arg.startswith('--target_dir=')]
    names = [name for name in names if name in bad_inputs]
    assert {'bad_meta', 'odd_bytes', 'empty_train', 'no_val'} <= set(names)
    for name in names:
        result = subprocess.run([sys.executable, 'schedule.py', 'config/tiny.py', f"--generic_dir={data['generic']}",
                                 f"--target_dir={bad_inputs[name]}"], cwd=ROOT, env=ENV, capture_output=True,
                                text=True, timeout=120)
        assert 'Traceback' not in result.stderr and result.returncode in (0, 2), (name, result.stderr[-2000:])
        if result.returncode == 2:
            assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith('error: '), result.stderr
        if name == 'bad_meta':
            assert result.returncode == 2 and 'bad_meta/meta.json is not a valid meta.json' in result.stderr


def test_sample_refuses_a_corrupt_checkpoint(bad_inputs):
    result = subprocess.run([sys.executable, 'sample.py', f"--ckpt={bad_inputs['root']}/truncated.pt"], cwd=ROOT,
                            env=ENV, capture_output=True, text=True, timeout=120)
    lines = result.stderr.splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith(f"error: cannot load checkpoint {bad_inputs['root']}/truncated.pt (")
    assert 'it is corrupt or not a checkpoint' in lines[0]


def test_changed_schedule_resume_is_refused_then_forced(bad_inputs, reference):
    args, _ = reference
    out = os.path.join(bad_inputs['root'], 'forced')
    os.makedirs(out)
    shutil.copy(os.path.join(bad_inputs['ref'], 'ckpt_15.pt'), os.path.join(out, 'ckpt.pt'))
    shutil.copy(os.path.join(bad_inputs['ref'], 'log.jsonl'), os.path.join(out, 'log.jsonl'))
    changed = [*args, f'--out_dir={out}', '--init_from=resume', '--learning_rate=0.002']
    rc, _, stderr = run_train(*changed)
    assert rc == 2 and 'learning_rate 0.003 -> 0.002' in stderr
    rc, stdout, stderr = run_train(*changed, '--force_resume=True')
    assert rc == 0 and 'resuming at step 15' in stdout, stderr[-3000:]
    ref_log, log = read_log(bad_inputs['ref']), read_log(out)
    before = lambda log: without_timing([r for r in log if r['step'] < 15 or (r['kind'] == 'eval' and r['step'] == 15)])
    assert before(log) == before(ref_log)  # kept as it was
    lrs = {r['step']: r['lr'] for r in log if r['kind'] == 'train'}
    ref_lrs = {r['step']: r['lr'] for r in ref_log if r['kind'] == 'train'}
    assert lrs[19] == pytest.approx(ref_lrs[19] * 2 / 3)  # stage 1 runs at the new peak LR from the resume on


# ---------------------------------------------------------------------------------------------------------------
# checks that need no process
# ---------------------------------------------------------------------------------------------------------------

def test_rank_count_and_torn_log_line(tmp_path):
    """In-process: a rank count that does not divide the accumulation (needs torchrun otherwise), and a log line
    torn by a kill mid-write, dropped on resume with everything after the checkpoint."""
    import runlog
    import train
    from configurator import UserError, load_config
    with pytest.raises(UserError, match=r"gradient_accumulation_steps=2 must be divisible by .* ranks \(3\)"):
        train.check_config(load_config(['config/tiny.py']), world=3)
    log = tmp_path / 'log.jsonl'
    records = [dict(kind='batch', step=0), dict(kind='train', step=0), dict(kind='eval', step=1),
               dict(kind='batch', step=1)]
    log.write_text(''.join(json.dumps(r) + '\n' for r in records) + '{"kind": "eval", "st')
    assert [json.loads(line) for line in runlog.kept_log_records(str(log), 1)] == records[:3]
    # a line that is not a log record (bytes, a list, a record without its step) ends the kept log, said once
    for bad in (b'\xff\xfe garbage', b'[1, 2]', b'{"kind": "train"}', b'{"kind": "train", "step": "x"}'):
        log.write_bytes(b''.join(json.dumps(r).encode() + b'\n' for r in records[:2]) + bad + b'\n' +
                        json.dumps(records[2]).encode() + b'\n')
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert [json.loads(line) for line in runlog.kept_log_records(str(log), 1)] == records[:2]
        assert out.getvalue() == f"warning: {log} line 3 is not a log record: the log is kept up to it\n"


def test_final_evals_keep_generation_task_scores(tmp_path):
    """A run resumed after its final eval takes summary.json's `final` from the log: a generation task's record
    (exact_match by filter, no acc) gives what the run itself would have written (tasks.evaluate_and_log)."""
    import json
    import runlog
    records = [dict(kind='eval', step=8, stage=1, val_loss_target=2.5, val_loss_generic=3.0),
               dict(kind='task', task='gsm', step=8, exact_match={'strict-match': 0.25, 'flexible-extract': 0.5},
                    n=4, eval_s=0.1),
               dict(kind='task', task='mc', step=8, acc=0.5, acc_norm=0.75, n=4, eval_s=0.1)]
    path = tmp_path / 'log.jsonl'
    path.write_text(''.join(json.dumps(r) + '\n' for r in records))
    assert runlog.final_evals(str(path)) == dict(
        val_loss_target=2.5, val_loss_generic=3.0,
        tasks=dict(gsm=dict(exact_match={'strict-match': 0.25, 'flexible-extract': 0.5}, n=4),
                   mc=dict(acc=0.5, acc_norm=0.75, n=4)))
