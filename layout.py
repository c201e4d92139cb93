"""
layout.py: where a run keeps its checkpoints, in one place, without torch (sweep.py and slurm.py read it too; the
formats themselves are checkpoint.py's), how a sweep starts a run in its directory (its config.py, the resume
arguments, the torchrun prefix: shared by the local launcher, launch.py, and slurm.py's jobs), and the one way its JSON
files are replaced. In a run directory:
    config.py            the run's full config, written by sweep.py (`python train.py <run>/config.py` reruns it)
    started.json         where a sweep really started the run: {"forked_from": the parent run's name or "",
                         "fork_step": k or 0}, written each time it starts other than from its own checkpoint
    ckpt.pt              the newest checkpoint, parallel='ddp' (one file)
    ckpt.dcp/            the newest checkpoint, parallel='fsdp' (a sharded directory; ckpt.dcp.old after a save
                         killed between its two renames)
    ckpt_<step>.pt, ckpt_<step>.dcp/   kept after <step> steps (checkpoint_steps; sweep forks start from them)
"""
import json
import os
import re

LATEST = ('ckpt.pt', 'ckpt.dcp', 'ckpt.dcp.old')  # a run holds one of them; the order breaks a tie
ROOT = os.path.dirname(os.path.abspath(__file__))  # the repository: train.py is here
START_RECORD = 'started.json'
SHARDED_META = 'meta.pt'  # in a sharded checkpoint directory: all but the model and optimizer (checkpoint.py)


def suffix(parallel):
    return '.dcp' if parallel == 'fsdp' else '.pt'


def latest(out_dir):
    """The newest checkpoint of a run directory, or None."""
    return next((os.path.join(out_dir, name) for name in LATEST if os.path.exists(os.path.join(out_dir, name))),
                None)


def kept_name(step, parallel):
    """The file (or, sharded, directory) name of the checkpoint kept after `step` steps."""
    return f'ckpt_{step}{suffix(parallel)}'


def kept_steps(out_dir):
    """The steps after which a run directory holds a kept checkpoint (either format)."""
    names = os.listdir(out_dir) if os.path.isdir(out_dir) else []
    return {int(m.group(1)) for m in map(re.compile(r'ckpt_(\d+)\.(pt|dcp)$').match, names) if m}


def kept(out_dir, step):
    """The checkpoint kept after `step` steps, in whichever format the run wrote it, or None."""
    return next((path for path in (os.path.join(out_dir, kept_name(step, p)) for p in ('ddp', 'fsdp'))
                 if os.path.exists(path)), None)


def checkpoint_at(path):
    """A checkpoint a user names: a file, a sharded directory, or a run directory (its newest checkpoint)."""
    return (latest(path) or path) if os.path.isdir(path) and not is_sharded_checkpoint(path) else path


def is_sharded_checkpoint(path):
    return os.path.isfile(os.path.join(path, SHARDED_META))


def last_step(out_dir):
    """Completed steps by the run's log.jsonl (its last record), or None without a log."""
    path = os.path.join(out_dir, 'log.jsonl')
    if not os.path.isfile(path):
        return None
    with open(path, 'rb') as f:
        f.seek(max(0, os.path.getsize(path) - 65536))
        for line in reversed(f.read().decode(errors='replace').splitlines()):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            # train/batch records: the step just taken; eval/task records: after that many steps
            return record['step'] + (record['kind'] in ('train', 'batch'))
    return None


def write_atomic(path, text):
    """Replace a file so that a reader never sees half of it: written beside it, then renamed."""
    with open(path + '.tmp', 'w') as f:
        f.write(text)
    os.replace(path + '.tmp', path)


def write_json_atomic(path, obj, indent=1, newline=False):
    """write_atomic of JSON (summary.json, a sweep's jobs.json; prepare's meta.json with indent=2 and a final
    newline: keep its format, sources.py fingerprints its bytes)."""
    write_atomic(path, json.dumps(obj, indent=indent) + ('\n' if newline else ''))


def write_run_config(path, config):
    """The run's exact config as a config file: `python train.py <run>/config.py` reruns it from scratch. Creates
    the run directory."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write("# written by sweep.py: this run's full config\n")
        for key, value in config.items():
            f.write(f"{key} = {value!r}\n")


def resume_args(out_dir, fork):
    """train.py arguments that start or continue run out_dir, decided when it starts: from its own checkpoint if it
    has one (it crashed, or was preempted, or an earlier job of it stopped at a fork point), else from the parent's
    checkpoint kept at the fork step (fork = (parent out_dir, step)) if that exists, else from scratch."""
    if latest(out_dir):
        return ["--init_from='resume'"]
    fork_checkpoint = kept(*fork) if fork else None
    if fork_checkpoint:
        return ["--init_from='resume'", f"--resume_from={fork_checkpoint!r}"]
    return []


def start_args(out_dir, fork, record=True):
    """resume_args, and where the run really starts recorded in out_dir/started.json when it does not continue its
    own checkpoint: forked from the parent's checkpoint (forked_from: the parent's run name, its directory's), or
    from scratch when that checkpoint does not exist. sweep.py's results read it, so a run planned as a fork that
    found no checkpoint is recorded as what it was. record=False: decide only (a job's other nodes)."""
    args = resume_args(out_dir, fork)
    if record and args != ["--init_from='resume'"]:
        forked = len(args) == 2
        write_json_atomic(os.path.join(out_dir, START_RECORD),
                          dict(forked_from=os.path.basename(os.path.normpath(fork[0])) if forked else '',
                               fork_step=fork[1] if forked else 0))
    return args


def read_start(out_dir):
    """A run's start record (start_args), or None when it has none; ValueError naming the file when it is not one
    (layout has no UserError: configurator imports it)."""
    path = os.path.join(out_dir, START_RECORD)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            record = json.load(f)
    except ValueError:  # not JSON, or not text
        record = None
    if not (isinstance(record, dict) and isinstance(record.get('forked_from'), str)
            and type(record.get('fork_step')) is int):
        raise ValueError(f"{path} is not a start record ({{\"forked_from\": a run name or \"\", \"fork_step\": a "
                         f"step}}): remove it (the run then counts as started from step 0)")
    return record


def torchrun_args(procs, parallel):
    """The arguments between python and train.py for one node of `procs` ranks: torchrun's, or none."""
    if procs > 1 or parallel == 'fsdp':  # FSDP2 needs torchrun's ranks, also alone
        return ['-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={max(procs, 1)}']
    return []
