"""
train.py: executes the plan that schedule.py makes. Single process:
    python train.py config/tiny.py --max_iters=100
DDP on one node (S = batch_size * gradient_accumulation_steps stays global, so the data is the same on any
number of ranks):
    torchrun --standalone --nproc_per_node=8 train.py config/flan_replay.py
Every step t: ask schedule.py which sequences and which LR, read those windows from the two memmaps, split the
global batch over ranks and micro-steps, forward/backward, clip, step. Nothing here decides what data is seen.

Outputs in out_dir: log.jsonl (one JSON record per line; keys in README "Log format"), summary.json at the end,
ckpt.pt (latest, replaced atomically), ckpt_<step>.pt for checkpoint_steps (parallel='fsdp': the sharded ckpt.dcp/,
ckpt_<step>.dcp/). The plumbing lives beside this file:
data.py (sources, loader), checkpoint.py (how a run starts, checkpoints, fingerprints, the kept log),
runtime.py (device, precision, model, optimizer, DDP).
"""
import dataclasses
import importlib.util
import json
import math
import os
import platform
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import checkpoint
import data
import hf
import layout
import runtime
import schedule
import tasks
from configurator import DEFAULTS, UserError, check_rules, load_config, run_main, split_argv
from model import GPT, document_positions_and_mask, model_config_from
from tokenizer import tokenizer_meta


class LossWindow:
    """The training loss since the last train log record, summed on the device so that a step needs no host sync:
    over all sequences, the target ones and the generic ones, with their counts. Text-only runs count sequences
    (each one's mean over its block_size tokens weighs one); runs with a chat source count loss tokens (each
    window's mean weighs its loss tokens), so the means are over loss tokens either way."""
    def __init__(self, device):
        self.sums = torch.zeros(5, device=device, dtype=torch.float64)  # all, target, n target, generic, n generic

    def add(self, per_sequence_loss, is_target, loss_tokens=None):
        with torch.no_grad():
            loss, target = per_sequence_loss.detach().double(), is_target.double()
            # a weight of exactly 1.0 per text sequence: the same sums, bit for bit, as counting sequences
            weight = torch.ones_like(loss) if loss_tokens is None else loss_tokens.double()
            loss = loss * weight
            self.sums += torch.stack([loss.sum(), (loss * target).sum(), (weight * target).sum(),
                                      (loss * (1 - target)).sum(), (weight * (1 - target)).sum()])

    def reduced(self, world):
        """The sums over every rank's sequences, on the host (one all-reduce: it also carries the NaN check)."""
        sums = self.sums.clone()
        if world > 1:
            dist.all_reduce(sums)
        return sums.tolist()

    @staticmethod
    def means(sums, tokens_per_count=1):
        """Mean loss over all, target and generic loss tokens (None for a source with none) of reduced() sums, and
        how many loss tokens each source had. tokens_per_count: block_size where the sums count text sequences."""
        total, target, n_target, generic, n_generic = sums
        return dict(loss=total / (n_target + n_generic), loss_target=target / n_target if n_target else None,
                    loss_generic=generic / n_generic if n_generic else None,
                    loss_tokens_target=round(n_target * tokens_per_count),
                    loss_tokens_generic=round(n_generic * tokens_per_count))

    def reset(self):
        self.sums.zero_()


def chat_forward(model, ctx, rows, loss_mask, starts, packed):
    """A chat micro-batch (device tensors of a data.ChatMicroStep): each window's mean cross entropy over its loss
    tokens (0 for a window with none) and its loss-token count. Attention stays inside each packed example, with
    positions restarting at its first token, where `packed` (some row holds more than one example or padding;
    known on the host); else the is_causal fast path. The mask is one for the whole micro-batch: text rows in a
    micro-batch that mixes chat and text windows give up the fast path too (their mask is plain causal)."""
    labels = rows[:, 1:].masked_fill(~loss_mask, -1)
    positions, attn_mask = document_positions_and_mask(starts) if packed else (None, None)
    with ctx:
        _, loss = model(rows[:, :-1], labels, positions=positions, attn_mask=attn_mask)
    return loss, loss_mask.sum(dim=1)


