"""
checkpoint.py: everything train.py keeps on disk besides the log lines it writes: how a run starts (from scratch,
resuming itself, forking another run's checkpoint, another run's weights, or a Hugging Face model), checkpoints
(when they are due, the run's state in them, atomic saves, loads that run no code), the fingerprint a resume must
match, summary.json. (The log and what a resume keeps of it: runlog.py.)

A checkpoint holds the model, optimizer and GradScaler state, the CPU (and CUDA) RNG state, the step, the run's
config, its fingerprint and prefix hash, the generic offset and cursor, and the open train-loss window
(CHECKPOINT_KEYS). Two formats, one per `parallel`:
  ddp   ckpt.pt, ckpt_<step>.pt: one file, torch.save; read with torch.load(weights_only=True), so loading never
        runs code from it; written to a temporary file and renamed over the old one.
  fsdp  ckpt.dcp/, ckpt_<step>.dcp/: a directory written by torch.distributed.checkpoint (DCP), every rank its
        shards of the model and optimizer, plus meta.pt (everything else, as above). Written as <name>.tmp, then
        swapped in by two renames (<name> -> <name>.old, <name>.tmp -> <name>) and the old one removed: a kill
        between the renames leaves <name>.old, which is then the newest checkpoint (layout.latest()). DCP reshards
        on load, so such a run resumes on any number of ranks, with fsdp or ddp.
"""
import dataclasses
import hashlib
import os
import platform
import shutil
import subprocess
import warnings
from collections import namedtuple

import numpy as np
import torch
import torch.distributed as dist

import hf
import layout
import schedule
import sources
from configurator import DEFAULTS, UserError
from model import GPT, checkpoint_model_config
from tokenizer import tokenizer_meta

# keys that fix the data order and LR; a resume that changes one is refused (unless force_resume=True)
FINGERPRINT_KEYS = sorted(schedule.PER_STEP_KEYS | {  # and what else the updates compute with
    'batch_size', 'gradient_accumulation_steps', 'block_size', 'target_tokens', 'data_seed', 'seed', 'generic_offset',
    'dropout', 'weight_decay', 'beta1', 'beta2', 'adam_eps', 'grad_clip', 'loss_average', 'dtype'})
MODEL_KEYS = ('arch', 'n_layer', 'n_head', 'n_embd', 'intermediate_size', 'bias', 'block_size', 'n_kv_head',
              'tie_embeddings')
CHECKPOINT_KEYS = ('model', 'optimizer', 'scaler', 'step', 'config', 'fingerprint', 'prefix_hash', 'generic_cursor',
                   'rng_cpu', 'log_sums', 'last_log_step', 'tokenizer', 'vocab_size')

SHARDED_META = layout.SHARDED_META  # in a sharded checkpoint directory: all but the model and optimizer

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
        path = config['resume_from'] or layout.latest(config['out_dir'])
        if not path or not os.path.exists(path):
            raise UserError(f"init_from='resume' but {path or config['out_dir'] + '/ckpt.pt'} does not exist: start "
                            f"with init_from='scratch'")
    elif os.path.isdir(config['init_from']) and not is_ours(config['init_from']):
        path = config['init_from']  # a Hugging Face model directory: weights only, this run's own plan
        return Start('hf', path, None, 0, config['generic_offset'], hf.open_model_dir(path))
    else:  # one of our checkpoints, or a run directory: its newest
        path = layout.checkpoint_at(config['init_from'])
    checkpoint = load_checkpoint(path)
    check_architecture(checkpoint, config, path, meta)
    if config['init_from'] != 'resume':  # weights only: this run's own plan from step 0; replay is fresh data
        return Start('weights', path, checkpoint, 0, config['generic_offset'] or checkpoint['generic_cursor'],
                     checkpoint.get('hf_source'))
    # a run started from another run's weights keeps the offset it took
    offset = config['generic_offset'] or checkpoint['generic_offset']
    return Start('fork' if config['resume_from'] else 'resume', path, checkpoint, checkpoint['step'], offset,
                 checkpoint.get('hf_source'))


def is_sharded(path):
    return os.path.isdir(path)


def is_ours(directory):
    """A run directory or a sharded checkpoint (a directory that is neither is read as a Hugging Face model)."""
    return layout.latest(directory) is not None or layout.is_sharded_checkpoint(directory)


