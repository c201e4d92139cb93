"""sweep.py --launcher=slurm against stand-in SLURM commands (tests/fake_slurm: sbatch, srun, squeue, sacct, scancel,
scontrol run submitit's real job scripts on this machine, in the order of their afterok dependencies): the sweep
equals the local launcher's bit for bit, also when jobs are killed mid-run and requeued; failed jobs block their
forks; reruns submit only what is neither done nor queued; the job script of a 2-node run; bad input."""
import csv
import json
import os
import pickle
import shutil
import subprocess
import sys
import time

import pytest

from helpers import ROOT, read_log, run_sweep, without_timing

FAKE_SLURM = os.path.join(ROOT, 'tests', 'fake_slurm')


def slurm_env(state_dir, hold=False, step_delay=0):
    """The environment of a login node whose SLURM is the stand-in, keeping its state in state_dir (step_delay: the
    seconds each of the jobs' optimizer steps sleeps first, so a kill at "step 10" cannot land after the last step)."""
    os.makedirs(state_dir, exist_ok=True)
    return dict(os.environ, PATH=FAKE_SLURM + os.pathsep + os.environ['PATH'], STANDIN_SLURM_STATE=str(state_dir),
                STANDIN_PYTHON=sys.executable, STANDIN_SLURM_HOLD='1' if hold else '0',
                STANDIN_SLURM_STEP_DELAY=str(step_delay))


def jobs(state_dir):
    """The stand-in's record of every job, by id."""
    folder = os.path.join(state_dir, 'jobs')
    return {name[:-5]: json.load(open(os.path.join(folder, name))) for name in os.listdir(folder)
            if name.endswith('.json')}


def wait_until(condition, what, timeout=300):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def logged_step(out_dir):
    """The last train record's step in a run's log.jsonl (-1 before any)."""
    path = os.path.join(out_dir, 'log.jsonl')
    steps = [-1]
    if os.path.isfile(path):
        for line in open(path):
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line being written
            if record['kind'] == 'train':
                steps.append(record['step'])
    return steps[-1]


def job_of(state_dir, run, start):
    return next(j for j in jobs(state_dir).values() if j['name'].startswith(f'replay:{run}:{start}..'))


def standin(env, *command):
    return subprocess.run([os.path.join(FAKE_SLURM, command[0]), *command[1:]], env=env, check=True,
                          capture_output=True, text=True).stdout


def cancel_leftovers(env, state_dir):
    """After a test, whatever happened in it: no stand-in job goes on running."""
    active = [job_id for job_id, job in jobs(state_dir).items() if job['state'] in ('PENDING', 'RUNNING')]
    if active:
        standin(env, 'scancel', *active)


def results(sweep_dir):
    """results.csv rows, with the sweep directory in out_dir replaced."""
    with open(os.path.join(sweep_dir, 'results.csv')) as f:
        return [dict(r, out_dir=r['out_dir'].replace(str(sweep_dir), 'SWEEP')) for r in csv.DictReader(f)]


@pytest.fixture(scope='module')
def slurm_sweep(sweeps, tmp_path_factory):
    """The three ρ runs of conftest's sweep (5 jobs: rho0.0 cut at the forks' steps 23 and 31) through the stand-in
    SLURM, with checkpoints every 5 steps. Two jobs are killed mid-run: the root run's first, as a preemption does
    it (every process killed, then the job requeued), and the fork rho0.75 by the time-limit signal (submitit's
    checkpoint() stops train.py and requeues the job)."""
    root, _, _, local_file = sweeps
    text, reference = open(local_file).read(), " + [dict(protocol='reference', reference=1, replay_fraction=0.0, " \
        "target_tokens=512)]"
    assert reference in text
    sweep_file = str(root / 'sweep_slurm.py')  # the local sweep's file without its reference run (2 jobs less)
    open(sweep_file, 'w').write(text.replace(reference, ''))
    state = tmp_path_factory.mktemp('slurm_state')
    env = slurm_env(state, step_delay=0.15)  # 11 steps left after the kill's trigger: 1.6 s at least
    sweep_dir = root / 'slurm'
    args = ('--launcher=slurm', '--gpus_per_run=0', f'--sweep_dir={sweep_dir}', '--checkpoint_interval=5')
    try:
        yield kill_and_finish(sweep_file, sweep_dir, args, env, state, root)
    finally:
        cancel_leftovers(env, state)


