"""
slurm.py: `python sweep.py SWEEP --launcher=slurm`: a sweep's runs as SLURM jobs, submitted through submitit.

Jobs. A run that other runs fork from is cut at their fork steps: each piece, a *segment* (steps a..b), is one job
that runs train.py with --stop_after=b (it writes ckpt.pt and ckpt_b.pt and exits), and the jobs that continue from
step b, the run's own next segment and the first segments of the runs forking there, are submitted with
--dependency=afterok on it. A fork starts as soon as its parent has computed the shared steps; no job holds a GPU
waiting for a file. A job decides when it STARTS where to begin (layout.start_args): its run's own ckpt.pt if there
is one, else the parent's checkpoint at the fork step, else step 0; so a requeued job continues exactly, as
`train.py --init_from=resume` does after a crash.

On its nodes a job runs one task per node (submitit's srun), which starts `python train.py` for a one-GPU run, or
torchrun with --nproc_per_node = the run's GPUs per node, and for several nodes the c10d rendezvous on the first
node of the job's node list (SLURM_JOB_NODELIST). The task is a submitit Checkpointable: on the time-limit signal
(SIGUSR2, 90 s before the limit) it stops train.py and submitit requeues the job, which resumes from the run's last
ckpt.pt (so at most checkpoint_interval steps are computed twice). Jobs are submitted with --requeue, so SLURM
requeues preempted jobs too, and --kill-on-invalid-dep=yes, so the jobs after a failed one are cancelled rather
than left pending.

sweep_dir/jobs.json records every job submitted: run, segment, job id, the jobs it waits for, resources, command.
--status=True: each run's state from the queue (squeue, then sacct) and its files; running the sweep again submits
only the segments that are neither done (their checkpoint, or summary.json, exists) nor queued (pending or
running), and replaces queued jobs that wait on a failed one; --cancel=True cancels the queued and running jobs.
submitit's job scripts and logs go to sweep_dir/slurm/. The repository, its Python and sweep_dir must be on a
filesystem every node sees.
"""
import datetime
import getpass
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

import submitit

import layout
from configurator import UserError

TIMEOUT_REQUEUES = 10  # a job requeues itself on its time limit at most this many times (submitit's countdown)
QUEUED = {'PENDING', 'REQUEUED', 'REQUEUE_FED', 'REQUEUE_HOLD', 'RESV_DEL_HOLD', 'SUSPENDED', 'RESIZING'}
RUNNING = {'RUNNING', 'CONFIGURING', 'COMPLETING', 'SIGNALING', 'STAGE_OUT', 'STOPPED'}
ACTIVE = QUEUED | RUNNING  # a job that still runs, or will
ERROR_LINE = re.compile(r'^(error: |[\w.]*(Error|Exception|Interrupt)\b)')


# ---------------------------------------------------------------------------------------------------------------
# the jobs: segments of the fork tree
# ---------------------------------------------------------------------------------------------------------------

def segments(runs, order):
    """Every run's jobs, each after the job it waits for: dicts with the run, steps start..stop, and `after`, the
    key (run name, start, stop) of the segment it continues from (None for a run from scratch)."""
    fork_points = {}
    for run in runs:
        if run['parent'] is not None:
            fork_points.setdefault(run['parent'], set()).add(run['fork_step'])
    out, ends = [], {}  # ends: (run index, step) -> the key of that run's segment ending there
    for i in order:
        run = runs[i]
        n_steps = run['steps']
        start = run['fork_step'] if run['parent'] is not None else 0
        after = ends[(run['parent'], start)] if run['parent'] is not None else None
        bounds = [start] + sorted(k for k in fork_points.get(i, ()) if start < k < n_steps) + [n_steps]
        for a, b in zip(bounds[:-1], bounds[1:]):
            key = (run['name'], a, b)
            out.append(dict(key=key, run=run, start=a, stop=b, after=after))
            ends[(i, b)] = after = key
    return out


def segment_done(segment):
    """Its run finished, or it is not the last segment and its run kept the checkpoint at its last step."""
    run = segment['run']
    out = run['config']['out_dir']
    return (os.path.isfile(os.path.join(out, 'summary.json'))
            or (segment['stop'] < run['steps'] and layout.kept(out, segment['stop']) is not None))


