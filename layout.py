"""
layout.py: where a run keeps its checkpoints, in one place, without torch (sweep.py and slurm.py read it too; the
formats themselves are checkpoint.py's). In a run directory:
    ckpt.pt              the newest checkpoint, parallel='ddp' (one file)
    ckpt.dcp/            the newest checkpoint, parallel='fsdp' (a sharded directory; ckpt.dcp.old after a save
                         killed between its two renames)
    ckpt_<step>.pt, ckpt_<step>.dcp/   kept after <step> steps (checkpoint_steps; sweep forks start from them)
"""
import os

LATEST = ('ckpt.pt', 'ckpt.dcp', 'ckpt.dcp.old')  # a run holds one of them; the order breaks a tie


def suffix(parallel):
    return '.dcp' if parallel == 'fsdp' else '.pt'


def latest(out_dir):
    """The newest checkpoint of a run directory, or None."""
    return next((os.path.join(out_dir, name) for name in LATEST if os.path.exists(os.path.join(out_dir, name))),
                None)


def kept(out_dir, step):
    """The checkpoint kept after `step` steps, in whichever format the run wrote it, or None."""
    return next((path for path in (os.path.join(out_dir, f'ckpt_{step}{s}') for s in ('.pt', '.dcp'))
                 if os.path.exists(path)), None)


def checkpoint_at(path):
    """A checkpoint a user names: a file, a sharded directory, or a run directory (its newest checkpoint)."""
    sharded = os.path.isfile(os.path.join(path, 'meta.pt'))
    return (latest(path) or path) if os.path.isdir(path) and not sharded else path
