"""
A stand-in for SLURM on one machine, for tests: the commands sbatch, srun, squeue, sacct, scancel and scontrol
(the executables next to this file call it), enough of each for submitit and slurm.py. State lives in the
directory $STANDIN_SLURM_STATE: jobs/<id>.json, one per job.

sbatch reads the #SBATCH lines of the script (nodes, ntasks-per-node, dependency=afterok:..., kill-on-invalid-dep,
output, error, job-name) and starts a detached runner for the job, which waits until every job it depends on has
COMPLETED (if one ended otherwise: CANCELLED with kill-on-invalid-dep=yes, else pending forever, as SLURM), and for
a free slot ($STANDIN_SLURM_SLOTS, default 2, one per job), then runs the script with bash in its own session and
the SLURM_* environment of a job on `nodes` nodes that are all this machine (SLURM_JOB_NODELIST=localhost,...).
srun starts nodes x ntasks-per-node tasks, each in its own session, with SLURM_PROCID/LOCALID/NODEID, stdout and
stderr to --output/--error (%j, %t replaced). `scancel --signal=SIG ID` signals the tasks (as SLURM signals job
steps, not the batch shell); `scancel ID` and `scontrol requeue ID` make the runner kill every process of the job
(SIGTERM, then SIGKILL after 2 s; a requeue from inside the job 1 s later, so scontrol returns first, as SLURM
replies before its signals reach the job); a requeued job then waits for a slot and runs again from the top, with
SLURM_RESTART_COUNT raised. With STANDIN_SLURM_HOLD=1 at submission, a job is never started (a full cluster). With
STANDIN_SLURM_STEP_DELAY=S, every optimizer step of train.py in a task sleeps S seconds first (slow_steps/), so a test
can signal a job mid-run without racing it.
"""
import fcntl
import json
import os
import shlex
import signal
import subprocess
import sys
import time

STATE = os.environ.get('STANDIN_SLURM_STATE', '')
ACTIVE = ('PENDING', 'RUNNING')


def fail(message):
    print(f"{os.path.basename(sys.argv[1] if len(sys.argv) > 1 else 'standin')}: error: {message}", file=sys.stderr)
    sys.exit(1)


class Lock:
    """One lock for all state changes: the commands and runners are separate processes."""
    def __enter__(self):
        self.file = open(os.path.join(STATE, 'lock'), 'w')
        fcntl.flock(self.file, fcntl.LOCK_EX)

    def __exit__(self, *exc):
        self.file.close()


def job_path(job_id):
    return os.path.join(STATE, 'jobs', f'{job_id}.json')


def load(job_id):
    try:
        with open(job_path(job_id)) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def save(job):
    path = job_path(job['id'])
    with open(path + '.tmp', 'w') as f:
        json.dump(job, f)
    os.replace(path + '.tmp', path)


def update(job_id, **changes):
    with Lock():
        job = load(job_id)
        job.update(changes)
        save(job)
        return job


def all_jobs():
    names = sorted(os.listdir(os.path.join(STATE, 'jobs')), key=lambda n: int(n.split('.')[0]))
    return [load(n[:-5]) for n in names if n.endswith('.json')]


def option_pairs(args):
    """--key=value, --key value and --flag arguments as (key, value) pairs, up to the first non-option."""
    pairs, i = [], 0
    while i < len(args) and args[i].startswith('-'):
        arg = args[i].lstrip('-')
        if '=' in arg:
            pairs.append(tuple(arg.split('=', 1)))
        elif arg in ('unbuffered', 'requeue', 'noheader', 'parsable2', 'allocations', 'h', 'n', 'P', 'X', 'hold'):
            pairs.append((arg, True))
        else:
            pairs.append((arg, args[i + 1]))
            i += 1
        i += 1
    return pairs, args[i:]


# ---------------------------------------------------------------------------------------------------------------