def check_out_dir(config, start):
    """Nothing in out_dir is replaced unasked: a finished run, or the checkpoint a new start would save over."""
    out_dir = config['out_dir']
    if os.path.isfile(os.path.join(out_dir, 'summary.json')) and not config['overwrite']:
        raise UserError(f"out_dir={out_dir!r} holds a finished run (summary.json): choose another out_dir, or pass "
                        f"--overwrite=True to replace it")
    if layout.latest(out_dir) and start.kind != 'resume' and not config['overwrite']:
        raise UserError(f"out_dir={out_dir!r} holds the checkpoint of an unfinished run: continue it with "
                        f"--init_from=resume, choose another out_dir, or pass --overwrite=True to start over")


def prepare_out_dir(out_dir):
    """Create out_dir; remove what a killed save left (never loaded) and an older summary.json (it would say
    "finished")."""
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create out_dir={out_dir!r}: {e.strerror}") from None
    for name in os.listdir(out_dir):
        path = os.path.join(out_dir, name)
        if (name.startswith('ckpt') and '.pt.tmp' in name) or name == 'summary.json':
            os.remove(path)
        elif name.startswith('ckpt') and (name.endswith('.dcp.tmp') or name.endswith('.dcp.old')
                                          and os.path.isdir(path[:-len('.old')])):
            shutil.rmtree(path)  # a killed sharded save, or an old one its successor replaced


# ---------------------------------------------------------------------------------------------------------------
# what a resume must match
# ---------------------------------------------------------------------------------------------------------------

def sample_sha256(tokens):
    """A hash of 16 evenly spaced slices of a split: catches data re-prepared at the same size, reading ~100 KB."""
    h = hashlib.sha256()
    for piece in sources.sampled_slices(tokens):
        h.update(piece.tobytes())
    return h.hexdigest()


def fingerprint(config, plan, generic, target):
    """What fixes the data order and the logged numbers: schedule keys, seeds, the generic offset, the optimizer's
    and regularisation keys, dtype, and each source's meta.json, split sizes and sampled contents."""
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
    # a key newer than the checkpoint has its default there
    saved = dict(DEFAULTS, **checkpoint['config'], tokenizer=checkpoint['tokenizer'],
                 vocab_size=checkpoint['vocab_size'])
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


def load_checkpoint(path, weights=False):
    """A checkpoint as a dict (CHECKPOINT_KEYS). Sharded: its meta.pt, with 'sharded' = the directory, and the model
    and optimizer left in their shards (load_sharded) unless weights=True: then 'model' is the whole model's state
    dict, read on this process alone."""
    if is_sharded(path):
        check_sharded(path)
        checkpoint = read_checkpoint_file(os.path.join(path, SHARDED_META), path)
        checkpoint['sharded'] = path
        if weights:
            model = GPT(checkpoint_model_config(checkpoint))
            load_sharded(path, model)
            checkpoint['model'] = model.state_dict()
        return checkpoint
    return read_checkpoint_file(path, path)


def read_checkpoint_file(file, path):
    # weights_only=True: loading a checkpoint can never run code from the file
    try:
        checkpoint = torch.load(file, map_location='cpu', weights_only=True)
    except Exception as e:
        raise UserError(f"cannot load checkpoint {path} ({first_line(e)}): it is corrupt or not a checkpoint; "
                        "use another one (a run may also keep ckpt_<step> ones beside it)") from None
    required = [k for k in CHECKPOINT_KEYS if not (file != path and k in ('model', 'optimizer'))]
    missing = [k for k in required if k not in checkpoint] if isinstance(checkpoint, dict) else ['all']
    if missing:
        raise UserError(f"{path} is not a checkpoint written by this train.py (missing: {', '.join(missing)})")
    return checkpoint


def check_sharded(path):
    """A sharded checkpoint is whole: DCP's .metadata, every shard file it lists, and meta.pt."""
    import torch.distributed.checkpoint as dcp  # imported when used: with DTensor it costs ~1 s at every start
    for name in ('.metadata', SHARDED_META):
        if not os.path.isfile(os.path.join(path, name)):
            raise UserError(f"sharded checkpoint {path} has no {name}: it is incomplete; use another checkpoint")
    try:
        metadata = dcp.FileSystemReader(path).read_metadata()
    except (Exception, dcp.api.CheckpointException) as e:
        raise UserError(f"cannot read sharded checkpoint {path} ({first_line(e)}): use another checkpoint") from None
    for shard in sorted({item.relative_path for item in metadata.storage_data.values()}):
        if not os.path.isfile(os.path.join(path, shard)):
            raise UserError(f"sharded checkpoint {path} is missing its shard {shard}: use another checkpoint")


