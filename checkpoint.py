"""
checkpoint.py: everything train.py keeps on disk besides the log lines it writes: how a run starts (from scratch,
resuming itself, forking another run's checkpoint, or another run's weights), checkpoints (atomic saves, loads
that run no code), the fingerprint a resume must match, the log kept from before a checkpoint, summary.json.

A checkpoint is a dict of tensors and plain values (CHECKPOINT_KEYS), written with torch.save and read with
torch.load(weights_only=True): model, optimizer and GradScaler state, the CPU (and CUDA) RNG state, the step, the
run's config, its fingerprint and prefix hash, the generic offset and cursor, and the open train-loss window.
"""
import hashlib
import json
import os
import shutil
import subprocess
from collections import namedtuple

import torch

import data
import hf
import schedule
from configurator import UserError

# keys that fix the data order and LR; a resume that changes one is refused (unless force_resume=True)
FINGERPRINT_KEYS = sorted(schedule.PER_STEP_KEYS | {'batch_size', 'gradient_accumulation_steps', 'block_size',
                                                     'target_tokens', 'data_seed', 'seed', 'generic_offset'})
MODEL_KEYS = ('arch', 'n_layer', 'n_head', 'n_embd', 'intermediate_size', 'bias', 'block_size')
CHECKPOINT_KEYS = ('model', 'optimizer', 'scaler', 'step', 'config', 'fingerprint', 'prefix_hash', 'generic_cursor',
                   'rng_cpu', 'log_sums', 'last_log_step', 'tokenizer', 'vocab_size')

# How a run starts, decided once (start()):
#   kind        'scratch' | 'resume' (this run, from out_dir/ckpt.pt) | 'fork' (another run's checkpoint whose plan
#               prefix equals this run's: resume_from) | 'weights' (another run's weights; init_from=PATH) | 'hf'
#               (a Hugging Face model directory's weights; init_from=DIR)
#   path        the checkpoint file or model directory ('' from scratch); checkpoint: our checkpoint's contents
#               (None from scratch or a model directory)
#   step        steps already done (resume and fork; 0 otherwise)
#   generic_offset  generic windows used before step 0: generic_offset if set, else what the checkpoint says
#   hf_source   the Hugging Face model the weights come from, first or through our checkpoints (hf.open_model_dir)
Start = namedtuple('Start', 'kind path checkpoint step generic_offset hf_source')


def start(config, meta):
    """How this run starts, with its checkpoint loaded and checked against this model and data (meta: the
    generic source's meta.json)."""
    if config['init_from'] == 'scratch':
        return Start('scratch', '', None, 0, config['generic_offset'], None)
    if config['init_from'] == 'resume':
        path = config['resume_from'] or os.path.join(config['out_dir'], 'ckpt.pt')
        if not os.path.isfile(path):
            raise UserError(f"init_from='resume' but {path} does not exist: start with init_from='scratch'")
    elif hf.is_model_dir(config['init_from']):  # weights only, this run's own plan; the shape is the model's
        path = config['init_from']
        return Start('hf', path, None, 0, config['generic_offset'], hf.open_model_dir(path))
    else:
        path = config['init_from']
        path = os.path.join(path, 'ckpt.pt') if os.path.isdir(path) else path
    checkpoint = load_checkpoint(path)
    check_architecture(checkpoint, config, path, meta)
    if config['init_from'] != 'resume':  # weights only: this run's own plan from step 0; replay is fresh data
        return Start('weights', path, checkpoint, 0, config['generic_offset'] or checkpoint['generic_cursor'],
                     checkpoint.get('hf_source'))
    # a run started from another run's weights keeps the offset it took (older checkpoints: in their config)
    offset = config['generic_offset'] or checkpoint.get('generic_offset', checkpoint['config']['generic_offset'])
    return Start('fork' if config['resume_from'] else 'resume', path, checkpoint, checkpoint['step'], offset,
                 checkpoint.get('hf_source'))


