"""bench.py: it runs a config end to end and prints its fields; its baseline loader makes batches of the same
shape, dtype and layout as data.load_step, from random offsets into one memmap."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import bench
import data
import schedule
from configurator import UserError, load_config
from helpers import ROOT
from sources import open_source


def test_bench_compare_and_profile_print_their_fields(sources, tmp_path):
    cmd = [sys.executable, 'bench.py', 'config/tiny.py', '--compare', '--profile', f'--generic_dir={sources[0]}',
           f'--target_dir={sources[1]}', f'--out_dir={tmp_path}', '--bench_steps=1', '--bench_warmup=0',
           '--bench_rounds=2', '--bench_loader_batches=3']
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    for name in ('replay', 'single-source'):
        line = next(line for line in lines if line.startswith(f'{name} loader:'))
        assert 'ms/step' in line and 'tokens/s' in line and 'mfu unknown' in line  # CPU: no made-up peak
    assert any(line.startswith('ratio replay/single-source tokens/s: ') for line in lines)
    assert any(line.startswith('loader only') and 'single-source' in line for line in lines)
    assert any(line.startswith('flops/token: ') for line in lines)
    assert sum(line.startswith('round ') for line in lines) == 2
    assert os.path.getsize(tmp_path / 'bench_trace.json') > 0


def test_bench_user_errors_are_one_line(sources, monkeypatch):
    with pytest.raises(UserError, match="generic_dir='/nonexistent' does not exist"):
        bench.main(['config/tiny.py', f'--target_dir={sources[1]}', '--generic_dir=/nonexistent'])
    with pytest.raises(UserError, match='bench_steps=0 must be at least 1'):
        bench.main(['config/tiny.py', '--bench_steps=0'])


@pytest.fixture(scope='module')
def load_args(sources):
    """data.load_step's arguments after t for tiny's plan (N=40, S=8 = 4 x 2 micro-steps, stage 2 from 32)."""
    config = load_config(['config/tiny.py', f'--generic_dir={sources[0]}', f'--target_dir={sources[1]}'])
    generic, target = open_source('generic', sources[0]), open_source('target', sources[1])
    plan = schedule.make_plan(config, target_windows=40, generic_windows=400)
    pool = schedule.target_pool(config['data_seed'], 40, plan['U'])
    views = data.window_view(generic['train'], 32), data.window_view(target['train'], 32)
    return (data.StepBatches(plan), pool, *views, 4, 2, 0, False)


def test_single_source_batch_matches_load_step_layout(load_args):
    block_size, mb, accum = 32, 4, 2
    replay = data.load_step(32, *load_args)
    tokens = np.arange(5000, dtype=np.uint16)  # row = consecutive tokens from a random offset
    single = bench.single_source_batch(tokens, mb * accum, mb, block_size, False, torch.Generator().manual_seed(0))
    assert len(single) == len(replay) == accum
    for (rows, flags), (replay_rows, replay_flags) in zip(single, replay):
        assert rows.shape == replay_rows.shape == (mb, block_size + 1)
        assert rows.dtype == replay_rows.dtype == torch.int64 and flags.dtype == replay_flags.dtype == torch.bool
        assert rows.is_contiguous() and replay_rows.is_contiguous()  # non_blocking copies need contiguous rows
        assert flags.shape == (mb,) and not flags.any()
        assert torch.equal(rows - rows[:, :1], torch.arange(block_size + 1).expand(mb, -1))
        assert int(rows.max()) < len(tokens)
    starts = torch.cat([rows[:, 0] for rows, _ in single])
    assert len(set(starts.tolist())) > 1  # random offsets, not one window repeated


def test_both_prefetchers_give_load_step_batches(load_args):
    """train.py loads in a thread on cuda and inline on cpu (tests run on cpu): both give load_step's batches."""
    for threaded in (True, False):
        prefetch = data.prefetcher(threaded)
        got = {t: prefetch.submit(data.load_step, t, *load_args) for t in (0, 32)}  # stage 1, stage 2
        for t, future in got.items():
            for (rows, flags), (want_rows, want_flags) in zip(future.result(), data.load_step(t, *load_args)):
                assert torch.equal(rows, want_rows) and torch.equal(flags, want_flags)
        prefetch.shutdown()


def test_step_batches_hand_out_the_plan(load_args):
    """data.StepBatches makes schedule.step_batch 64 steps at a time; any order of asks gets the plan's batches."""
    step_batches = load_args[0]
    for t in (0, 1, 39, 32, 33, 32, 5, 5):  # forward, the last step, back, and the same step twice
        got, want = step_batches(t), schedule.step_batch(step_batches.plan, t)
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])
    assert len(step_batches.ready) <= 64


def test_bench_times_the_runs_loaded_model(tmp_path, capsys):
    """init_from=a Hugging Face directory: bench.py times that model (its shape and weights, as train.py loads it),
    names it, and counts its parameters as the directory holds them; init_from='resume' is refused in one line."""
    import tiny_model  # prepare/'s (conftest.py puts it on sys.path)
    from safetensors import safe_open
    model_dir = str(tmp_path / 'llama')
    tok = tiny_model.make_tokenizer('llama', vocab_size=300, texts=tiny_model.training_texts()[:20])
    tiny_model.make_model('llama', model_dir, *tok, std=0.15)
    subprocess.run([sys.executable, 'prepare/demo.py', '--tokenizer', model_dir, '--max_tokens', '30K',
                    f"--generic_out={tmp_path / 'generic'}", f"--target_out={tmp_path / 'target'}"], cwd=ROOT,
                   check=True, capture_output=True, env=dict(os.environ, OMP_NUM_THREADS='1'))
    args = ['config/tiny.py', f"--generic_dir={tmp_path / 'generic'}", f"--target_dir={tmp_path / 'target'}",
            f'--out_dir={tmp_path / "out"}', '--bench_steps=1', '--bench_warmup=0', '--bench_rounds=1',
            '--bench_loader_batches=1', '--val_tokens=512']
    bench.main([*args, f'--init_from={model_dir}'])
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith('model: '))
    with safe_open(os.path.join(model_dir, 'model.safetensors'), 'pt') as f:
        in_directory = sum(int(np.prod(f.get_slice(name).get_shape())) for name in f.keys())
    assert f'the model directory {model_dir}' in line, line
    assert f'{in_directory:,} parameters in all' in line, line
    with pytest.raises(UserError, match="init_from='resume': bench.py times a run's model"):
        bench.main([*args, '--init_from=resume'])


def test_make_bench_gpu_runs_its_rows_on_cpu(tmp_path):
    """make bench-gpu DEVICE=cpu: the GPU rows' code paths at toy sizes (fsdp under torchrun), one markdown table."""
    result = subprocess.run(['make', '-s', 'bench-gpu', 'DEVICE=cpu',
                             f"BENCH_ARGS=--data_dir={tmp_path / 'data'} --out={tmp_path / 'out'}"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith('| row |'))
    assert 'ms/step' in lines[header] and 'MFU' in lines[header] and 'attention kernel' in lines[header]
    rows = lines[header + 2:header + 5]
    assert [row.split(' | ')[0] for row in rows] == [
        '| GPT-2 124M, block 1024 (toy size on cpu)', '| 150M Llama shape, block 4096 (toy size on cpu)',
        '| Llama-3.2-1B shape, FSDP2 x 1, block 2048 (toy size on cpu)']
    assert 'fsdp x 1' in rows[2] and all('unknown' in row and 'GiB' in row and 'off' in row for row in rows)
    assert all('flash_attention (cpu)' in row for row in rows)  # the kernel SDPA picks