def segment_states(segs, registry, states):
    """key -> (state, latest registry entry or None, SLURM state) for every segment, where state is done, running,
    pending, failed, cancelled, blocked (pending, or cancelled, behind a failed job: it never runs as submitted) or
    '' (never submitted)."""
    latest = {(job['run'], job['start'], job['stop']): job for job in registry['jobs']}
    result = {}
    for seg in segs:
        job = latest.get(seg['key'])
        slurm_state = states.get(job['job_id'], '') if job else ''
        if segment_done(seg):
            state = 'done'
        elif job is None:
            state = ''
        elif slurm_state in RUNNING:
            state = 'running'
        elif slurm_state in QUEUED:
            state = 'pending'
        elif slurm_state.startswith('CANCELLED'):
            state = 'cancelled'
        else:  # FAILED, TIMEOUT, OUT_OF_MEMORY, NODE_FAIL, ...; COMPLETED without its checkpoint; unknown to SLURM
            state = 'failed'
        if seg['after'] and state in ('pending', 'cancelled'):
            up_state, up_job, _ = result[seg['after']]
            stale = up_state in ('pending', 'running') and up_job['job_id'] not in job['after']  # waits on an old job
            if up_state in ('failed', 'blocked') or stale:
                state = 'blocked'
        result[seg['key']] = (state, job, slurm_state)
    return result


# ---------------------------------------------------------------------------------------------------------------
# what a job runs
# ---------------------------------------------------------------------------------------------------------------

def train_command(spec, resume, first_node='<first_node>', job_id='<job_id>', python=sys.executable,
                  root=layout.ROOT):
    """The command every node of the job runs: train.py alone, or under torchrun (one node: --standalone; several:
    the c10d rendezvous on the job's first node)."""
    args = [os.path.join(root, 'train.py'), spec['config'], *resume]
    if spec['stop_after']:
        args.append(f"--stop_after={spec['stop_after']}")
    nodes, procs = spec['nodes'], spec['procs_per_node']
    if nodes > 1:  # a port per job, so two multi-node jobs whose first node is the same do not meet
        port = 29500 + int(job_id) % 10000 if str(job_id).isdigit() else '<port>'
        torchrun = ['-m', 'torch.distributed.run', f'--nnodes={nodes}', f'--nproc_per_node={procs}',
                    '--rdzv_backend=c10d', f'--rdzv_endpoint={first_node}:{port}', f'--rdzv_id={job_id}']
    else:
        torchrun = layout.torchrun_args(procs, spec['parallel'])
    return [python, *torchrun, *args]


def ignore_requeue_signal():
    """In train.py's process: the time-limit signal is for submitit's handler in the task, which stops train.py."""
    signal.signal(getattr(signal, 'SIG' + submitit.JobEnvironment.USR_SIG), signal.SIG_IGN)


class Segment(submitit.helpers.Checkpointable):
    """What a job runs on each of its nodes (submitit pickles it into the job): train.py for one segment of a run,
    from where the run stands when the job starts."""

    def __init__(self, spec):
        self.spec, self.process = spec, None

    def __call__(self):
        env = submitit.JobEnvironment()
        spec = self.spec
        # decided now, so a requeued job continues; node 0 records where the run started
        resume = layout.start_args(spec['out_dir'], spec['fork'], record=env.node == 0)
        command = train_command(spec, resume, env.hostnames[0], env.job_id)
        log = open(os.path.join(spec['out_dir'], 'stdout.log'), 'a') if env.node == 0 else None
        header = (f"[sweep.py: SLURM job {env.job_id}, node {env.node} ({env.hostname}), steps {spec['start']}.."
                  f"{spec['stop']}] {command_text(command)}")
        print(header, flush=True)
        if log:
            print(header, file=log, flush=True)
        self.process = subprocess.Popen(command, cwd=spec['cwd'], env=dict(os.environ, PYTHONUNBUFFERED='1'),
                                        stdout=log, stderr=subprocess.STDOUT if log else None,
                                        preexec_fn=ignore_requeue_signal)
        code = self.process.wait()
        if code != 0:
            raise RuntimeError(f"train.py exited with status {code}: see {spec['out_dir']}/stdout.log")

    def checkpoint(self, *args, **kwargs):
        """submitit calls this on the time-limit or preemption signal, then requeues the job: stop train.py (the
        requeued job resumes from the run's last ckpt.pt) and hand back the same segment."""
        if self.process is not None:
            self.process.terminate()
            # not Popen.wait(): this runs as a signal handler inside __call__'s Popen.wait(), which holds its lock
            deadline = time.time() + 60
            while time.time() < deadline:
                try:
                    if os.waitpid(self.process.pid, os.WNOHANG)[0]:
                        break
                except ChildProcessError:  # already reaped
                    break
                time.sleep(0.1)
            else:
                self.process.kill()
        return submitit.helpers.DelayedSubmission(Segment(self.spec))