def prepare_out_dir(out_dir):
    """Create out_dir; remove what a killed save left (never loaded) and an older summary.json (it would say
    "finished")."""
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create out_dir={out_dir!r}: {e.strerror}") from None
    for name in os.listdir(out_dir):
        if (name.startswith('ckpt') and '.pt.tmp' in name) or name == 'summary.json':
            os.remove(os.path.join(out_dir, name))


# ---------------------------------------------------------------------------------------------------------------
# what a resume must match
# ---------------------------------------------------------------------------------------------------------------

def sample_sha256(tokens):
    """A hash of 16 evenly spaced slices of a split: catches data re-prepared at the same size, reading ~100 KB."""
    h = hashlib.sha256()
    for piece in data.sampled_slices(tokens):
        h.update(piece.tobytes())
    return h.hexdigest()


def fingerprint(config, plan, generic, target):
    """What fixes the data order and the logged numbers: schedule keys, seeds, the generic offset, and each
    source's meta.json, split sizes and sampled contents."""
    out = {k: config[k] for k in FINGERPRINT_KEYS}
    out['generic_offset'] = plan['generic_offset']
    for s in (generic, target):
        out[f"{s['name']}_data"] = dict(meta_sha256=s['meta_sha256'], train_tokens=len(s['train']),
                                        val_tokens=len(s['val']), sample_sha256=sample_sha256(s['train']))
    return out


def describe_change(key, old, new):
    if isinstance(new, dict):  # a source: name what differs (sizes with numbers, hashes by name)
        old = old if isinstance(old, dict) else {}
        names = {'meta_sha256': 'meta.json', 'sample_sha256': 'contents'}
        parts = [f"{f} {old.get(f)} -> {v}" if f.endswith('tokens') else names[f]
                 for f, v in new.items() if old.get(f) != v]
        return f"{key.replace('_data', '_dir')} data ({', '.join(parts)})"
    return f"{key} {old!r} -> {new!r}"


def check_resume(run_start, config, plan, this_fingerprint):
    """A resume of this run must keep the schedule, seeds and data (the fingerprint). A fork (resume_from =
    another run's checkpoint) may change the future, but its first `step` steps and its data must be the
    checkpoint's: the prefix hash says whether this run would have reached exactly that state."""
    checkpoint, step = run_start.checkpoint, run_start.step
    saved = checkpoint['fingerprint']
    changed = [k for k in this_fingerprint if saved.get(k) != this_fingerprint[k]]
    if run_start.kind == 'fork':
        changed = [k for k in changed if k.endswith('_data')]
    changed = [describe_change(k, saved.get(k), this_fingerprint[k]) for k in changed]
    if run_start.kind == 'fork' and schedule.prefix_hashes(config, plan, upto=step)[-1] != checkpoint['prefix_hash']:
        changed.append(f"the plan of the first {step} steps")
    if changed and not config['force_resume']:
        raise UserError(f"cannot resume from {run_start.path}: changed since it was saved: {'; '.join(changed)}. "
                        f"Restore them, or use --force_resume=True to resume anyway")


def check_architecture(checkpoint, config, path, meta):
    """Weights load only into the same shapes, and mean something only with the same tokenizer. A run that started
    from a Hugging Face model keeps that model's shape (in its checkpoint), whatever this run's model keys say: its
    tokenizer is checked against the data by train.model_shape."""
    if checkpoint.get('hf_source'):
        return
    saved = dict(checkpoint['config'], tokenizer=checkpoint['tokenizer'], vocab_size=checkpoint['vocab_size'])
    now = dict(config, tokenizer=meta.get('tokenizer'), vocab_size=meta['vocab_size'])
    changed = [f"{k} {saved.get(k)!r} -> {now[k]!r}" for k in MODEL_KEYS + ('tokenizer', 'vocab_size')
               if saved.get(k) != now[k]]
    if changed:
        raise UserError(f"checkpoint {path} does not fit this model or data ({'; '.join(changed)}): set the model "
                        f"keys to the checkpoint's, or use data prepared with its tokenizer")


