"""parallel='fsdp' (FSDP2) and its sharded checkpoints (torch.distributed.checkpoint), on CPU with the gloo backend
under torchrun, judged against the 1-process run of the same plan:
- a 2-process FSDP run logs the same losses (to float tolerance) and feeds the same sequences;
- killed (kill -9) mid-way and resumed on 2 processes it equals the uninterrupted run exactly; resumed on 1 process
  (DCP reshards; activation checkpointing on, too) it equals it to float tolerance;
- its sharded checkpoint exports to the Hugging Face model the 1-process run exports;
- a Hugging Face Llama (grouped-query attention, llama3 RoPE) loaded shard by shard on 2 ranks trains as 1 process;
- bad input (fsdp without torchrun, an unknown parallel, a sharded checkpoint missing a shard or its metadata):
  one `error:` line, exit status 2."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
from safetensors.torch import load_file

import export
from configurator import parse_value
from helpers import ROOT, make_sources, one_line_failures, read_log, run_sweep, without_timing

ENV = dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1')
# config/tiny.py, 32 steps x S=8 (stage 2, ρ=0.5, from step 24); a checkpoint every 4 steps, one kept at 12
RUN = ['config/tiny.py', '--max_iters=32', '--log_interval=1', '--eval_interval=8',
       '--checkpoint_interval=4', '--checkpoint_steps=[12]', '--spike_eval_steps=0', '--log_batch_ids=True']
LOSSES = ('loss', 'loss_target', 'loss_generic', 'val_loss_target', 'val_loss_generic')


def command(nproc, *args):
    cmd = [sys.executable, 'train.py', *RUN, *args]
    return cmd if nproc == 0 else [sys.executable, '-m', 'torch.distributed.run', '--standalone',
                                   f'--nproc_per_node={nproc}', *cmd[1:]]


def start(nproc, *args):
    """train.py in the background: nproc=0 plain python, else under torchrun."""
    return subprocess.Popen(command(nproc, *args), cwd=ROOT, env=ENV, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)


def kill_tree(pid):
    """kill -9 a process and all its descendants (children first found, then killed together)."""
    found, queue = [], [pid]
    while queue:
        p = queue.pop()
        found.append(p)
        try:
            with open(f'/proc/{p}/task/{p}/children') as f:
                queue += [int(c) for c in f.read().split()]
        except OSError:
            pass
    for p in found:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def finish(proc):
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-4000:]
    return out


def close(a, b, rel=1e-6):
    """Two logs: the same records, the same fed sequences, losses equal to `rel`."""
    assert [(r['kind'], r['step']) for r in a] == [(r['kind'], r['step']) for r in b]
    for x, y in zip(a, b):
        assert {k: v for k, v in x.items() if k not in LOSSES} == {k: v for k, v in y.items() if k not in LOSSES}
        for key in LOSSES:
            if x.get(key) is not None:
                assert y[key] == pytest.approx(x[key], rel=rel), (x, y)


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    """The 1-process run, the 2-process FSDP run, and the 2-process FSDP run killed mid-way then resumed."""
    root = tmp_path_factory.mktemp('fsdp')
    generic, target = make_sources(str(root / 'data'), target_base=1200, vocab=1300)
    data = [f'--generic_dir={generic}', f'--target_dir={target}']
    out = {name: str(root / name) for name in ('one', 'fsdp', 'killed')}
    one, fsdp = start(0, *data, f"--out_dir={out['one']}"), start(2, *data, '--parallel=fsdp', f"--out_dir={out['fsdp']}")
    finish(one), finish(fsdp)

    killed = start(2, *data, '--parallel=fsdp', f"--out_dir={out['killed']}")
    log = os.path.join(out['killed'], 'log.jsonl')
    deadline = time.time() + 240
    while killed.poll() is None and time.time() < deadline:  # kill -9 the whole job once it is past step 13
        if os.path.exists(log) and any('"batch"' in line and json.loads(line)['step'] >= 13 for line in open(log)
                                       if line.endswith('\n')):
            break
        time.sleep(0.05)
    kill_tree(killed.pid)  # torchrun starts its workers in sessions of their own: kill -9 each of them
    killed.communicate()
    assert not os.path.exists(os.path.join(out['killed'], 'summary.json'))  # it did not finish
    resumed = finish(start(2, *data, '--parallel=fsdp', f"--out_dir={out['killed']}", '--init_from=resume'))
    return dict(root=root, data=data, resumed=resumed, **out)


def test_fsdp_run_equals_the_one_process_run(runs):
    one, fsdp = read_log(runs['one']), read_log(runs['fsdp'])
    close(without_timing(one), without_timing(fsdp))
    assert [r['first_tokens'] for r in one if r['kind'] == 'batch'] == \
        [r['first_tokens'] for r in fsdp if r['kind'] == 'batch']
    assert sorted(os.listdir(runs['fsdp'])) == ['ckpt.dcp', 'ckpt_12.dcp', 'log.jsonl', 'summary.json']
    assert os.path.isfile(os.path.join(runs['fsdp'], 'ckpt.dcp', '.metadata'))


def test_killed_fsdp_run_resumed_on_two_processes_equals_the_uninterrupted_run(runs):
    match = [int(word) for line in runs['resumed'].splitlines() if 'resuming at step' in line
             for word in [line.rsplit(' ', 1)[-1]]]
    assert match and 0 < match[0] < 32 and match[0] % 4 == 0  # from a checkpoint mid-way
    assert without_timing(read_log(runs['killed'])) == without_timing(read_log(runs['fsdp']))
    assert not [name for name in os.listdir(runs['killed']) if '.tmp' in name or name.endswith('.old')]


def test_sharded_checkpoint_resumes_on_one_process(runs, tmp_path):
    """DCP reshards the 2-rank checkpoint after 12 steps for 1 rank (here with activation checkpointing, which
    recomputes and must not change the numbers)."""
    out = tmp_path / 'one_rank'
    os.makedirs(out)
    shutil.copytree(os.path.join(runs['fsdp'], 'ckpt_12.dcp'), out / 'ckpt.dcp')
    shutil.copy(os.path.join(runs['fsdp'], 'log.jsonl'), out / 'log.jsonl')
    printed = finish(start(1, *runs['data'], '--parallel=fsdp', '--activation_checkpointing=True',
                           f'--out_dir={out}', '--init_from=resume'))
    assert 'resuming at step 12' in printed and 'fsdp x 1' in printed
    close(without_timing(read_log(runs['fsdp'])), without_timing(read_log(out)))


def test_sharded_checkpoint_exports_the_same_model(runs, tmp_path):
    for name in ('one', 'fsdp'):
        export.main([runs[name], f'--to={tmp_path / name}'])  # python export.py RUN_DIR --to=DIR, in this process
    one, fsdp = (load_file(tmp_path / name / 'model.safetensors') for name in ('one', 'fsdp'))
    assert sorted(one) == sorted(fsdp)
    for key in one:
        assert (one[key] - fsdp[key]).abs().max() < 1e-5, key


def test_hugging_face_model_loads_shard_by_shard(runs, tmp_path):
    """init_from=DIR under FSDP2 builds the model on the meta device and each rank copies its shard of each tensor
    (hf.load_into): the run equals the 1-process run from the same directory."""
    import tiny_model  # prepare/'s (conftest.py puts it on sys.path)
    model_dir = str(tmp_path / 'llama')
    tok = tiny_model.make_tokenizer('llama', vocab_size=300, texts=tiny_model.training_texts()[:20])
    tiny_model.make_model('llama', model_dir, *tok, std=0.15)
    subprocess.run([sys.executable, 'prepare/demo.py', '--tokenizer', model_dir, '--max_tokens', '30K',
                    f"--generic_out={tmp_path / 'generic'}", f"--target_out={tmp_path / 'target'}"], cwd=ROOT, env=ENV,
                   check=True, capture_output=True)
    data = [f"--generic_dir={tmp_path / 'generic'}", f"--target_dir={tmp_path / 'target'}"]
    args = [*data, f'--init_from={model_dir}', '--max_iters=6', '--target_epochs=1', '--eval_interval=3',
            '--checkpoint_steps=[]', '--val_tokens=512']
    one, fsdp = (start(0, *args, f'--out_dir={tmp_path / "one"}'),
                 start(2, *args, '--parallel=fsdp', f'--out_dir={tmp_path / "fsdp"}'))
    finish(one), finish(fsdp)
    close(without_timing(read_log(tmp_path / 'one')), without_timing(read_log(tmp_path / 'fsdp')), rel=1e-5)


def test_sweep_forks_from_a_sharded_checkpoint(runs, tmp_path):
    """sweep.py with parallel='fsdp': the ρ=0.5 run forks from the ρ=0.75 run's ckpt_16.dcp (their plans part at
    step 16, where ρ=0.75's stage 2 starts) and ends as the uninterrupted 2-process run (1 rank each here)."""
    overrides = {key: parse_value(value) for key, value in (arg[2:].split('=', 1) for arg in
                                                             RUN[1:] + runs['data'] + ['--parallel=fsdp'])}
    sweep_file = tmp_path / 'sweep_fsdp.py'
    sweep_file.write_text(f"base = ['config/tiny.py']\noverrides = {overrides!r}\n"
                          "runs = [dict(replay_fraction=0.75), dict(replay_fraction=0.5)]\n"
                          f"sweep_dir = {str(tmp_path / 'sweep')!r}\n")
    out = run_sweep(str(sweep_file))
    assert 'rho0.5: fork of rho0.75 at step 16' in out, out
    assert os.path.isdir(tmp_path / 'sweep' / 'rho0.75' / 'ckpt_16.dcp')
    forked = read_log(tmp_path / 'sweep' / 'rho0.5')
    close(without_timing(read_log(runs['fsdp'])), without_timing(forked))