def kill_and_finish(sweep_file, sweep_dir, args, env, state, root):
    submitted = run_sweep(sweep_file, *args, env=env)
    # preemption: after 10 of its 23 steps (a checkpoint every 5 steps), every process killed, the job requeued
    wait_until(lambda: logged_step(sweep_dir / 'rho0.0') >= 9, "rho0.0 at step 10")
    first = job_of(state, 'rho0.0', 0)
    assert first['state'] == 'RUNNING'
    standin(env, 'scontrol', 'requeue', first['id'])
    # the time-limit signal, 7 steps into the fork's 17 (its log starts with its parent's first 23 steps)
    wait_until(lambda: logged_step(sweep_dir / 'rho0.75') >= 29, "rho0.75 at step 30")
    fork = job_of(state, 'rho0.75', 23)
    assert fork['state'] == 'RUNNING'
    standin(env, 'scancel', '--signal=USR2', fork['id'])

    wait_until(lambda: all(j['state'] not in ('PENDING', 'RUNNING') for j in jobs(state).values()), "the jobs")
    status = run_sweep(sweep_file, '--status=True', f'--sweep_dir={sweep_dir}', env=env)
    rerun = run_sweep(sweep_file, *args, env=env)
    return dict(root=root, state=state, sweep_dir=sweep_dir, submitted=submitted, status=status, rerun=rerun,
                first=first['id'], fork=fork['id'])


def test_slurm_sweep_equals_the_local_sweep_after_kills_and_requeues(slurm_sweep):
    s = slurm_sweep
    assert {j['state'] for j in jobs(s['state']).values()} == {'COMPLETED'}
    assert len(jobs(s['state'])) == 5
    local = [row for row in results(s['root'] / 'shared') if row['protocol'] != 'reference']
    assert results(s['sweep_dir']) == local  # every column, bit for bit (the tree too: forks, steps computed)
    for name in ('rho0.0', 'rho0.5', 'rho0.75'):
        assert (without_timing(read_log(s['sweep_dir'] / name))
                == without_timing(read_log(s['root'] / 'shared' / name))), name  # every loss, eval and fed id
    # both killed jobs ran twice, and the second attempt resumed mid-run from the run's own checkpoint (one of the
    # checkpoints every 5 steps inside the segment: where depends on how far the job got before the kill landed)
    for job_id, run, resumed in ((s['first'], 'rho0.0', (5, 10, 15, 20)), (s['fork'], 'rho0.75', (25, 30, 35))):
        assert jobs(s['state'])[job_id]['restarts'] == 1
        log = open(s['sweep_dir'] / run / 'stdout.log').read()
        attempts = log.split(f'[sweep.py: SLURM job {job_id},')
        assert len(attempts) == 3, log[-2000:]
        assert any(f'resuming at step {k}\n' in attempts[2] for k in resumed), attempts[2][:2000]
    # the time-limit signal went through submitit's checkpoint() and requeue
    submitit_log = ''.join(open(s['sweep_dir'] / 'slurm' / f"{s['fork']}_0_log.{ext}").read() for ext in ('out', 'err'))
    assert 'Calling checkpoint method' in submitit_log and f"Requeued job {s['fork']}" in submitit_log
    # a segment that ends at a fork point stops there without a summary; the next one resumes from it
    log = open(s['sweep_dir'] / 'rho0.0' / 'stdout.log').read()
    assert 'stopped after 23 steps (stop_after=23)' in log and 'stopped after 31 steps (stop_after=31)' in log
    assert 'resuming at step 23' in log and 'resuming at step 31' in log


def test_forks_wait_for_their_parents_segment(slurm_sweep):
    registry = json.load(open(slurm_sweep['sweep_dir'] / 'jobs.json'))['jobs']
    by_segment = {(j['run'], j['start'], j['stop']): j for j in registry}
    assert by_segment[('rho0.0', 0, 23)]['after'] == []
    assert by_segment[('rho0.0', 23, 31)]['after'] == [by_segment[('rho0.0', 0, 23)]['job_id']]
    assert by_segment[('rho0.75', 23, 40)]['after'] == [by_segment[('rho0.0', 0, 23)]['job_id']]
    assert by_segment[('rho0.0', 31, 40)]['after'] == [by_segment[('rho0.0', 23, 31)]['job_id']]
    assert by_segment[('rho0.5', 31, 40)]['after'] == [by_segment[('rho0.0', 23, 31)]['job_id']]
    script = open(slurm_sweep['sweep_dir'] / 'slurm' / f"{by_segment[('rho0.75', 23, 40)]['job_id']}_submission.sh")
    assert f"#SBATCH --dependency=afterok:{by_segment[('rho0.0', 0, 23)]['job_id']}\n" in script.read()