def chat_objective(loss, loss_tokens, micro, loss_average, world):
    """What a chat micro-step backpropagates, so that the step's gradient is that of its loss normalised over the
    WHOLE step (every micro-step and rank; the counts come from the host, data.load_chat_step):
    'tokens': cross entropy summed over its loss tokens / the step's loss tokens (TRL's and torchtune's
    convention); 'sequences': each window's mean over its loss tokens, summed / the step's windows with any.
    Times `world`, since DDP and FSDP2 average the ranks' gradients."""
    if loss_average == 'tokens':
        return (loss * loss_tokens).sum() * (world / max(1, micro.step_loss_tokens))
    return loss.sum() * (world / max(1, micro.step_loss_windows))


def train_step(model, optimizer, scaler, ctx, batch, window, grad_clip, keep_ids=False, loss_average='tokens'):
    """One optimizer step on data.load_step's micro-steps (data.load_chat_step's with a chat source); adds the
    step's loss to `window`, on the device. No host-device sync: copies are non-blocking and the loss stays on the
    device until a log reads it (exceptions: keep_ids, for tests, and float16's GradScaler, which reads its inf
    check). bench.py times this same function. Text-only runs: each micro-step backpropagates its mean sequence
    loss / micro-steps (every sequence has block_size loss tokens, so that is loss_average='tokens' already).
    Returns, with keep_ids, a (first token, is_target) tensor per micro-step, on the host."""
    device, fed = window.sums.device, []
    world = dist.get_world_size() if dist.is_initialized() else 1
    for m, micro in enumerate(batch):
        rows, is_target = micro[0].to(device, non_blocking=True), micro[1].to(device, non_blocking=True)
        if isinstance(model, DDP):
            model.require_backward_grad_sync = m == len(batch) - 1
        if isinstance(micro, data.ChatMicroStep):
            loss, loss_tokens = chat_forward(model, ctx, rows, micro.loss_mask.to(device, non_blocking=True),
                                             micro.starts.to(device, non_blocking=True),
                                             bool(micro.starts[:, 1:].any()))
            scaler.scale(chat_objective(loss, loss_tokens, micro, loss_average, world)).backward()
            window.add(loss, is_target, loss_tokens)
        else:
            with ctx:
                _, loss = model(rows[:, :-1], rows[:, 1:])
            scaler.scale(loss.mean() / len(batch)).backward()
            window.add(loss, is_target)
        if keep_ids:
            fed.append(torch.stack([rows[:, 0], is_target.long()], 1).cpu())
    if grad_clip > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return fed


