"""Test-only: on the PYTHONPATH of a stand-in job's tasks when STANDIN_SLURM_STEP_DELAY is set (see standin.py).
Every optimizer step of a train.py process first sleeps that many seconds, so a test that signals a job "mid-run"
reaches it mid-run however fast the tiny model trains on a loaded machine. Sleeping changes no number."""
import os
import sys

if os.path.basename(sys.argv[0]) == 'train.py' and float(os.environ.get('STANDIN_SLURM_STEP_DELAY') or 0) > 0:
    import time

    from torch.optim.optimizer import register_optimizer_step_pre_hook

    register_optimizer_step_pre_hook(lambda *_: time.sleep(float(os.environ['STANDIN_SLURM_STEP_DELAY'])))