def job_spec(seg, runs, procs_per_node, nodes):
    """What Segment needs, as plain values (it is pickled into the job)."""
    run = seg['run']
    out = run['config']['out_dir']
    first = run['parent'] is not None and seg['start'] == run['fork_step']  # a fork's first segment
    parent = runs[run['parent']]['config'] if first else None
    fork = (parent['out_dir'], seg['start']) if first else None
    # the checkpoint the parent will keep at the fork step, in its own format (what the command shows before it exists)
    fork_checkpoint = (os.path.join(parent['out_dir'], layout.kept_name(seg['start'], parent['parallel']))
                       if first else None)
    return dict(run=run['name'], out_dir=out, config=os.path.join(out, 'config.py'), fork=fork,
                fork_checkpoint=fork_checkpoint, parallel=run['config']['parallel'], start=seg['start'],
                stop=seg['stop'], stop_after=seg['stop'] if seg['stop'] < run['steps'] else 0,
                nodes=nodes, procs_per_node=procs_per_node, cwd=os.getcwd())


def command_text(command):
    """A command as a person reads it and a shell runs it: train.py's quoted string values stay as they are (the
    shell drops the quotes, and train.py reads the same string)."""
    return ' '.join(a if re.fullmatch(r"[\w@%+=:,./'<>-]+", a) else shlex.quote(a) for a in command)


def shown_command(spec):
    """The command a job will run, with python and paths relative to the working directory, and the resume
    arguments layout.start_args will give when the job starts, if the jobs before it did their part."""
    if spec['fork']:
        resume = ["--init_from='resume'", f"--resume_from={spec['fork_checkpoint']!r}"]
    else:
        resume = ["--init_from='resume'"] if spec['start'] > 0 else []
    root = os.path.relpath(layout.ROOT, spec['cwd'])
    return command_text(train_command(spec, resume, python='python', root='' if root == '.' else root))


# ---------------------------------------------------------------------------------------------------------------
# resources, the queue and the registry
# ---------------------------------------------------------------------------------------------------------------

def job_parameters(options, runs):
    """(processes per node, submitit SlurmExecutor parameters) from the sweep options. A UserError when the GPUs per
    run do not fit the nodes asked for, or a run's batch does not split over its ranks."""
    gpus, nodes, gpus_per_node = options['gpus_per_run'], options['nodes'], options['gpus_per_node']
    if nodes < 1 or gpus < 0 or gpus_per_node < 0:
        raise UserError(f"--nodes={nodes} must be at least 1, --gpus_per_run={gpus} and --gpus_per_node="
                        f"{gpus_per_node} 0 or more")
    if gpus % nodes:
        raise UserError(f"--gpus_per_run={gpus} does not split evenly over --nodes={nodes}: each node runs the same "
                        f"number of ranks, so give a multiple of {nodes} GPUs (or --gpus_per_run=0 for CPUs)")
    per_node = gpus // nodes
    if gpus_per_node and per_node > gpus_per_node:
        raise UserError(f"--gpus_per_run={gpus} over --nodes={nodes} needs {per_node} GPUs per node, more than "
                        f"--gpus_per_node={gpus_per_node}: use --nodes={-(-gpus // gpus_per_node)}")
    if gpus == 0 and gpus_per_node:
        raise UserError(f"--gpus_per_run=0 runs on CPUs: drop --gpus_per_node={gpus_per_node}")
    procs = max(1, per_node)
    for run in runs:
        accumulation = run['config']['gradient_accumulation_steps']
        if accumulation % (procs * nodes):
            raise UserError(f"run {run['name']}: gradient_accumulation_steps={accumulation} must be divisible by "
                            f"its {procs * nodes} ranks ({nodes} nodes x {procs})")
    params = dict(time=options['time'], nodes=nodes, ntasks_per_node=1,
                  additional_parameters={'requeue': True, 'kill-on-invalid-dep': 'yes', **options['sbatch']})
    if per_node:
        params['gpus_per_node'] = gpus_per_node or per_node
    if options['cpus_per_task'] or per_node:
        params['cpus_per_task'] = options['cpus_per_task'] or 8 * per_node
    params.update({key: options[key] for key in ('partition', 'account') if options[key]})
    if options['mem_gb']:
        params['mem'] = f"{options['mem_gb']}G"
    return procs, params