def test_status_and_rerun_of_a_finished_sweep(slurm_sweep):
    status = slurm_sweep['status']
    assert '3 runs: 3 finished' in status
    assert 'gathered 3 finished runs' in status
    assert 'submitting 0' in slurm_sweep['rerun'] and 'submitted job' not in slurm_sweep['rerun']


def held_sweep(tmp_path, base='config/tiny.py'):
    """A two-run ρ sweep, ρ = 0 and 0.75 at α = 1 (its plan needs no data; the ρ = 0.75 run forks at its stage 2),
    for SLURM jobs that are submitted but never started (held), or fail before train.py."""
    sweep_file = tmp_path / 'sweep.py'
    sweep_file.write_text(f"base = [{base!r}]\n"
                          "runs = [dict(replay_fraction=r) for r in (0.0, 0.75)]\n"
                          "overrides = {'generic_dir': '/nonexistent', 'target_dir': '/nonexistent'}\n"
                          f"sweep_dir = {str(tmp_path / 'out')!r}\n")
    return str(sweep_file)


def test_a_failed_job_blocks_its_forks_and_a_rerun_replaces_them(tmp_path):
    sweep_file = held_sweep(tmp_path)
    env = slurm_env(tmp_path / 'state')
    try:
        check_failure_and_rerun(sweep_file, env, tmp_path)
    finally:
        cancel_leftovers(env, tmp_path / 'state')


def check_failure_and_rerun(sweep_file, env, tmp_path):
    # the node cannot run the job: its setup line fails before train.py
    run_sweep(sweep_file, '--launcher=slurm', "--setup=echo 'error: /nonexistent/venv not found' >&2; exit 3",
              env=env)
    wait_until(lambda: all(j['state'] not in ('PENDING', 'RUNNING') for j in jobs(tmp_path / 'state').values()),
               "the jobs")
    states = {j['name']: j['state'] for j in jobs(tmp_path / 'state').values()}
    assert states == {'replay:rho0.0:0..23': 'FAILED', 'replay:rho0.0:23..40': 'CANCELLED',
                      'replay:rho0.75:23..40': 'CANCELLED'}  # kill-on-invalid-dep
    status = run_sweep(sweep_file, '--status=True', env=env)
    assert '2 runs: 1 blocked, 1 failed' in status
    lines = {line.split()[0]: line for line in status.splitlines() if line.startswith('  ')}
    assert 'failed' in lines['rho0.0'] and 'FAILED: error: /nonexistent/venv not found' in lines['rho0.0']
    assert 'blocked' in lines['rho0.75'] and 'behind rho0.0 steps 0..23 (failed)' in lines['rho0.75']

    # fixed: a rerun submits the three again (held: a full cluster), each after the new job it continues from
    held = slurm_env(tmp_path / 'state', hold=True)
    out = run_sweep(sweep_file, '--launcher=slurm', env=held)
    assert 'submitting 3' in out
    registry = json.load(open(tmp_path / 'out' / 'jobs.json'))['jobs']
    new = {(j['run'], j['start']): j for j in registry[3:]}
    assert new[('rho0.0', 23)]['after'] == new[('rho0.75', 23)]['after'] == [new[('rho0.0', 0)]['job_id']]
    assert '2 runs: 2 pending' in run_sweep(sweep_file, '--status=True', env=held)
    # queued jobs are not submitted twice; --cancel=True cancels them
    assert 'submitting 0' in run_sweep(sweep_file, '--launcher=slurm', env=held)
    # a sweep reshaped while its jobs are queued (no forks below 30 shared steps: rho0.0 becomes one job)
    result = run_sweep(sweep_file, '--launcher=slurm', '--min_fork_step=30', env=held, expect_ok=False)
    assert result.returncode == 2 and 'run rho0.0 has queued jobs for other segments' in result.stderr
    assert 'cancelled 3 queued or running jobs' in run_sweep(sweep_file, '--cancel=True', env=held)
    assert {j['state'] for j in jobs(tmp_path / 'state').values()} == {'FAILED', 'CANCELLED'}
    assert '2 runs: 2 cancelled' in run_sweep(sweep_file, '--status=True', env=held)