@torch.no_grad()
def evaluate(model, source, config, ctx, system):
    """Token-averaged cross entropy over the fixed held-out set: every window of the first val_tokens tokens of
    val.bin, once, in order (not random batches), so final numbers are reproducible. Ranks split the windows.
    A chat source: over its val loss tokens, each packed example on its own (chat_forward)."""
    n, batch_size = data.val_windows(source, config), config['batch_size']
    if data.is_chat(source):
        return evaluate_chat(model, source, config, ctx, system, n)
    mine = np.arange(system.rank, n, system.world)
    total = torch.zeros(2, device=system.device, dtype=torch.float64)  # loss sum, sequence count
    model.eval()
    # every rank runs as many batches as the busiest one (FSDP2 gathers weights collectively in each forward): a
    # rank out of windows computes window 0 and drops it
    for i in range(0, -(-n // system.world), batch_size):
        windows = mine[i:i + batch_size]
        rows = torch.from_numpy(data.read_windows(source['val'], windows if len(windows) else [0],
                                                  config['block_size'])).to(system.device)
        with ctx:
            _, loss = model(rows[:, :-1], rows[:, 1:])
        if len(windows):
            total[0] += loss.double().sum()
            total[1] += loss.numel()
    model.train()
    if system.world > 1:
        dist.all_reduce(total)
    return (total[0] / total[1]).item()  # every window has block_size tokens: sequence mean == token mean


def evaluate_chat(model, source, config, ctx, system, n):
    """evaluate() for a chat source: its n val windows, the loss summed over their loss tokens / their count."""
    views, batch_size = data.split_views(source, 'val', config['block_size']), config['batch_size']
    mine = np.arange(system.rank, n, system.world)
    total = torch.zeros(2, device=system.device, dtype=torch.float64)  # loss sum, loss-token count
    model.eval()
    for i in range(0, -(-n // system.world), batch_size):  # as many batches on every rank (evaluate())
        windows = mine[i:i + batch_size]
        picked = windows if len(windows) else np.zeros(1, dtype=np.int64)
        loss_mask, starts = (torch.from_numpy(a).to(system.device) for a in data.chat_rows(views, picked))
        rows = torch.from_numpy(views[0][picked].astype(np.int64)).to(system.device)
        loss, loss_tokens = chat_forward(model, ctx, rows, loss_mask, starts, True)
        if len(windows):
            total[0] += (loss.double() * loss_tokens).sum()
            total[1] += loss_tokens.sum()
    model.train()
    if system.world > 1:
        dist.all_reduce(total)
    return (total[0] / total[1]).item()


# what each key's value must be, beyond its type (configurator.check_rules: one line "KEY=VALUE must be WHAT");
# the checks that relate keys are check_config's, the schedule's keys are schedule.py's
RULES = dict(
    **dict.fromkeys(('n_layer', 'n_head', 'n_embd', 'log_interval', 'val_tokens'), 'at least 1'),
    **dict.fromkeys(('eval_interval', 'checkpoint_interval', 'spike_eval_steps', 'spike_eval_interval',
                     'intermediate_size', 'seed', 'data_seed', 'stop_after'), '0 or more'),
    **dict.fromkeys(('learning_rate', 'stage2_learning_rate', 'adam_eps', 'norm_eps', 'init_std', 'rope_theta'),
                    'a positive number'),
    **dict.fromkeys(('min_lr', 'weight_decay', 'grad_clip'), '0 or more'),
    **dict.fromkeys(('beta1', 'beta2', 'dropout'), 'in [0, 1)'),
    arch=('gpt2', 'llama'), tie_embeddings=(None, True, False), dtype=runtime.DTYPES, backend=('auto', 'nccl', 'gloo'),
    parallel=('ddp', 'fsdp'), device='a torch device', out_dir='an output directory',
    loss_average=('tokens', 'sequences'), dist_timeout_s='a positive number',
)


def check_config(config, world):
    """Values the configurator's type check cannot judge. NaN fails every comparison, so it is caught too."""
    c = config

    def need(ok, key, what):
        if not ok:
            raise UserError(f"{key}={c[key]!r} must be {what}")
    check_rules(c, RULES)
    if c['n_embd'] % c['n_head']:
        raise UserError(f"n_embd={c['n_embd']} must be divisible by n_head={c['n_head']}")
    need(c['n_kv_head'] >= 0 and c['n_head'] % (c['n_kv_head'] or c['n_head']) == 0, 'n_kv_head',
         f"0 (= n_head) or a divisor of n_head={c['n_head']}")
    if c['gradient_accumulation_steps'] % world:
        raise UserError(f"gradient_accumulation_steps={c['gradient_accumulation_steps']} must be divisible by the "
                        f"number of ranks ({world}): S = batch_size * gradient_accumulation_steps is global")
    need(runtime.checkpointing_mode(c['activation_checkpointing']) in runtime.CHECKPOINTING, 'activation_checkpointing',
         "'none', 'full' or 'selective' (or True / False, read as 'full' / 'none')")
    resumed = c['resume_from'] or layout.latest(c['out_dir']) if c['init_from'] == 'resume' else None
    if c['parallel'] == 'fsdp' and resumed and os.path.isfile(resumed):
        raise UserError(f"{resumed} was written under parallel='ddp' (one file): resume it with parallel='ddp', or "
                        f"start an fsdp run from its weights with init_from={resumed}")
    if c['parallel'] == 'fsdp' and 'RANK' not in os.environ:
        raise UserError("parallel='fsdp' needs torchrun's ranks, also for one process: torchrun "
                        "--standalone --nproc_per_node=N train.py ...")
    if c['parallel'] == 'fsdp' and c['dtype'] == 'float16':
        raise UserError("dtype='float16' needs loss scaling, which parallel='fsdp' does not do here: use "
                        "dtype='bfloat16' (or float32)")
    if c['init_from'] not in ('scratch', 'resume') and not os.path.exists(c['init_from']):
        hf.check_not_hub_id('init_from', c['init_from'])
        raise UserError(f"init_from={c['init_from']!r} is not 'scratch', 'resume' or an existing checkpoint path")
    if c['resume_from'] and c['init_from'] != 'resume':
        raise UserError(f"resume_from={c['resume_from']!r} is only read with init_from='resume' (init_from is "
                        f"{c['init_from']!r})")
    steps = c['max_iters'] or schedule.make_plan(c)['N']  # max_iters=0: the N that mode='mixed' derives
    if not all(isinstance(k, int) and 0 < k <= steps for k in c['checkpoint_steps']):
        raise UserError(f"checkpoint_steps={c['checkpoint_steps']} must be steps between 1 and max_iters")
    if c['wandb_log'] and importlib.util.find_spec('wandb') is None:
        raise UserError("wandb_log=True but wandb is not installed: pip install wandb, or --wandb_log=False")


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


def checkpoint_due(plan, step, config):
    """The run's latest checkpoint after `step` steps: every checkpoint_interval steps, at every stage start, at the
    end, and where the run stops early (stop_after: a sweep segment on a cluster)."""
    interval = config['checkpoint_interval']
    return (bool(interval and step % interval == 0) or step in (plan['N'], config['stop_after'])
            or step in schedule.stage_starts(plan))


def batch_record(t, fed, world):
    """Tests only (log_batch_ids): the first token of every sequence step t fed, in global order."""
    fed = torch.cat(fed).tolist()
    if world > 1:
        gathered = [None] * world
        dist.all_gather_object(gathered, fed)
        fed = [row for part in gathered for row in part]
    return dict(kind='batch', step=t, first_tokens=[r[0] for r in fed], is_target=[r[1] for r in fed])


def duration(seconds):
    """12s, 3m05s, 2h07m: elapsed times and ETAs in the train lines."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def train_record(plan, t, lr, means, steps, ms, mfu, elapsed, eta):
    """The train log record after step t (README "Log format"), with its one-line print (which adds the elapsed
    time and the ETA, the remaining steps at this process's mean pace so far, evals included)."""
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


def compile_plan(config, device_type, n_layer):
    """What the start line says is compiled and recomputed (what did compile: a line after the first train record,
    and summary.json's compile)."""
    mode = runtime.checkpointing_mode(config['activation_checkpointing'])
    compiled = (f"compile: each of {n_layer} blocks + head/loss" if runtime.use_compile(config, device_type)
                else "compile off")
    return compiled + f", activation checkpointing {mode}"


def print_intent(config, argv):
    """What train.py is about to run, printed right after the config is read and before any data or model is
    built: a forgotten config file (the default 124M model on a CPU) shows at once, not after the first step."""
    files = [text for key, text, _ in split_argv(argv, DEFAULTS) if key is None]
    if config['init_from'] not in ('scratch', 'resume') and os.path.isdir(config['init_from']):
        model = f"the model in {config['init_from']} (its config.json)"
    else:
        with torch.device('meta'):  # shapes only: no memory, no init
            params = GPT(model_config_from(config, 256)).get_num_params()
        model = (f"{config['arch']} {config['n_layer']} layers x {config['n_embd']} ({params / 1e6:.2f}M "
                 f"non-embedding params)")
    steps = f"{config['max_iters']} steps" if config['max_iters'] else "steps derived from the data (max_iters=0)"
    print(f"train.py: {', '.join(files) if files else 'no config file (config/default.py alone)'} -> "
          f"{config['out_dir']}: {model}, {steps} x {config['batch_size'] * config['gradient_accumulation_steps']} "
          f"sequences x {config['block_size']} tokens, device {runtime.pick_device(config['device'])}, "
          f"init_from={config['init_from']!r}", flush=True)


def print_start(config, plan, raw_model, start, system, dtype):
    print(f"run {config['out_dir']}: {plan['N']} steps x {plan['S']} sequences x {config['block_size']} tokens, "
          f"U={plan['U']} target sequences x e={plan['e']}, stages from steps {[0] + schedule.stage_starts(plan)}, "
          f"{raw_model.get_num_params() / 1e6:.2f}M non-embedding params, device {system.device_name}, dtype {dtype}, "
          f"{config['parallel']} x {system.world}, {compile_plan(config, system.device_type, raw_model.config.n_layer)}"
          + (f", resuming at step {start.step}" if start.step else ""), flush=True)
    if start.hf_source:
        print(f"model from {start.hf_source['dir']}: {hf.describe(raw_model.config)}", flush=True)


def run_evals(t, model, sources, task_set, config, plan, ctx, system, log):
    """The evals after t steps: the validation loss of each source (an `eval` record) and each task's accuracy
    (`task` records). Returns (losses, task results, seconds spent)."""
    begin = time.time()
    losses = {f'val_loss_{source["name"]}': evaluate(model, source, config, ctx, system) for source in sources}
    log(dict(kind='eval', step=t, stage=schedule.stage_of(plan, max(t - 1, 0)), **losses),
        f"eval after {t} steps: target {losses['val_loss_target']:.4f}, generic {losses['val_loss_generic']:.4f}")
    results = tasks.evaluate_and_log(task_set, model, t, ctx, system, log)
    return losses, results, time.time() - begin


def write_summary(config, plan, final_val, generic, target, system, wall_s, model):
    block_size = config['block_size']
    summary = dict(config=config, plan=schedule.summarize(config, plan), final=dict(step=plan['N'], **final_val),
                   sequences=dict(target=plan['T'], generic=plan['generic_total']),
                   tokens=dict(target=plan['T'] * block_size, generic=plan['generic_total'] * block_size),
                   generic_offset=plan['generic_offset'],
                   generic_cursor_end=plan['generic_offset'] + plan['generic_total'],
                   git_commit=checkpoint.git_commit(), versions=dict(python=platform.python_version(),
                                                                     torch=torch.__version__, numpy=np.__version__),
                   device=system.device_name, world_size=system.world,
                   sources={s['name']: checkpoint.source_summary(s) for s in (generic, target)}, wall_s=wall_s,
                   model=model, compile=runtime.compile_counts())
    layout.write_json_atomic(os.path.join(config['out_dir'], 'summary.json'), summary)
    print(f"done: final val loss target {final_val.get('val_loss_target', float('nan')):.4f}, generic "
          f"{final_val.get('val_loss_generic', float('nan')):.4f}; {config['out_dir']}/summary.json", flush=True)


def model_shape(config, start, generic, target, device_type):
    """The model's GPTConfig: a Hugging Face model's own (its config.json, with this run's block_size and dropout),
    its tokenizer checked against the data's, or else this run's model keys at the data's vocabulary, padded
    (pad_vocab) from scratch; a run from one of our checkpoints keeps that checkpoint's rows (older ones: none)."""
    if start.hf_source is None:
        model_config = model_config_from(config, generic['meta']['vocab_size'],
                                         runtime.pad_vocab(config, device_type))
        if start.checkpoint is None:
            return model_config
        saved = (start.checkpoint.get('model_config') or {}).get('padded_vocab_size', 0)
        return dataclasses.replace(model_config, padded_vocab_size=saved)
    model_config = hf.model_config(start.hf_source, config['block_size'], config['dropout'])
    hf.check_data_tokenizer(start.hf_source, model_config, (generic, target))
    if start.kind == 'hf':
        hf.check_weights(start.path, model_config)
    return model_config


def open_run(config, system, task_files):
    """Every check that can fail on the user's input, then out_dir made ready: data, how the run starts (resume
    compatibility included), the model's shape, the plan, the tasks in the model's tokenizer and the finished-run
    refusal all run before prepare_out_dir, the first thing that changes out_dir (it removes summary.json), so a
    refused run loses nothing. Returns (generic, target, start, model_config, plan, pool, fingerprint, task_set)."""
    block_size, out_dir = config['block_size'], config['out_dir']
    generic, target = data.open_sources(config)
    start = checkpoint.start(config, generic['meta'])
    model_config = model_shape(config, start, generic, target, system.device_type)
    plan = schedule.make_plan(config, data.train_windows(target, block_size), data.train_windows(generic, block_size),
                              generic_offset=start.generic_offset)
    pool = schedule.pool_of(plan)
    fingerprint = checkpoint.fingerprint(config, plan, generic, target)
    if start.kind in ('resume', 'fork'):
        checkpoint.check_resume(start, config, plan, fingerprint)
    for source in (generic, target):
        data.check_token_ids(source, model_config.vocab_size, config['val_tokens'])
    task_set = tasks.encode_tasks(task_files, config, start.hf_source, generic['meta'])  # in the model's tokenizer
    if os.path.isfile(os.path.join(out_dir, 'summary.json')) and not config['overwrite']:
        raise UserError(f"out_dir={out_dir!r} holds a finished run (summary.json): choose another out_dir, or pass "
                        f"--overwrite=True to replace it")
    # validated: from here on out_dir changes
    if system.rank == 0:
        checkpoint.prepare_out_dir(out_dir)
        for warning in plan['warnings']:
            print(f"warning: {warning}")
    return generic, target, start, model_config, plan, pool, fingerprint, task_set


def restore(saved, model, optimizer, scaler, window, system):
    """What a resume or fork continues besides the weights (which a sharded checkpoint brings here too):
    optimizer moments, loss scale, RNG states, and the log window open at the checkpoint (kept reduced, so rank 0
    alone holds it). Returns the step of the last train record."""
    if 'sharded' in saved:
        checkpoint.load_sharded(saved['sharded'], model, optimizer)
    else:
        optimizer.load_state_dict(saved['optimizer'])
    scaler.load_state_dict(saved['scaler'])
    torch.set_rng_state(saved['rng_cpu'])
    if system.device_type == 'cuda' and 'rng_cuda' in saved:
        torch.cuda.set_rng_state(saved['rng_cuda'])
    if system.rank == 0:
        window.sums.copy_(saved['log_sums'])
    return saved['last_log_step']


def save_checkpoints(step, names, raw_model, optimizer, scaler, window, last_log_step, config, plan, fingerprint,
                     meta, start, system):
    """Write the run's state after `step` steps as each of `names` in out_dir (sharded: every rank writes its part),
    unless the open loss window or the weights are non-finite: a diverged model never replaces the last good
    checkpoint. Returns whether it wrote."""
    # a tensor's sum is non-finite iff an element is (short of ~1e38 weights): one reduce carries both checks;
    # under FSDP2 each rank sums its shards
    weights = torch.stack([(p.to_local() if hasattr(p, 'to_local') else p).detach().sum().double()
                           for p in raw_model.parameters()]).sum()
    health = torch.cat([window.sums, weights.view(1)])
    if system.world > 1:
        dist.all_reduce(health)
    health = health.cpu()
    if not torch.isfinite(health).all():
        if system.rank == 0:
            print(f"warning: not checkpointing after {step} steps: non-finite loss or weights", flush=True)
        return False
    state = dict(scaler=scaler.state_dict(), step=step, config=config, fingerprint=fingerprint,
                 prefix_hash=schedule.prefix_hashes(config, plan, upto=step)[-1],
                 generic_offset=plan['generic_offset'], generic_cursor=schedule.generic_cursor(plan, step),
                 rng_cpu=torch.get_rng_state(), log_sums=health[:5].clone(), last_log_step=last_log_step,
                 tokenizer=meta.get('tokenizer'), vocab_size=meta['vocab_size'],
                 # what export.py and sample.py need: the shape, the Hugging Face origin, the data's tokenizer
                 model_config=dataclasses.asdict(raw_model.config), hf_source=start.hf_source,
                 tokenizer_meta=tokenizer_meta(meta))
    if system.device_type == 'cuda':
        state['rng_cuda'] = torch.cuda.get_rng_state(system.device)
    for name in names:
        path = os.path.join(config['out_dir'], name)
        if config['parallel'] == 'fsdp':
            checkpoint.save_sharded(path, raw_model, optimizer, state, system.rank)
        elif system.rank == 0:
            checkpoint.save_checkpoint(path, dict(model=raw_model.state_dict(), optimizer=optimizer.state_dict(),
                                                  **state))
        if system.rank == 0 and name.startswith('ckpt.'):
            checkpoint.drop_other_latest(path)
    return True


def diverged(what, out_dir, last_good):
    kept = (f"{layout.latest(out_dir)} (after {last_good} steps) is the last good checkpoint: resume from it "
            f"with a lower learning rate and --force_resume=True" if last_good is not None
            else "no checkpoint was saved before it")
    return UserError(f"{what}; stopping. {kept}")


def main(argv):
    config = load_config(argv, doc=__doc__)
    check_config(config, int(os.environ.get('WORLD_SIZE', 1)))
    if int(os.environ.get('RANK', 0)) == 0:
        print_intent(config, argv)
    task_files = tasks.read_tasks(config['tasks'], config['block_size'])  # every task file checked before anything else
    system = runtime.init_system(config)
    master, out_dir, block_size = system.rank == 0, config['out_dir'], config['block_size']
    generic, target, start, model_config, plan, pool, fingerprint, task_set = open_run(config, system, task_files)

    # --- model and optimizer, restored where the run continues a checkpoint ---
    dtype, ctx, scaler = runtime.precision(config['dtype'], system.device_type, config['parallel'])
    raw_model = runtime.load_model(model_config, config, system, dtype, start)
    optimizer = runtime.make_optimizer(raw_model, config, system.device_type)
    window = LossWindow(system.device)
    last_log_step = (restore(start.checkpoint, raw_model, optimizer, scaler, window, system)
                     if start.kind in ('resume', 'fork') else -1)
    model = runtime.wrap_ddp(raw_model, config, system)
    log_path = checkpoint.restore_log(out_dir, start) if master else None
    log = logger(log_path, master, config)
    last_good = start.step if start.kind == 'resume' else None  # out_dir's checkpoint holds a good state of this run
    latest = 'ckpt' + layout.suffix(config['parallel'])  # ckpt.pt, or sharded the directory ckpt.dcp

    # --- the loop ---
    N, S = plan['N'], plan['S']
    chat = data.is_chat(generic) or data.is_chat(target)  # the sums in `window` count loss tokens, not sequences
    load = data.loader(plan, pool, generic, target, config, system.rank, system.world, system.device_type == 'cuda')
    prefetch = data.prefetcher(system.device_type == 'cuda')  # cuda: reads step t+1's windows while t computes
    upcoming = prefetch.submit(load, start.step) if start.step < N else None
    final_val, final_tasks, t0, first_log = {}, {}, time.time(), True
    window_start = t0
    if master:
        print_start(config, plan, raw_model, start, system, dtype)
    for t in range(start.step, N + 1):
        # after t completed steps: evaluate, then checkpoint (a resume at t starts right here, past both)
        if t > start.step or t == 0:
            if schedule.evals_at(plan, t):
                final_val, final_tasks, seconds = run_evals(t, model, (target, generic), task_set, config, plan, ctx,
                                                            system, log)
                window_start += seconds  # ms/step counts training only
                if not all(map(math.isfinite, final_val.values())):  # reduced in evaluate(): all ranks stop
                    raise diverged(f"the validation loss is {final_val['val_loss_target']} (target), "
                                   f"{final_val['val_loss_generic']} (generic) after {t} steps", out_dir, last_good)
            names = [name for name, due in ((latest, checkpoint_due(plan, t, config)),
                                            (layout.kept_name(t, config['parallel']), t in config['checkpoint_steps']))
                     if due]
            if t > 0 and names and save_checkpoints(t, names, raw_model, optimizer, scaler, window, last_log_step,
                                                    config, plan, fingerprint, generic['meta'], start, system):
                last_good = t if latest in names else last_good
        if t == N or (config['stop_after'] and t >= config['stop_after']):
            break

        batch = upcoming.result()
        upcoming = prefetch.submit(load, t + 1) if t + 1 < N else None
        if schedule.stage_record(plan, t):  # a stage starts: say where, with its LR schedule and optimizer reset
            log(schedule.stage_record(plan, t))
        if schedule.resets_optimizer_at(plan, t):  # e.g. fine-tuning: stage 2 starts with fresh AdamW moments
            optimizer = runtime.make_optimizer(raw_model, config, system.device_type)
        lr = schedule.lr_at(plan, t)
        for group in optimizer.param_groups:
            group['lr'] = lr
        fed = train_step(model, optimizer, scaler, ctx, batch, window, config['grad_clip'], config['log_batch_ids'],
                         config['loss_average'])
        if config['log_batch_ids']:
            log(batch_record(t, fed, system.world))

        if train_log_due(plan, t, config['log_interval']):
            sums = window.reduced(system.world)  # every rank has them: a NaN stops all ranks here together
            if not math.isfinite(sums[0]):
                raise diverged(f"the training loss is {sums[0]} at step {t + 1}/{N} (the mean over steps "
                               f"{last_log_step + 2}..{t + 1})", out_dir, last_good)
            now = time.time()
            ms = (now - window_start) * 1000 / (t - last_log_step)
            mfu = raw_model.estimate_mfu(S * block_size * 1000 / ms / system.world, system.device_name)  # per device
            eta = (now - t0) / (t + 1 - start.step) * (N - t - 1)
            means = LossWindow.means(sums, tokens_per_count=1 if chat else block_size)
            log(*train_record(plan, t, lr, means, t - last_log_step, ms, mfu, now - t0, eta))
            if master and first_log:
                print(f"estimated total: {duration(now - t0 + eta)} for steps {start.step + 1}..{N} "
                      f"({duration(now - t0)} for the first {t + 1 - start.step})", flush=True)
                first_log = False
            if master and last_log_step < start.step and runtime.use_compile(config, system.device_type):
                print(f"compiled: {runtime.compile_counts()} (dynamo's counters)", flush=True)
            window.reset()
            last_log_step, window_start = t, time.time()
    prefetch.shutdown()

    if t < N:  # stop_after: the checkpoint is written; no summary.json, the run is not finished
        if master:
            print(f"stopped after {t} steps (stop_after={config['stop_after']}); continue with --init_from=resume",
                  flush=True)
    elif master:
        # resumed after the final eval: from the log
        final_val = {**final_val, **final_tasks} if final_val else checkpoint.final_evals(log_path)
        write_summary(config, plan, final_val, generic, target, system, time.time() - t0,
                      hf.model_summary(model_config, start.hf_source))
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == '__main__':
    run_main(main)
