import os
import sys

# the tests import the project's top-level modules (schedule, train, model, ...), tests/helpers.py, and prepare/'s
# modules the way its scripts see each other (`import common`, as `python prepare/x.py` puts prepare/ on sys.path)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, 'tests'), ROOT, os.path.join(ROOT, 'prepare')]


import pytest  # noqa: E402

from helpers import make_sources, run_sweep  # noqa: E402


@pytest.fixture(scope='module')
def sources(tmp_path_factory):
    """(generic_dir, target_dir) of helpers.make_sources' default data (test_stages.py makes its own)."""
    return make_sources(str(tmp_path_factory.mktemp('data')))


@pytest.fixture(scope='session')
def sweeps(tmp_path_factory):
    """A mid-training WSD ρ sweep at α=1, plus a no-replay run with twice the target data, run twice with the local
    launcher: with prefix sharing and from scratch (tests/test_sweep.py; test_slurm.py compares its SLURM run)."""
    root = tmp_path_factory.mktemp('sweep')
    generic, target = make_sources(str(root / 'data'), target_base=1200, vocab=1300)  # a small vocab: fast steps
    sweep_file = root / 'sweep_test.py'
    sweep_file.write_text(
        "base = ['config/tiny.py']\n"
        f"overrides = {{'generic_dir': {generic!r}, 'target_dir': {target!r}, 'log_batch_ids': True}}\n"
        "runs = [dict(replay_fraction=r) for r in (0.0, 0.5, 0.75)] + "
        "[dict(protocol='reference', reference=1, replay_fraction=0.0, target_tokens=512)]\n"
        f"sweep_dir = {str(root / 'shared')!r}\n")
    shared_out = run_sweep(str(sweep_file), '--jobs=2')
    scratch_out = run_sweep(str(sweep_file), '--share=False', f"--sweep_dir={root / 'scratch'}", '--jobs=2')
    return root, shared_out, scratch_out, str(sweep_file)

