"""
layout.py: where a run keeps its checkpoints, in one place, without torch (sweep.py and slurm.py read it too; the
formats themselves are checkpoint.py's), and the one way its JSON files are replaced. In a run directory:
    ckpt.pt              the newest checkpoint, parallel='ddp' (one file)
    ckpt.dcp/            the newest checkpoint, parallel='fsdp' (a sharded directory; ckpt.dcp.old after a save
                         killed between its two renames)
    ckpt_<step>.pt, ckpt_<step>.dcp/   kept after <step> steps (checkpoint_steps; sweep forks start from them)
"""
import json
import os

LATEST = ('ckpt.pt', 'ckpt.dcp', 'ckpt.dcp.old')  # a run holds one of them; the order breaks a tie
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


def kept(out_dir, step):
    """The checkpoint kept after `step` steps, in whichever format the run wrote it, or None."""
    return next((path for path in (os.path.join(out_dir, kept_name(step, p)) for p in ('ddp', 'fsdp'))
                 if os.path.exists(path)), None)


def checkpoint_at(path):
    """A checkpoint a user names: a file, a sharded directory, or a run directory (its newest checkpoint)."""
    return (latest(path) or path) if os.path.isdir(path) and not is_sharded_checkpoint(path) else path


def is_sharded_checkpoint(path):
    return os.path.isfile(os.path.join(path, SHARDED_META))


def write_atomic(path, text):
    """Replace a file so that a reader never sees half of it: written beside it, then renamed."""
    with open(path + '.tmp', 'w') as f:
        f.write(text)
    os.replace(path + '.tmp', path)


def write_json_atomic(path, obj, indent=1, newline=False):
    """write_atomic of JSON (summary.json, a sweep's jobs.json; prepare's meta.json with indent=2 and a final
    newline: keep its format, data.py fingerprints its bytes)."""
    write_atomic(path, json.dumps(obj, indent=indent) + ('\n' if newline else ''))