def resources_text(params):
    shown = {k: v for k, v in params.items() if k not in ('additional_parameters', 'ntasks_per_node', 'time')}
    extra = {k: v for k, v in params['additional_parameters'].items() if k not in ('requeue', 'kill-on-invalid-dep')}
    return ' '.join([f"{k}={v}" for k, v in shown.items()] + [f"time={params['time']}min"] +
                    [f"--{k}={v}" for k, v in extra.items()])


def call(command, check=True):
    """A SLURM command's stdout; a UserError naming it when it fails."""
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise UserError(f"{command[0]} failed ({e}): is SLURM reachable from here?") from None
    if check and result.returncode:
        raise UserError(f"{shlex.join(command)} failed: {(result.stderr.strip().splitlines() or [''])[-1]}")
    return result.stdout


def need(command, why, hint=''):
    if shutil.which(command) is None:
        raise UserError(f"{why} needs SLURM's {command} on PATH: run this on the cluster's login node{hint}")


def queue_states(job_ids):
    """SLURM's state of each job: squeue for queued and running jobs, sacct for those that ended ('' when neither
    knows it, e.g. accounting has purged it)."""
    ids, states = set(job_ids), {}
    if not ids:
        return states
    for line in call(['squeue', '--noheader', '--format=%i|%T', f'--user={getpass.getuser()}']).splitlines():
        job, _, state = line.strip().partition('|')
        if job in ids:
            states[job] = state
    ended = sorted(ids - set(states))
    if ended and shutil.which('sacct'):
        out = call(['sacct', '--noheader', '--parsable2', '--allocations', '--format=JobID,State',
                    '--jobs=' + ','.join(ended)], check=False)
        for line in out.splitlines():
            job, _, state = line.strip().partition('|')
            if job in ids and state:
                states[job] = state.split()[0]  # 'CANCELLED by 1234' -> CANCELLED
    return states


def registry_path(sweep_dir):
    return os.path.join(sweep_dir, 'jobs.json')


def read_registry(sweep_dir):
    path = registry_path(sweep_dir)
    if not os.path.isfile(path):
        return dict(jobs=[])
    try:
        with open(path) as f:
            registry = json.load(f)
    except ValueError:
        raise UserError(f"{path} is not valid JSON: restore it, or move it away to start the sweep's registry "
                        f"anew (its jobs are then no longer tracked)") from None
    if not (isinstance(registry, dict) and isinstance(registry.get('jobs'), list)
            and all(isinstance(job, dict) for job in registry['jobs'])):
        raise UserError(f"{path} is JSON but not a sweep's job registry (an object whose 'jobs' is a list of "
                        f"objects): restore it, or move it away to start the registry anew")
    fields = dict(job_id=str, run=str, start=int, stop=int, after=list)  # what status and submit read of a job
    for i, job in enumerate(registry['jobs']):
        wrong = [k for k, kind in fields.items() if not isinstance(job.get(k), kind) or isinstance(job.get(k), bool)]
        if wrong:
            raise UserError(f"{path}: jobs[{i}] has no {wrong[0]} of the kind submit writes "
                            f"({fields[wrong[0]].__name__}): restore the file, or move it away to start the registry "
                            f"anew")
    return registry


def submitted_options(sweep_dir):
    """The sweep options that shaped the submitted jobs' tree, for --status and --cancel."""
    registry = read_registry(sweep_dir)
    return dict(launcher='slurm', min_fork_step=registry.get('min_fork_step', 0)) if registry['jobs'] else {}


# ---------------------------------------------------------------------------------------------------------------
# submit, status, cancel
# ---------------------------------------------------------------------------------------------------------------