def sbatch(args):
    pairs, rest = option_pairs(args)
    script = os.path.abspath(rest[0])
    for line in open(script):
        if line.startswith('#SBATCH '):
            pairs += option_pairs(shlex.split(line)[1:2])[0]
    opts = dict(pairs)
    dependency = opts.get('dependency', '')
    if dependency and not dependency.startswith('afterok:'):
        fail(f"the stand-in knows only afterok dependencies, not {dependency}")
    deps = dependency.split(':')[1:] if dependency else []
    with Lock():
        counter = os.path.join(STATE, 'next_id')
        job_id = int(open(counter).read()) if os.path.exists(counter) else 1001
        open(counter, 'w').write(str(job_id + 1))
        for dep in deps:
            if load(dep) is None:
                fail(f"Batch job submission failed: Job dependency problem (no job {dep})")
        job = dict(id=str(job_id), name=opts.get('job-name', os.path.basename(script)), script=script,
                   cwd=os.getcwd(), state='PENDING', reason='Dependency' if deps else 'Resources',
                   nodes=int(opts.get('nodes', 1)), ntasks_per_node=int(opts.get('ntasks-per-node', 1)),
                   dependency=deps, kill_on_invalid_dep=opts.get('kill-on-invalid-dep') == 'yes',
                   output=opts.get('output', 'slurm-%j.out'), error=opts.get('error'), restarts=0,
                   requeue=0, batch_pgid=None, task_pgids=[], exit_code=None,
                   held=os.environ.get('STANDIN_SLURM_HOLD') == '1')
        save(job)
    if not job['held']:
        runner_log = open(os.path.join(STATE, f'runner_{job_id}.log'), 'w')
        subprocess.Popen([sys.executable, os.path.abspath(__file__), '_run', str(job_id)], stdin=subprocess.DEVNULL,
                         stdout=runner_log, stderr=subprocess.STDOUT, start_new_session=True)
    print(f"Submitted batch job {job_id}")


def take_slot():
    """An exclusive lock on one of the slot files, or None: the lock goes when the runner exits, whatever happens."""
    os.makedirs(os.path.join(STATE, 'slots'), exist_ok=True)
    for k in range(int(os.environ.get('STANDIN_SLURM_SLOTS', '2'))):
        f = open(os.path.join(STATE, 'slots', str(k)), 'w')
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return f
        except BlockingIOError:
            f.close()
    return None