def load_sharded(path, model, optimizer=None):
    """Fill the model (and the optimizer) from a sharded checkpoint, whatever the ranks and sharding that wrote it:
    DCP reads each rank's part of every tensor (a whole tensor on a model that is not sharded)."""
    import torch.distributed.checkpoint as dcp  # imported when used: with DTensor it costs ~1 s at every start
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict
    state = {'model': get_model_state_dict(model)}
    if optimizer is not None:
        init_optimizer_state(optimizer)
        state['optimizer'] = optimizer_tensors(model, optimizer)
    try:
        with warnings.catch_warnings():  # one process reading a sharded checkpoint is what we mean: no warning
            warnings.filterwarnings('ignore', message='torch.distributed is disabled')
            dcp.load(state, checkpoint_id=path, no_dist=not dist.is_initialized())  # in place, into `state`
    except (Exception, dcp.api.CheckpointException) as e:  # DCP's own exception is a BaseException
        raise UserError(f"cannot load sharded checkpoint {path} ({first_line(e)}): it does not fit this model, or "
                        f"is corrupt") from None
    set_model_state_dict(model, state['model'])
    if optimizer is not None:
        groups = read_checkpoint_file(os.path.join(path, SHARDED_META), path)['optimizer_groups']
        for group, saved in zip(optimizer.param_groups, groups):
            group.update(saved)  # the hyperparameters it was saved with, as optimizer.load_state_dict restores them


def optimizer_tensors(model, optimizer):
    """The optimizer's state by parameter name, {name: {'step', 'exp_avg', 'exp_avg_sq'}} (tensors; DTensor shards
    under FSDP2): what a sharded checkpoint stores. A tied weight is named as named_parameters() names it first,
    the same in every process (torch's get_state_dict picks one of its names from a set, which differs between
    processes, so a resume could not find it)."""
    names = {param: name for name, param in model.named_parameters()}
    return {names[param]: state for param, state in optimizer.state.items()}


def init_optimizer_state(optimizer):
    """Give a fresh AdamW its state tensors, so that a checkpoint can be loaded into them: one step with zero
    gradients at learning rate 0, which leaves every weight as it is (as torch's get_state_dict does too)."""
    if optimizer.state:
        return
    lrs = [group['lr'] for group in optimizer.param_groups]
    for group in optimizer.param_groups:
        group['lr'] = 0.0
        for param in group['params']:
            param.grad = torch.zeros_like(param)
    optimizer.step()
    for group, lr in zip(optimizer.param_groups, lrs):
        group['lr'] = lr
    optimizer.zero_grad(set_to_none=True)