def submit(runs, order, sweep_dir, options):
    """Submit every segment that is neither done nor queued, each after the job it continues from
    (--dry_run=True: print them)."""
    dry_run = options['dry_run']
    if not dry_run:
        need('sbatch', "--launcher=slurm", " (--dry_run=True prints the jobs without it)")
        need('srun', "--launcher=slurm")
        need('squeue', "--launcher=slurm")
    procs, params = job_parameters(options, runs)
    segs = segments(runs, order)
    registry = read_registry(sweep_dir)
    known = [job['job_id'] for job in registry['jobs']]
    has_squeue = shutil.which('squeue') is not None
    if known and not has_squeue:
        print(f"note: squeue is not on PATH, so the jobs in {registry_path(sweep_dir)} are not looked up: "
              f"all segments not done are listed")
    states = queue_states(known) if has_squeue else {}
    keys = {s['key'] for s in segs}
    reshaped = sorted({job['run'] for job in registry['jobs'] if states.get(job['job_id']) in ACTIVE
                       and (job['run'], job['start'], job['stop']) not in keys})
    if reshaped:
        raise UserError(f"run {reshaped[0]} has queued jobs for other segments than this sweep makes now (the sweep "
                        f"changed since they were submitted): wait for them, or --cancel=True, then submit again")
    current = segment_states(segs, registry, states)
    todo = [s for s in segs if current[s['key']][0] not in ('done', 'pending', 'running')]
    counts = {state: sum(current[s['key']][0] == state for s in segs) for state in ('done', 'pending', 'running')}
    print(f"{len(segs)} jobs in the sweep's tree: {counts['done']} done, {counts['pending']} pending, "
          f"{counts['running']} running; {'would submit' if dry_run else 'submitting'} {len(todo)}")
    executor = None
    if todo and not dry_run:
        stale = [current[s['key']][1]['job_id'] for s in todo if current[s['key']][2] in ACTIVE]
        if stale:  # queued behind a failed job: it never runs as submitted, so it is replaced
            call(['scancel', *stale])
        os.makedirs(sweep_dir, exist_ok=True)
        executor = submitit.SlurmExecutor(folder=os.path.join(sweep_dir, 'slurm'), max_num_timeout=TIMEOUT_REQUEUES)
        executor.update_parameters(**params)
        registry['min_fork_step'] = options['min_fork_step']
    resources = resources_text(params)
    new_ids = {}  # segment key -> job id (in a dry run: its number)
    for number, seg in enumerate(todo, 1):
        spec = job_spec(seg, runs, procs, options['nodes'])
        upstream = seg['after']
        wait = None if upstream is None or current[upstream][0] == 'done' else \
            new_ids.get(upstream) or current[upstream][1]['job_id']
        title = f"{spec['run']}: steps {seg['start']}..{seg['stop']}"
        command = shown_command(spec)
        if executor is None:
            job_id = f"<job {number}>"
        else:
            try:
                job_id = submit_job(executor, spec, seg['run']['config'], title, command, wait, options['setup'])
            except Exception as e:  # sbatch refused it: say why; the jobs before it stay recorded
                message = (str(e).strip().splitlines() or [type(e).__name__])[-1]
                raise UserError(f"sbatch refused the job for {title} ({message}); {number - 1} jobs submitted "
                                f"before it are in {registry_path(sweep_dir)}") from None
            registry['jobs'].append(dict(job_id=job_id, run=spec['run'], start=seg['start'], stop=seg['stop'],
                                         after=[wait] if wait else [], resources=resources, command=command,
                                         submitted=datetime.datetime.now().isoformat(timespec='seconds')))
            layout.write_json_atomic(registry_path(sweep_dir), registry)
        new_ids[seg['key']] = job_id
        print(f"{'job' if executor is None else 'submitted job'} {job_id} {title}\n"
              f"    resources: {resources}\n    command: {command}\n    dependency: "
              + (f"afterok:{wait} (after {upstream[0]} steps {upstream[1]}..{upstream[2]})" if wait else 'none'))
    if executor is not None:
        print(f"registry: {registry_path(sweep_dir)}; watch with: python sweep.py SWEEP --status=True")


