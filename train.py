"""
train.py: executes the plan that schedule.py makes. Single process:
    python train.py config/tiny.py --max_iters=100
DDP on one node (S = batch_size * gradient_accumulation_steps stays global, so the data is the same on any
number of ranks):
    torchrun --standalone --nproc_per_node=8 train.py config/flan_replay.py
Every step t: ask schedule.py which sequences and which LR, read those windows from the two memmaps, split the
global batch over ranks and micro-steps, forward/backward, clip, step. Nothing here decides what data is seen.

Outputs in out_dir: log.jsonl (one JSON record per line; keys in docs/logs.md "Log format"), summary.json at the end,
ckpt.pt (latest, replaced atomically), ckpt_<step>.pt for checkpoint_steps (parallel='fsdp': the sharded ckpt.dcp/,
ckpt_<step>.dcp/). The plumbing lives beside this file:
sources.py (the data directories), data.py (the loader), checkpoint.py (how a run starts, checkpoints, fingerprints,
summary.json), runlog.py (the log's records and lines, the log a resume keeps), runtime.py (device, precision, model,
optimizer, DDP).
"""
import dataclasses
import importlib.util
import math
import os
import time
from types import SimpleNamespace

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import checkpoint
import data
import hf
import layout
import runlog
import runtime
import schedule
import sources
import tasks
from configurator import DEFAULTS, UserError, check_rules, load_config, run_main, split_argv
from model import GPT, document_positions_and_mask, model_config_from


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
        """The sums over every rank's sequences, on the host (one all-reduce: it also carries the NaN check); their
        means: runlog.loss_means."""
        sums = self.sums.clone()
        if world > 1:
            dist.all_reduce(sums)
        return sums.tolist()

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
    n, batch_size, block_size = sources.val_windows(source, config), config['batch_size'], config['block_size']
    views = data.split_views(source, 'val', block_size) if sources.is_chat(source) else None
    mine = np.arange(system.rank, n, system.world)
    total = torch.zeros(2, device=system.device, dtype=torch.float64)  # loss sum, loss tokens (text: sequences)
    model.eval()
    # every rank runs as many batches as the busiest one (FSDP2 gathers weights collectively in each forward): a
    # rank out of windows computes window 0 and drops it
    for i in range(0, -(-n // system.world), batch_size):
        windows = mine[i:i + batch_size]
        picked = windows if len(windows) else np.zeros(1, dtype=np.int64)
        if views is None:  # every window has block_size tokens: the sequence mean is the token mean
            rows = torch.from_numpy(data.read_windows(source['val'], picked, block_size)).to(system.device)
            with ctx:
                _, loss = model(rows[:, :-1], rows[:, 1:])
            loss_sum, count = loss.double().sum(), loss.numel()
        else:
            loss_mask, starts = (torch.from_numpy(a).to(system.device) for a in data.chat_rows(views, picked))
            rows = torch.from_numpy(views[0][picked].astype(np.int64)).to(system.device)
            loss, loss_tokens = chat_forward(model, ctx, rows, loss_mask, starts, True)
            loss_sum, count = (loss.double() * loss_tokens).sum(), loss_tokens.sum()
        if len(windows):
            total[0] += loss_sum
            total[1] += count
    model.train()
    if system.world > 1:
        dist.all_reduce(total)
    return (total[0] / total[1]).item()


# what each key's value must be, beyond its type (configurator.check_rules: one line "KEY=VALUE must be WHAT");
# the checks that relate keys are check_config's, the schedule's keys are schedule.py's
RULES = dict(
    **dict.fromkeys(('n_layer', 'n_head', 'n_embd', 'log_interval', 'val_tokens'), 'at least 1'),
    **dict.fromkeys(('eval_interval', 'checkpoint_interval', 'spike_eval_steps', 'spike_eval_interval',
                     'intermediate_size', 'data_seed', 'stop_after'), '0 or more'),
    seed='a whole number from 0 to 2**64 - 1',
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


def batch_record(t, fed, world):
    """Tests only (log_batch_ids): the first token of every sequence step t fed, in global order."""
    fed = torch.cat(fed).tolist()
    if world > 1:
        gathered = [None] * world
        dist.all_gather_object(gathered, fed)
        fed = [row for part in gathered for row in part]
    return dict(kind='batch', step=t, first_tokens=[r[0] for r in fed], is_target=[r[1] for r in fed])


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


def print_start(run):
    config, plan, raw_model, system = run.config, run.plan, run.raw_model, run.system
    print(f"run {config['out_dir']}: {plan['N']} steps x {plan['S']} sequences x {config['block_size']} tokens, "
          f"U={plan['U']} target sequences x e={plan['e']}, stages from steps {[0] + schedule.stage_starts(plan)}, "
          f"{raw_model.get_num_params() / 1e6:.2f}M non-embedding params, device {system.device_name}, dtype "
          f"{run.dtype}, {config['parallel']} x {system.world}, "
          f"{compile_plan(config, system.device_type, raw_model.config.n_layer)}"
          + (f", resuming at step {run.start.step}" if run.start.step else ""), flush=True)
    if run.start.hf_source:
        print(f"model from {run.start.hf_source['dir']}: {hf.describe(raw_model.config)}", flush=True)


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
    refused run loses nothing. Returns the Run: config, system, master (rank 0), generic, target, start
    (checkpoint.Start), model_config, plan, pool, fingerprint, task_set; build() adds the rest."""
    block_size, out_dir = config['block_size'], config['out_dir']
    generic, target = sources.open_sources(config)
    start = checkpoint.start(config, generic['meta'])
    model_config = model_shape(config, start, generic, target, system.device_type)
    plan = schedule.make_plan(config, sources.train_windows(target, block_size),
                              sources.train_windows(generic, block_size), generic_offset=start.generic_offset)
    pool = schedule.pool_of(plan)
    fingerprint = checkpoint.fingerprint(config, plan, generic, target)
    if start.kind in ('resume', 'fork'):
        checkpoint.check_resume(start, config, plan, fingerprint)
    for source in (generic, target):
        sources.check_token_ids(source, model_config.vocab_size, config['val_tokens'])
    task_set = tasks.encode_tasks(task_files, config, start.hf_source, generic['meta'])  # in the model's tokenizer
    checkpoint.check_out_dir(config, start)
    # validated: from here on out_dir changes
    if system.rank == 0:
        checkpoint.prepare_out_dir(out_dir)
        for warning in plan['warnings']:
            print(f"warning: {warning}")
    return SimpleNamespace(config=config, system=system, master=system.rank == 0, generic=generic, target=target,
                           start=start, model_config=model_config, plan=plan, pool=pool, fingerprint=fingerprint,
                           task_set=task_set)


def build(run):
    """The rest of the Run: dtype, ctx, scaler (runtime.precision), raw_model (state dicts, parameters, generation)
    and model (what the loop calls: DDP's wrapper, or raw_model), the optimizer (a stage may replace it), the loss
    window, last_log_step (the last train record's step) and the log, restored where the run continues a checkpoint;
    last_good (the step of this run's last good checkpoint in out_dir, or None), latest (that checkpoint's name),
    chat (the window counts loss tokens, not sequences), the last evals' numbers."""
    config, system, start = run.config, run.system, run.start
    run.dtype, run.ctx, run.scaler = runtime.precision(config['dtype'], system.device_type, config['parallel'])
    run.raw_model = runtime.load_model(run.model_config, config, system, run.dtype, start)
    run.optimizer = runtime.make_optimizer(run.raw_model, config, system.device_type)
    run.window = LossWindow(system.device)
    run.last_log_step = runtime.restore(run) if start.kind in ('resume', 'fork') else -1
    run.model = runtime.wrap_ddp(run.raw_model, config, system)
    run.log_path = runlog.restore_log(config['out_dir'], start) if run.master else None
    run.log = runlog.logger(run.log_path, run.master, config)
    run.last_good = start.step if start.kind == 'resume' else None  # out_dir's checkpoint holds a good state
    run.latest = 'ckpt' + layout.suffix(config['parallel'])  # ckpt.pt, or sharded the directory ckpt.dcp
    run.chat = sources.is_chat(run.generic) or sources.is_chat(run.target)
    run.final_val, run.final_tasks = {}, {}


def diverged(what, run):
    kept = (f"{layout.latest(run.config['out_dir'])} (after {run.last_good} steps) is the last good checkpoint: "
            f"resume from it with a lower learning rate and --force_resume=True" if run.last_good is not None
            else "no checkpoint was saved before it")
    return UserError(f"{what}; stopping. {kept}")


def evals_and_checkpoints(run, t):
    """After t completed steps: the evals due (each source's validation loss, then each task's accuracy; a
    non-finite loss stops the run), then the checkpoints due."""
    if schedule.evals_at(run.plan, t):
        begin = time.time()
        val = run.final_val = {f'val_loss_{s["name"]}': evaluate(run.model, s, run.config, run.ctx, run.system)
                               for s in (run.target, run.generic)}
        run.log(*runlog.eval_record(run.plan, t, val))
        run.final_tasks = tasks.evaluate_and_log(run.task_set, run.model, t, run.ctx, run.system, run.log)
        run.window_start += time.time() - begin  # ms/step counts training only
        if not all(map(math.isfinite, val.values())):  # reduced in evaluate(): all ranks stop
            raise diverged(f"the validation loss is {val['val_loss_target']} (target), {val['val_loss_generic']} "
                           f"(generic) after {t} steps", run)
    names = [name for name, due in ((run.latest, checkpoint.due(run.plan, t, run.config)),
                                    (layout.kept_name(t, run.config['parallel']), t in run.config['checkpoint_steps']))
             if due]
    if t > 0 and names and checkpoint.save_run(run, t, names):
        run.last_good = t if run.latest in names else run.last_good


def log_train(run, t, lr):
    """The train record after step t, of the loss window since the last one (a non-finite loss stops the run);
    after this process's first, its estimated total time and what compiled."""
    plan, system, block_size = run.plan, run.system, run.config['block_size']
    first = run.last_log_step < run.start.step  # this process's first train record
    sums = run.window.reduced(system.world)  # every rank has them: a NaN stops all ranks here together
    if not math.isfinite(sums[0]):
        raise diverged(f"the training loss is {sums[0]} at step {t + 1}/{plan['N']} (the mean over steps "
                       f"{run.last_log_step + 2}..{t + 1})", run)
    now = time.time()
    ms = (now - run.window_start) * 1000 / (t - run.last_log_step)
    per_device = plan['S'] * block_size * 1000 / ms / system.world  # tokens per second
    mfu = run.raw_model.estimate_mfu(per_device, system.device_name)
    eta = (now - run.t0) / (t + 1 - run.start.step) * (plan['N'] - t - 1)
    means = runlog.loss_means(sums, tokens_per_count=1 if run.chat else block_size)
    run.log(*runlog.train_record(plan, t, lr, means, t - run.last_log_step, ms, mfu, now - run.t0, eta))
    if run.master and first:
        print(f"estimated total: {runlog.duration(now - run.t0 + eta)} for steps {run.start.step + 1}..{plan['N']} "
              f"({runlog.duration(now - run.t0)} for the first {t + 1 - run.start.step})", flush=True)
        if runtime.use_compile(run.config, system.device_type):
            print(f"compiled: {runtime.compile_counts()} (dynamo's counters)", flush=True)
    run.window.reset()
    run.last_log_step, run.window_start = t, time.time()


def loop(run):
    """The plan's steps from the run's start: after t completed steps the evals and checkpoints due (a resume at t
    starts right here, past both), then step t at the plan's LR, with its stage record and optimizer reset, and a
    train record where one is due. Returns the steps done: N, or fewer where stop_after stops it."""
    config, plan, system, N = run.config, run.plan, run.system, run.plan['N']
    cuda = system.device_type == 'cuda'
    load = data.loader(plan, run.pool, run.generic, run.target, config, system.rank, system.world, cuda)
    prefetch = data.prefetcher(cuda)  # cuda: reads step t+1's windows while t computes
    upcoming = prefetch.submit(load, run.start.step) if run.start.step < N else None
    run.t0 = run.window_start = time.time()  # the loop's clock; the open log window's, evals excluded
    if run.master:
        print_start(run)
    for t in range(run.start.step, N + 1):
        if t > run.start.step or t == 0:
            evals_and_checkpoints(run, t)
        if t == N or (config['stop_after'] and t >= config['stop_after']):
            break
        batch = upcoming.result()
        upcoming = prefetch.submit(load, t + 1) if t + 1 < N else None
        if schedule.stage_record(plan, t):  # a stage starts: say where, with its LR schedule and optimizer reset
            run.log(schedule.stage_record(plan, t))
        if schedule.resets_optimizer_at(plan, t):  # e.g. fine-tuning: stage 2 starts with fresh AdamW moments
            run.optimizer = runtime.make_optimizer(run.raw_model, config, system.device_type)
        lr = schedule.lr_at(plan, t)
        for group in run.optimizer.param_groups:
            group['lr'] = lr
        fed = train_step(run.model, run.optimizer, run.scaler, run.ctx, batch, run.window, config['grad_clip'],
                         config['log_batch_ids'], config['loss_average'])
        if config['log_batch_ids']:
            run.log(batch_record(t, fed, system.world))
        if runlog.train_log_due(plan, t, config['log_interval']):
            log_train(run, t, lr)
    prefetch.shutdown()
    return t


def main(argv):
    config = load_config(argv, doc=__doc__)
    check_config(config, int(os.environ.get('WORLD_SIZE', 1)))
    if int(os.environ.get('RANK', 0)) == 0:
        print_intent(config, argv)
    task_files = tasks.read_tasks(config['tasks'], config['block_size'])  # every task file checked before anything else
    run = open_run(config, runtime.init_system(config), task_files)
    build(run)
    t = loop(run)
    if t < run.plan['N']:  # stop_after: the checkpoint is written; no summary.json, the run is not finished
        if run.master:
            print(f"stopped after {t} steps (stop_after={config['stop_after']}); continue with --init_from=resume",
                  flush=True)
    elif run.master:
        # resumed after the final eval: from the log
        final = {**run.final_val, **run.final_tasks} if run.final_val else runlog.final_evals(run.log_path)
        checkpoint.write_summary(run, final, time.time() - run.t0, runtime.compile_counts())
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == '__main__':
    run_main(main)