def test_bad_parallel_inputs_are_one_line(runs, tmp_path):
    broken = {}
    for what in ('shard', 'metadata'):
        broken[what] = shutil.copytree(os.path.join(runs['fsdp'], 'ckpt_12.dcp'), tmp_path / f'no_{what}.dcp')
        os.remove(broken[what] / ('__1_0.distcp' if what == 'shard' else '.metadata'))
    cases = [('fsdp without torchrun', ['--parallel=fsdp'], "parallel='fsdp' needs torchrun's ranks"),
             ('unknown parallel', ['--parallel=zero3'], "parallel='zero3' must be 'ddp' or 'fsdp'"),
             ('missing shard', [f"--init_from={broken['shard']}"], "no_shard.dcp is missing its shard __1_0.distcp"),
             ('missing metadata', [f"--init_from={broken['metadata']}"], "no_metadata.dcp has no .metadata"),
             ('one-file checkpoint resumed sharded', ['--parallel=fsdp', '--init_from=resume',
                                                      f"--out_dir={runs['one']}"], "resume it with parallel='ddp'")]
    argv = [[*RUN, *runs['data'], f'--out_dir={tmp_path / "case"}', *extra] for _, extra, _ in cases]
    failures, _ = one_line_failures([(name, expected) for name, _, expected in cases], argv, tmp_path)
    assert not failures, '\n'.join(failures)