def submit_job(executor, spec, config, title, command, wait, setup):
    """One sbatch through submitit: the run's config file (with the checkpoints its forks start from), then the
    job, with the command it runs written into its script for people to read."""
    layout.write_run_config(spec['config'], config)
    executor.update_parameters(
        job_name=f"replay:{spec['run']}:{spec['start']}..{spec['stop']}",
        dependency=f"afterok:{wait}" if wait else None,
        setup=[f"# sweep.py: run {title}; every node runs (resume arguments decided when the job starts):",
               f"#   {command}", f"export PYTHONPATH={shlex.quote(layout.ROOT)}${{PYTHONPATH:+:$PYTHONPATH}}", *setup])
    return executor.submit(Segment(spec)).job_id


def last_error(out_dir, job_id, folder):
    """The last error line of the latest attempt: train.py's stdout.log since the job's header, else the job's
    submitit log."""
    for path, start in ((os.path.join(out_dir, 'stdout.log'), '[sweep.py: SLURM job'),
                        (os.path.join(folder, f'{job_id}_0_log.err'), None)):
        if os.path.isfile(path):
            with open(path, errors='replace') as f:
                lines = f.read().splitlines()[-500:]
            if start:
                lines = lines[max((i for i, line in enumerate(lines) if line.startswith(start)), default=0):]
            errors = [line.strip() for line in lines if ERROR_LINE.match(line.strip())]
            if errors:
                return errors[-1]
    return ''


def status(runs, order, sweep_dir):
    """Print each run's state: finished, running, pending, failed, cancelled, blocked, not submitted or (steps
    logged without a job: a local run) unfinished, with its job, last logged step and, when it failed, the last
    error line."""
    registry = read_registry(sweep_dir)
    known = [job['job_id'] for job in registry['jobs']]
    if known:
        need('squeue', "--status=True")
    states = queue_states(known)
    segs = segments(runs, order)
    current = segment_states(segs, registry, states)
    counts, lines, logged = {}, [], 0
    for i in order:
        run = runs[i]
        mine = [s for s in segs if s['run'] is run]
        open_segment = next((s for s in mine if current[s['key']][0] != 'done'), None)
        seg = open_segment or mine[-1]
        state, job, slurm_state = current[seg['key']]
        step = layout.last_step(run['config']['out_dir'])
        # no job of its own but steps logged: a local run, stopped or still going (this cannot tell which)
        unfinished = 'unfinished' if step is not None and not job else 'not submitted'
        state = 'finished' if open_segment is None else (state or unfinished)
        counts[state] = counts.get(state, 0) + 1
        logged += min(step or 0, run['steps'])
        detail = f"steps {seg['start']}..{seg['stop']}" if len(mine) > 1 and job else ''
        if state == 'failed':
            error = last_error(run['config']['out_dir'], job['job_id'], os.path.join(sweep_dir, 'slurm'))
            detail += f" {slurm_state or 'state unknown'}: {error or 'no error line in its logs'}"
        elif state == 'blocked':
            up = seg
            while up['after'] and current[up['key']][0] == 'blocked':
                up = next(s for s in segs if s['key'] == up['after'])
            detail += f" behind {up['run']['name']} steps {up['start']}..{up['stop']} ({current[up['key']][0]})"
        lines.append(f"  {run['name']:<40} {state:<13} job {job['job_id'] if job else '-':<8} "
                     f"step {'-' if step is None else step}/{run['steps']} {detail}".rstrip())
    print(f"sweep {sweep_dir}: {len(runs)} runs: " + ', '.join(f"{n} {s}" for s, n in sorted(counts.items()))
          + ("" if known else " (no jobs.json: no SLURM jobs submitted)")
          + f"; {logged}/{sum(r['steps'] for r in runs)} of their steps logged")
    print('\n'.join(lines))


def cancel(sweep_dir):
    """scancel the sweep's queued and running jobs."""
    registry = read_registry(sweep_dir)
    known = [job['job_id'] for job in registry['jobs']]
    if not known:
        print(f"no SLURM jobs recorded in {registry_path(sweep_dir)}: nothing to cancel")
        return
    need('squeue', "--cancel=True")
    need('scancel', "--cancel=True")
    states = queue_states(known)
    active = [job for job in known if states.get(job) in ACTIVE]
    if active:
        call(['scancel', *active])
    print(f"cancelled {len(active)} queued or running jobs of {sweep_dir} ({len(known) - len(active)} had ended)"
          + (f": {' '.join(active)}" if active else ''))
