"""Short text-only train.py runs whose logs were recorded with the code before chat data (commit 8f027de), so that
tests/test_chat_train.py can check that text runs still compute exactly what they computed: every field of every
record, bit for bit (new keys may be added; wall-clock fields left out).

tests/data/text_logs_8f027de.json was written by this file run in a temporary clone of that commit:
    git clone -q . /tmp/pre && git -C /tmp/pre checkout -q 8f027de && cp tests/pre_change_logs.py /tmp/pre/tests/
    (cd /tmp/pre && OMP_NUM_THREADS=1 $PWD/.venv/bin/python tests/pre_change_logs.py --write)
    cp /tmp/pre/tests/data/text_logs_8f027de.json tests/data/
It uses only what that commit's tests/helpers.py already had."""
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, 'tests'), ROOT]
from helpers import read_log, without_timing, write_random_source  # noqa: E402

LOGS = os.path.join(ROOT, 'tests', 'data', 'text_logs_8f027de.json')
# config/tiny.py on random tokens: mid-training, both stages, evals and spike evals (val_tokens=300: not a whole
# number of val batches); and fine-tuning from scratch on 2 processes x 2 micro-steps each, clipped, cosine LR
RUNS = dict(
    midtrain=(1, ['--max_iters=12', '--log_interval=1', '--eval_interval=4', '--val_tokens=300']),
    finetune_ddp=(2, ['--mode=finetune', '--max_iters=8', '--target_epochs=2', '--lr_schedule=cosine',
                      '--warmup_fraction=0.25', '--batch_size=2', '--gradient_accumulation_steps=4',
                      '--grad_clip=0.55', '--log_interval=1', '--val_tokens=300', '--backend=gloo']),
)


def make_data(root):
    """Random-token generic and target sources (vocab 256, block 32): the same bytes on every machine."""
    return [f"--generic_dir={write_random_source(os.path.join(root, 'generic'), 32 * 400, seed=0)}",
            f"--target_dir={write_random_source(os.path.join(root, 'target'), 32 * 40, seed=1)}"]


def run_all(root):
    """{run name: its log without wall-clock fields}; the runs at once (as helpers.run_train runs each one)."""
    data, procs = make_data(os.path.join(root, 'data')), {}
    for name, (nproc, args) in RUNS.items():
        out = os.path.join(root, name)
        cmd = ['train.py', 'config/tiny.py', '--log_batch_ids=True', *data, *args, f'--out_dir={out}']
        launcher = ['-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={nproc}'] if nproc > 1 else []
        procs[name] = out, subprocess.Popen([sys.executable, *launcher, *cmd], cwd=ROOT, text=True,
                                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                            env=dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1'))
    for name, (out, proc) in procs.items():
        output, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, output[-3000:]
    return {name: without_timing(read_log(out)) for name, (out, _) in procs.items()}


if __name__ == '__main__':
    if sys.argv[1:] != ['--write']:
        sys.exit(f"usage: python {sys.argv[0]} --write   (records {LOGS})")
    with tempfile.TemporaryDirectory() as tmp:
        logs = run_all(tmp)
    with open(LOGS, 'w') as f:
        json.dump(logs, f)
        f.write('\n')