def test_the_job_script_of_a_two_node_run(tmp_path):
    sweep_file = held_sweep(tmp_path, 'config/flan_midtrain.py')  # the paper's batch splits over 16 ranks
    env = slurm_env(tmp_path / 'state', hold=True)
    out = run_sweep(sweep_file, '--launcher=slurm', '--partition=gpu', '--gpus_per_run=16', '--nodes=2',
                    '--time=600', "--sbatch={'qos': 'high'}", '--setup=source .venv/bin/activate', env=env)
    registry = {(j['run'], j['start']): j for j in json.load(open(tmp_path / 'out' / 'jobs.json'))['jobs']}
    parent, fork = registry[('rho0.0', 0)], registry[('rho0.75', 896)]
    script = open(tmp_path / 'out' / 'slurm' / f"{fork['job_id']}_submission.sh").read()
    for line in ('#SBATCH --nodes=2', '#SBATCH --ntasks-per-node=1', '#SBATCH --gpus-per-node=8',
                 '#SBATCH --cpus-per-task=64', '#SBATCH --partition=gpu', '#SBATCH --time=600',
                 '#SBATCH --qos=high', '#SBATCH --requeue', f"#SBATCH --dependency=afterok:{parent['job_id']}",
                 'source .venv/bin/activate'):
        assert line + '\n' in script, line
    assert ('#   python -m torch.distributed.run --nnodes=2 --nproc_per_node=8 --rdzv_backend=c10d '
            '--rdzv_endpoint=<first_node>:<port> --rdzv_id=<job_id> train.py ') in script
    assert 'srun' in script.split('# command')[1]  # one task per node, each starting torchrun
    assert f"submitted job {fork['job_id']} rho0.75: steps 896..1024" in out

    # what the job really runs: the pickled callable, asked for node 1's command in a 2-node allocation
    import slurm
    with open(tmp_path / 'out' / 'slurm' / f"{fork['job_id']}_submitted.pkl", 'rb') as f:
        segment = pickle.load(f).function
    assert isinstance(segment, slurm.Segment)
    command = slurm.train_command(segment.spec, ["--init_from='resume'"], 'gpu017', '4242')
    assert command[1:9] == ['-m', 'torch.distributed.run', '--nnodes=2', '--nproc_per_node=8', '--rdzv_backend=c10d',
                            f'--rdzv_endpoint=gpu017:{29500 + 4242}', '--rdzv_id=4242',
                            os.path.join(ROOT, 'train.py')]
    assert command[9:] == [str(tmp_path / 'out' / 'rho0.75' / 'config.py'), "--init_from='resume'"]
    assert segment.spec['fork'] == (str(tmp_path / 'out' / 'rho0.0'), 896)
    assert run_sweep(sweep_file, '--cancel=True', env=env)


def test_dry_run_of_the_paper_grid_needs_no_slurm():
    path = os.pathsep.join(p for p in os.environ['PATH'].split(os.pathsep) if not shutil.which('sbatch', path=p))
    out = run_sweep('config/sweep_midtrain.py', '--launcher=slurm', '--partition=gpu', '--dry_run=True',
                    env=dict(os.environ, PATH=path))
    assert 'would submit 29' in out
    assert ("job <job 8> midtrain_rho0.75_alpha1.0: steps 896..1024\n"
            "    resources: nodes=1 gpus_per_node=1 cpus_per_task=8 partition=gpu time=1440min\n"
            "    command: python train.py out/sweep_midtrain/midtrain_rho0.75_alpha1.0/config.py --init_from='resume' "
            "--resume_from='out/sweep_midtrain/midtrain_rho0.0_alpha1.0/ckpt_896.pt'\n"
            "    dependency: afterok:<job 2> (after midtrain_rho0.0_alpha1.0 steps 768..896)") in out
    assert not os.path.exists(os.path.join(ROOT, 'out', 'sweep_midtrain', 'jobs.json'))


@pytest.mark.parametrize('args, message', [
    (['--launcher=slurm'], "--launcher=slurm needs SLURM's sbatch on PATH: run this on the cluster's login node "
                           "(--dry_run=True prints the jobs without it)"),
    (['--launcher=pbs'], "--launcher=pbs is not a launcher: use 'local' (the default) or 'slurm'"),
    (['--launcher=slurm', '--dry_run=True', '--gpus_per_run=12', '--nodes=2', '--gpus_per_node=4'],
     "--gpus_per_run=12 over --nodes=2 needs 6 GPUs per node, more than --gpus_per_node=4: use --nodes=3"),
    (['--launcher=slurm', '--dry_run=True', '--gpus_per_run=3', '--nodes=2'],
     "--gpus_per_run=3 does not split evenly over --nodes=2"),
    (['--partition=gpu'], "--partition is an option of the slurm launcher: add --launcher=slurm"),
])
def test_bad_input_is_one_line_and_exit_status_2(tmp_path, args, message):
    path = os.pathsep.join(p for p in os.environ['PATH'].split(os.pathsep) if not shutil.which('sbatch', path=p))
    result = run_sweep(held_sweep(tmp_path), *args, env=dict(os.environ, PATH=path), expect_ok=False)
    assert result.returncode == 2 and result.stderr.startswith('error: ' + message), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / 'out')
