"""
runlog.py: a run's log.jsonl (one JSON record per line; keys in docs/logs.md "Log format"): the records train.py
writes with the console line of each, when a train record is due, the log a resume keeps from before its
checkpoint, and the final evals read back from it; and duration(), the time format of train.py's and sweep.py's
lines. Without torch: sweep.py imports it.
"""
import json
import os

import layout
import schedule


def logger(log_path, master, config):
    """log(record, line=None): appends a record to log.jsonl (and wandb), prints `line`; rank 0 only."""
    log_file = open(log_path, 'a') if master else None
    if master and config['wandb_log']:
        import wandb
        wandb.init(project=config['wandb_project'], name=config['wandb_run_name'] or None, config=config)

    def log(record, line=None):
        if master:
            log_file.write(json.dumps(record) + '\n')
            log_file.flush()
            if line:
                print(line, flush=True)
            if config['wandb_log']:  # a task's numbers under its name, so that tasks logged at one step do not clash
                prefix = f"{record['task']}/" if 'task' in record else ''
                wandb.log({prefix + k: v for k, v in record.items() if isinstance(v, (int, float))},
                          step=record['step'])
    return log


def train_log_due(plan, t, log_interval):
    """A train record after step t: every log_interval steps, at the last step before a stage starts, at the end."""
    return (t + 1) % log_interval == 0 or t == plan['N'] - 1 or t + 1 in schedule.stage_starts(plan)


def duration(seconds):
    """12s, 3m05s, 2h07m: elapsed times and ETAs in train.py's and sweep.py's lines."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def loss_means(sums, tokens_per_count=1):
    """Mean loss over all, target and generic loss tokens (None for a source with none) of train.LossWindow's
    reduced() sums, and how many loss tokens each source had. tokens_per_count: block_size where the sums count
    text sequences."""
    total, target, n_target, generic, n_generic = sums
    return dict(loss=total / (n_target + n_generic), loss_target=target / n_target if n_target else None,
                loss_generic=generic / n_generic if n_generic else None,
                loss_tokens_target=round(n_target * tokens_per_count),
                loss_tokens_generic=round(n_generic * tokens_per_count))


def train_record(plan, t, lr, means, steps, ms, mfu, elapsed, eta):
    """The train log record after step t, with its one-line print (which adds the elapsed time and the ETA, the
    remaining steps at this process's mean pace so far, evals included)."""
    done_target = schedule.targets_before(plan, t + 1)
    S, block_size = plan['S'], plan['block_size']
    record = dict(kind='train', step=t, stage=schedule.stage_of(plan, t), lr=lr, **means, steps=steps,
                  target_seqs=done_target, generic_seqs=(t + 1) * S - done_target,
                  tokens_target=done_target * block_size, tokens_generic=((t + 1) * S - done_target) * block_size,
                  ms_per_step=ms, mfu=mfu, elapsed_s=elapsed)
    by_source = ', '.join(f"{name} {means['loss_' + name]:.4f}" for name in ('target', 'generic')
                          if means['loss_' + name] is not None)
    line = (f"step {t + 1}/{plan['N']} | stage {record['stage']} | loss {means['loss']:.4f} ({by_source}) | lr "
            f"{lr:.3g} | {ms:.1f} ms/step" + (f" | mfu {100 * mfu:.1f}%" if mfu is not None else "")
            + f" | {duration(elapsed)} elapsed, ETA {duration(eta)}")
    return record, line


def eval_record(plan, t, losses):
    """The eval log record after t steps (losses: val_loss_target and val_loss_generic), with its print."""
    return (dict(kind='eval', step=t, stage=schedule.stage_of(plan, max(t - 1, 0)), **losses),
            f"eval after {t} steps: target {losses['val_loss_target']:.4f}, generic {losses['val_loss_generic']:.4f}")


def kept_log_records(path, step):
    """Log lines written before the state after `step` completed steps was checkpointed: evals and task evals at
    <= step, train and batch records of steps < step. A torn last line (a kill mid-write) is dropped; a line that
    is not a log record (bytes, another file's text) ends the kept log, with a warning."""
    kept = []
    if os.path.isfile(path):
        with open(path, errors='replace') as f:
            for number, line in enumerate(f, 1):
                try:
                    record = json.loads(line)
                    before = record['step'] < step or (record['kind'] in ('eval', 'task') and record['step'] == step)
                except (ValueError, KeyError, TypeError):
                    if line.endswith('\n'):  # not a torn last line: say what is dropped
                        print(f"warning: {path} line {number} is not a log record: the log is kept up to it")
                    break
                if before:
                    kept.append(line if line.endswith('\n') else line + '\n')
    return kept


def restore_log(out_dir, run_start):
    """out_dir/log.jsonl as it stood at the checkpoint this run starts from (run_start: a checkpoint.Start; a fork:
    its parent's log up to the fork), atomically; empty for a run that starts at step 0. Returns its path."""
    log_path = os.path.join(out_dir, 'log.jsonl')
    kept = []
    if run_start.kind in ('resume', 'fork'):
        kept = kept_log_records(os.path.join(os.path.dirname(os.path.abspath(run_start.path)), 'log.jsonl'),
                                run_start.step)
    layout.write_atomic(log_path, ''.join(kept))
    return log_path


def final_evals(log_path):
    """The last eval record's validation losses, and under 'tasks' the task records of its step (a run resumed
    after its final eval has none of its own)."""
    with open(log_path) as f:
        records = [json.loads(line) for line in f]
    last = [r for r in records if r['kind'] == 'eval'][-1]
    final = {k: v for k, v in last.items() if k.startswith('val_loss')}
    tasks = {r['task']: task_scores(r) for r in records if r['kind'] == 'task' and r['step'] == last['step']}
    return dict(final, tasks=tasks) if tasks else final


def task_scores(record):
    """What summary.json's `final` keeps of a task record: acc, acc_norm and n (multiple choice), or exact_match
    and n (generation)."""
    return {k: record[k] for k in ('acc', 'acc_norm', 'exact_match', 'n') if k in record}