def kill_job(job):
    """SIGTERM to every process of the job, SIGKILL to what is left after 2 s."""
    groups = [g for g in [job['batch_pgid'], *job['task_pgids']] if g]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for group in groups:
            try:
                os.killpg(group, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + 2
        while sig == signal.SIGTERM and time.time() < deadline and any(alive(g) for g in groups):
            time.sleep(0.05)


def alive(group):
    try:
        os.killpg(group, 0)
        return True
    except ProcessLookupError:
        return False


def run(job_id):
    """The runner of one job: wait for its dependencies and a slot, run it, again after each requeue."""
    while True:
        slot = None
        while slot is None:
            job = load(job_id)
            if job['state'] != 'PENDING':
                return
            deps = [load(d) for d in job['dependency']]
            if any(d['state'] not in ACTIVE + ('COMPLETED',) for d in deps):
                if job['kill_on_invalid_dep']:
                    update(job_id, state='CANCELLED', reason='DependencyNeverSatisfied')
                else:
                    update(job_id, reason='DependencyNeverSatisfied')
                return
            if all(d['state'] == 'COMPLETED' for d in deps):
                slot = take_slot()
            time.sleep(0.1)
        nodes, per_node = job['nodes'], job['ntasks_per_node']
        env = dict(os.environ, SLURM_JOB_ID=job_id, SLURM_JOBID=job_id, SLURM_JOB_NAME=job['name'],
                   SLURM_JOB_NUM_NODES=str(nodes), SLURM_NNODES=str(nodes), SLURM_NTASKS=str(nodes * per_node),
                   SLURM_NTASKS_PER_NODE=str(per_node), SLURM_JOB_NODELIST=','.join(['localhost'] * nodes),
                   SLURM_SUBMIT_DIR=job['cwd'], SLURM_RESTART_COUNT=str(job['restarts']))
        out = open(job['output'].replace('%j', job_id), 'a')
        err = open(job['error'].replace('%j', job_id), 'a') if job['error'] else out
        with Lock():
            job = load(job_id)
            if job['state'] != 'PENDING':  # cancelled while it waited for the slot
                return
            process = subprocess.Popen(['bash', job['script']], cwd=job['cwd'], env=env, stdout=out, stderr=err,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
            job.update(state='RUNNING', reason='None', batch_pgid=process.pid, task_pgids=[])
            save(job)
        killed = False
        while process.poll() is None:
            job = load(job_id)
            if not killed and ((job['requeue'] and time.time() >= job['requeue']) or job['state'] == 'CANCELLED'):
                kill_job(job)
                killed = True
            time.sleep(0.1)
        job = load(job_id)  # as it ended: cancelled or requeued meanwhile, and every task srun started
        kill_job(job)  # whatever the script left behind
        slot.close()
        if job['state'] == 'CANCELLED':
            return
        if job['requeue']:
            update(job_id, state='PENDING', reason='BeginTime', requeue=0, restarts=job['restarts'] + 1)
            continue
        update(job_id, state='COMPLETED' if process.returncode == 0 else 'FAILED',
               exit_code=process.returncode)
        return


def srun(args):
    pairs, command = option_pairs(args)
    opts = dict(pairs)
    job_id = os.environ['SLURM_JOB_ID']
    per_node = int(os.environ.get('SLURM_NTASKS_PER_NODE', 1))
    tasks = []
    for task in range(int(os.environ.get('SLURM_NTASKS', 1))):
        def path(pattern):
            return pattern.replace('%j', job_id).replace('%t', str(task))
        out = open(path(opts['output']), 'a') if 'output' in opts else None
        err = open(path(opts['error']), 'a') if 'error' in opts else out
        env = dict(os.environ, SLURM_PROCID=str(task), SLURM_LOCALID=str(task % per_node),
                   SLURM_NODEID=str(task // per_node), SLURM_STEP_ID='0')
        if os.environ.get('STANDIN_SLURM_STEP_DELAY'):
            slow = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'slow_steps')
            env['PYTHONPATH'] = os.pathsep.join(filter(None, (slow, os.environ.get('PYTHONPATH'))))
        tasks.append(subprocess.Popen(command, env=env, stdout=out, stderr=err, start_new_session=True))
    with Lock():
        job = load(job_id)
        job['task_pgids'] += [t.pid for t in tasks]
        save(job)
    codes = [t.wait() for t in tasks]
    sys.exit(next((c for c in codes if c), 0) % 256)


def squeue(args):
    opts = dict(option_pairs(args)[0])
    form = opts.get('format', opts.get('o', '%i %j %T %R'))
    ids = set(opts.get('jobs', opts.get('j', '')).split(',')) - {''}
    if not (opts.get('noheader') or opts.get('h')):
        print(form.replace('%i', 'JOBID').replace('%T', 'STATE').replace('%j', 'NAME'))
    for job in all_jobs():
        if job['state'] in ACTIVE and (not ids or job['id'] in ids):
            print(form.replace('%i', job['id']).replace('%T', job['state']).replace('%j', job['name'])
                  .replace('%R', job['reason']))


def sacct(args):
    pairs, _ = option_pairs(args)
    opts = dict(pairs)
    fields = opts.get('format', opts.get('o', 'JobID,JobName,State,ExitCode')).split(',')
    ids = {i for k, v in pairs if k in ('j', 'jobs') for i in v.split(',')}
    sep = '|' if opts.get('parsable2') or opts.get('P') else ' '
    if not (opts.get('noheader') or opts.get('n')):
        print(sep.join(fields))
    for job in all_jobs():
        if not ids or job['id'] in ids:
            values = dict(JobID=job['id'], JobName=job['name'], State=job['state'],
                          NodeList=','.join(['localhost'] * job['nodes']), ExitCode=f"{job['exit_code'] or 0}:0")
            print(sep.join(values[f] for f in fields))


def scancel(args):
    # job ids may come before the options too: submitit writes `scancel ID --signal SIG`
    ids = [a for a in args if a.isdigit()]
    opts = dict(option_pairs([a for a in args if not a.isdigit()])[0])
    sig = opts.get('signal')
    for job_id in ids:
        job = load(job_id)
        if job is None:
            fail(f"Invalid job id {job_id}")
        if sig:  # to the job steps' tasks, as SLURM does without --batch
            number = getattr(signal, sig if sig.startswith('SIG') else 'SIG' + sig)
            for group in job['task_pgids']:
                try:
                    os.killpg(group, number)
                except ProcessLookupError:
                    pass
        elif job['state'] in ACTIVE:
            update(job_id, state='CANCELLED', reason='None')


def scontrol(args):
    if args[:1] != ['requeue'] or len(args) != 2:
        fail(f"the stand-in knows only `scontrol requeue ID`, not {' '.join(args)}")
    job = load(args[1])
    if job is None:
        fail(f"Invalid job id {args[1]}")
    if job['state'] == 'RUNNING':  # from inside the job (submitit), the kill comes a second later, as SLURM's
        update(args[1], requeue=time.time() + (os.environ.get('SLURM_JOB_ID') == args[1]))  # reply comes first


def main():
    if not STATE:
        fail("set STANDIN_SLURM_STATE to the stand-in's state directory")
    os.makedirs(os.path.join(STATE, 'jobs'), exist_ok=True)
    command, args = sys.argv[1], sys.argv[2:]
    if command == '_run':
        run(args[0])
    else:
        dict(sbatch=sbatch, srun=srun, squeue=squeue, sacct=sacct, scancel=scancel, scontrol=scontrol)[command](args)


if __name__ == '__main__':
    main()