def load_full_weights(model, state_dict):
    """A whole model's state dict (one of our .pt checkpoints) into a model that may be sharded: each rank keeps
    its part."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
    set_model_state_dict(model, state_dict, options=StateDictOptions(full_state_dict=True))


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
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def save_sharded(path, model, optimizer, state, rank):
    """A sharded checkpoint (every rank calls it): model and optimizer shards with DCP, the rest (`state`) in
    meta.pt by rank 0; written as <path>.tmp, then swapped in (module docstring), so that a kill or a full disk at
    any moment leaves the previous checkpoint whole."""
    import torch.distributed.checkpoint as dcp  # imported when used: with DTensor it costs ~1 s at every start
    from torch.distributed.checkpoint.state_dict import get_model_state_dict
    tmp, old = f"{path}.tmp", f"{path}.old"
    if rank == 0 and os.path.exists(tmp):
        shutil.rmtree(tmp)
    if dist.is_initialized():
        dist.barrier()
    try:
        dcp.save({'model': get_model_state_dict(model), 'optimizer': optimizer_tensors(model, optimizer)},
                 checkpoint_id=tmp)
        if rank == 0:
            groups = [{k: v for k, v in group.items() if k != 'params'} for group in optimizer.param_groups]
            save_checkpoint(os.path.join(tmp, SHARDED_META), dict(state, optimizer_groups=groups))
            if os.path.exists(path):
                os.replace(path, old)
            os.replace(tmp, path)
            fsync_dir(os.path.dirname(os.path.abspath(path)))
            if os.path.exists(old):
                shutil.rmtree(old)
    except (Exception, dcp.api.CheckpointException) as e:  # DCP gathers every rank's errors: all ranks stop here
        if isinstance(e, UserError):
            raise
        raise UserError(f"cannot write checkpoint {path} ({first_line(e)}): the previous checkpoint is unchanged; "
                        f"free space, then resume with --init_from=resume") from None
    if dist.is_initialized():
        dist.barrier()  # no rank goes on (or reads the checkpoint) before it is in place


def drop_other_latest(path):
    """After the run's newest checkpoint was written at `path`, remove its newest in the other format (a run that
    changed parallel on a resume), so that layout.latest() cannot pick a stale one."""
    for name in layout.LATEST[:2]:
        other = os.path.join(os.path.dirname(path), name)
        if other != path and os.path.exists(other):
            shutil.rmtree(other) if os.path.isdir(other) else os.remove(other)


def fsync_dir(directory):
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make a rename itself durable
    finally:
        os.close(dir_fd)


# ---------------------------------------------------------------------------------------------------------------
# a run's state, and the summary
# ---------------------------------------------------------------------------------------------------------------

def due(plan, step, config):
    """The run's latest checkpoint after `step` steps: every checkpoint_interval steps, at every stage start, at the
    end, and where the run stops early (stop_after: a sweep segment on a cluster)."""
    interval = config['checkpoint_interval']
    return (bool(interval and step % interval == 0) or step in (plan['N'], config['stop_after'])
            or step in schedule.stage_starts(plan))


def save_run(run, step, names):
    """Write the state of train.py's run after `step` steps as each of `names` in out_dir (sharded: every rank
    writes its part), unless the open loss window or the weights are non-finite: a diverged model never replaces
    the last good checkpoint. Returns whether it wrote."""
    config, plan, system, raw_model, meta = run.config, run.plan, run.system, run.raw_model, run.generic['meta']
    # a tensor's sum is non-finite iff an element is (short of ~1e38 weights): one reduce carries both checks;
    # under FSDP2 each rank sums its shards
    weights = torch.stack([(p.to_local() if hasattr(p, 'to_local') else p).detach().sum().double()
                           for p in raw_model.parameters()]).sum()
    health = torch.cat([run.window.sums, weights.view(1)])
    if system.world > 1:
        dist.all_reduce(health)
    health = health.cpu()
    if not torch.isfinite(health).all():
        if system.rank == 0:
            print(f"warning: not checkpointing after {step} steps: non-finite loss or weights", flush=True)
        return False
    state = dict(scaler=run.scaler.state_dict(), step=step, config=config, fingerprint=run.fingerprint,
                 prefix_hash=schedule.prefix_hashes(config, plan, upto=step)[-1],
                 generic_offset=plan['generic_offset'], generic_cursor=schedule.generic_cursor(plan, step),
                 rng_cpu=torch.get_rng_state(), log_sums=health[:5].clone(), last_log_step=run.last_log_step,
                 tokenizer=meta.get('tokenizer'), vocab_size=meta['vocab_size'],
                 # what export.py and sample.py need: the shape, the Hugging Face origin, the data's tokenizer
                 model_config=dataclasses.asdict(raw_model.config), hf_source=run.start.hf_source,
                 tokenizer_meta=tokenizer_meta(meta))
    if system.device_type == 'cuda':
        state['rng_cuda'] = torch.cuda.get_rng_state(system.device)
    for name in names:
        path = os.path.join(config['out_dir'], name)
        if config['parallel'] == 'fsdp':
            save_sharded(path, raw_model, run.optimizer, state, system.rank)
        elif system.rank == 0:
            save_checkpoint(path, dict(model=raw_model.state_dict(), optimizer=run.optimizer.state_dict(), **state))
        if system.rank == 0 and name.startswith('ckpt.'):
            drop_other_latest(path)
    return True


def write_summary(run, final, wall_s, compiled):
    """out_dir/summary.json of train.py's finished run (compiled: runtime.compile_counts()), and its last line."""
    config, plan, block_size = run.config, run.plan, run.config['block_size']
    summary = dict(config=config, plan=schedule.summarize(config, plan), final=dict(step=plan['N'], **final),
                   sequences=dict(target=plan['T'], generic=plan['generic_total']),
                   tokens=dict(target=plan['T'] * block_size, generic=plan['generic_total'] * block_size),
                   generic_offset=plan['generic_offset'],
                   generic_cursor_end=plan['generic_offset'] + plan['generic_total'],
                   git_commit=git_commit(), versions=dict(python=platform.python_version(), torch=torch.__version__,
                                                          numpy=np.__version__),
                   device=run.system.device_name, world_size=run.system.world,
                   sources={s['name']: source_summary(s) for s in (run.generic, run.target)}, wall_s=wall_s,
                   model=hf.model_summary(run.model_config, run.start.hf_source), compile=compiled)
    layout.write_json_atomic(os.path.join(config['out_dir'], 'summary.json'), summary)
    print(f"done: final val loss target {final.get('val_loss_target', float('nan')):.4f}, generic "
          f"{final.get('val_loss_generic', float('nan')):.4f}; {config['out_dir']}/summary.json", flush=True)


def git_commit():
    try:
        return subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=os.path.dirname(os.path.abspath(__file__)),
                              capture_output=True, text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def source_summary(source):
    return dict(dir=source['dir'], meta_sha256=source['meta_sha256'], meta=source['meta'],
                train_tokens=len(source['train']), val_tokens=len(source['val']))