# ---------------------------------------------------------------------------------------------------------------
# saving and loading
# ---------------------------------------------------------------------------------------------------------------

def first_line(e):
    """An exception as one short line: torch's messages can run to a page."""
    text = (str(e).strip().splitlines() or [''])[0]
    return f"{type(e).__name__}: {text.split('. ')[0] if len(text) > 160 else text}"


def load_checkpoint(path):
    # weights_only=True: loading a checkpoint can never run code from the file
    try:
        checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as e:
        raise UserError(f"cannot load checkpoint {path} ({first_line(e)}): it is corrupt or not a checkpoint; "
                        f"use another one, or start with init_from='scratch'") from None
    missing = [k for k in CHECKPOINT_KEYS if k not in checkpoint] if isinstance(checkpoint, dict) else ['all']
    if missing:
        raise UserError(f"{path} is not a checkpoint written by this train.py (missing: {', '.join(missing)})")
    return checkpoint


def save_checkpoint(path, state):
    """Atomic: write a temporary file, fsync, rename over the old one. A kill or a full disk mid-save leaves the
    previous checkpoint in place and loadable (a killed save leaves a .tmp file; prepare_out_dir removes those)."""
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, 'wb') as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:  # torch.save reports a failed write (full disk) as a RuntimeError
        try:
            free = f"; {shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free / 2**20:.0f} MiB free there"
        except OSError:
            free = ''
        raise UserError(f"cannot write checkpoint {path} ({first_line(e)}{free}): "
                        f"the previous checkpoint is unchanged; free space, then resume with "
                        f"--init_from=resume") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    dir_fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


# ---------------------------------------------------------------------------------------------------------------
# the log and the summary
# ---------------------------------------------------------------------------------------------------------------

def kept_log_records(path, step):
    """Log lines written before the state after `step` completed steps was checkpointed: evals and task evals at
    <= step, train and batch records of steps < step. A torn last line (a kill mid-write) is dropped."""
    kept = []
    if os.path.isfile(path):
        with open(path) as f:
            for line in f:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    break
                if record['step'] < step or (record['kind'] in ('eval', 'task') and record['step'] == step):
                    kept.append(line if line.endswith('\n') else line + '\n')
    return kept


def restore_log(out_dir, run_start):
    """out_dir/log.jsonl as it stood at the checkpoint this run starts from (a fork: its parent's log up to the
    fork), atomically; empty for a run that starts at step 0. Returns its path."""
    log_path = os.path.join(out_dir, 'log.jsonl')
    kept = []
    if run_start.kind in ('resume', 'fork'):
        kept = kept_log_records(os.path.join(os.path.dirname(os.path.abspath(run_start.path)), 'log.jsonl'),
                                run_start.step)
    with open(log_path + '.tmp', 'w') as f:
        f.writelines(kept)
    os.replace(log_path + '.tmp', log_path)
    return log_path


def final_evals(log_path):
    """The last eval record's validation losses, and under 'tasks' the task records of its step (a run resumed
    after its final eval has none of its own)."""
    with open(log_path) as f:
        records = [json.loads(line) for line in f]
    last = [r for r in records if r['kind'] == 'eval'][-1]
    final = {k: v for k, v in last.items() if k.startswith('val_loss')}
    tasks = {r['task']: {k: r[k] for k in ('acc', 'acc_norm', 'n')} for r in records
             if r['kind'] == 'task' and r['step'] == last['step']}
    return dict(final, tasks=tasks) if tasks else final


def git_commit():
    try:
        return subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=os.path.dirname(os.path.abspath(__file__)),
                              capture_output=True, text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def write_json_atomic(path, obj):
    with open(path + '.tmp', 'w') as f:
        json.dump(obj, f, indent=1)
    os.replace(path + '.tmp', path)


def source_summary(source):
    return dict(dir=source['dir'], meta_sha256=source['meta_sha256'], meta=source['meta'],
                train_tokens=len(source['train']), val_tokens=len(source['val']))
