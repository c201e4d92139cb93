"""
bench.py: how fast is a training step of a config, and what does replay cost?

    python bench.py config/tiny.py                    # ms/step, tokens/s, MFU with the replay loader
    python bench.py config/tiny.py --compare          # replay loader vs a nanoGPT-style single-source loader
    python bench.py config/tiny.py --profile          # also a torch profiler trace: out_dir/bench_trace.json

It measures the real code on the run's real model, built as train.py builds it (runtime.load_model from
checkpoint.start and train.model_shape: init_from's shape and weights, a model directory's or a checkpoint's, or
the config's keys from scratch; pad_vocab, parallel, dtype, activation checkpointing, compile), named in its
output; init_from='resume' is refused. The plan from schedule.make_plan, batches from data.load_step (both memmaps
of the config's data), one step = train.train_step, fed as train.py feeds it (data.prefetcher: a prefetch thread on
cuda, inline on cpu), the LR of the plan's step, and a host read of the loss sums every log_interval steps as
train.py's logs do. The steps timed are the plan's from bench_start (default: the first step of the last stage
with target data, the paper's stage 2, where both sources are mixed), after bench_warmup untimed steps
(torch.compile, allocator, page cache). Single process: tokens/s is one device's.

--compare alternates, in this process and on the same model (the order flips every round so drift cancels):
bench_steps steps fed by the replay loader, then bench_steps fed by single_source_batch, for bench_rounds rounds
or, by default, as many as fit in bench_seconds; it prints the ratio of their tokens/s (the median over rounds).
Both loaders are fed the same way to the same train_step, so they differ only in how a batch is made. Since
compute hides the loader on a GPU, it also times each loader alone, without compute.

MFU = flops/token x tokens/s / the device's dense bf16 peak (model.py: flops_per_token, peak_flops); unknown on
CPU and on GPUs model.py has no peak for.

Extra keys (besides every config key): compare, profile (bare --compare / --profile work too), bench_steps,
bench_warmup, bench_rounds, bench_seconds, bench_loader_batches, bench_start, prefetch, bench_json. Every key takes
--key=value or --key value; a boolean may be bare.
"""
import itertools
import os
import platform
import resource
import statistics
import sys
import time
from types import SimpleNamespace

import numpy as np
import torch

import checkpoint
import data
import layout
import runtime
import schedule
import sources
import train
from configurator import UserError, check_rules, load_config, run_main

BENCH_KEYS = dict(
    compare=False,           # also time the nanoGPT-style single-source loader, alternating with replay's
    profile=False,           # write a torch profiler trace of one window of replay steps to out_dir
    bench_steps=10,          # timed steps per measurement (per loader and round with --compare)
    bench_warmup=3,          # untimed steps first, per loader
    bench_rounds=0,          # rounds of bench_steps per loader (alternating with --compare); medians are printed.
                             # 0 = as many as fit in bench_seconds, at least 5
    bench_seconds=20.0,      # time budget of bench_rounds=0
    bench_loader_batches=64, # loader-only timing: steps per loader (mean printed; 64 = one data.StepBatches chunk)
    bench_start=-1,          # first plan step timed; -1 = the first step of the last stage with target data (the
                             # paper's stage 2; 0 without target data)
    prefetch='auto',         # where the loaders run: 'auto' = as train.py (a thread on cuda, inline on cpu),
                             # 'thread' or 'inline' to measure the other choice
    bench_json='',           # also write the replay loader's numbers to this JSON file (bench_gpu.py's table)
)
BENCH_RULES = dict(bench_steps='at least 1', bench_loader_batches='at least 1', bench_warmup='0 or more',
                   bench_rounds='0 or more', bench_seconds='0 or more', bench_start='-1 or more',
                   prefetch=('auto', 'thread', 'inline'), bench_json='an output file')


def single_source_batch(data, n_rows, micro_batch, block_size, pin, generator):
    """The baseline, written in nanoGPT's get_batch way: random offsets into ONE memmap, each row sliced and
    converted to int64, stacked, pinned (on cuda; then copied non_blocking by train_step). Two differences from
    nanoGPT, both so that the two loaders move the same bytes to the device: a row is block_size + 1 tokens
    (x and y are views of it, as train.py does, instead of two overlapping copies), and it returns load_step's
    structure, with all-False is_target flags. nanoGPT also re-opens the memmap every batch; we do not, which
    only makes the baseline faster."""
    ix = torch.randint(len(data) - block_size, (n_rows,), generator=generator).tolist()
    rows = torch.stack([torch.from_numpy(data[i:i + block_size + 1].astype(np.int64)) for i in ix])
    flags = torch.zeros(n_rows, dtype=torch.bool)
    if pin:
        rows, flags = rows.pin_memory(), flags.pin_memory()
    return [(rows[m * micro_batch:(m + 1) * micro_batch], flags[m * micro_batch:(m + 1) * micro_batch])
            for m in range(n_rows // micro_batch)]


def cpu_model():
    try:
        with open('/proc/cpuinfo') as f:
            return next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
    except (OSError, StopIteration):
        return platform.processor() or 'unknown CPU'


def labelled(name, loader):
    """loader(t) inside a profiler label, so a trace shows where each loader's time went (costless otherwise)."""
    def load(t):
        with torch.profiler.record_function(name):
            return loader(t)
    return load


def check_options(config):
    train.check_config(config, int(os.environ.get('WORLD_SIZE', 1)))
    check_rules(config, BENCH_RULES)


def setup(config):
    """Data, plan, model and optimizer, made as train.py makes them, and the loaders to time. Returns a namespace
    of it all (b.config, b.plan, b.model, ...)."""
    system = runtime.init_system(config)
    cuda = system.device_type == 'cuda'
    generic, target = sources.open_sources(config)
    block_size = config['block_size']
    plan = schedule.make_plan(config, sources.train_windows(target, block_size), sources.train_windows(generic, block_size))
    pool = schedule.pool_of(plan)
    # by default the first step of the last stage with target data (the paper's stage 2), else step 0
    with_target = [s['start'] for s in plan['stages'] if s['target']]
    start = config['bench_start'] if config['bench_start'] >= 0 else (with_target[-1] if with_target else 0)
    if start >= plan['N']:
        raise UserError(f"bench_start={start} is past the plan's last step {plan['N'] - 1}")
    dtype, ctx, scaler = runtime.precision(config['dtype'], system.device_type, config['parallel'])
    # the run's model, built as train.py builds it: init_from's shape and weights (a model directory, a checkpoint,
    # or from scratch), padding, parallel, dtype, compile. fsdp runs under torchrun, and one rank shards over itself
    # (the code path, not the savings)
    if config['init_from'] == 'resume':
        raise UserError("init_from='resume': bench.py times a run's model, not its continuation: pass the checkpoint "
                        "as --init_from=PATH (its weights), or --init_from=scratch")
    run_start = checkpoint.start(config, generic['meta'])
    model_config = train.model_shape(config, run_start, generic, target, system.device_type)
    raw_model = runtime.load_model(model_config, config, system, dtype, run_start)
    b = SimpleNamespace(config=config, system=system, cuda=cuda, plan=plan, start=start, raw_model=raw_model,
                        model=runtime.wrap_ddp(raw_model, config, system), dtype=dtype, ctx=ctx,
                        scaler=scaler, optimizer=runtime.make_optimizer(raw_model, config, system.device_type),
                        window=train.LossWindow(system.device), pipes={}, origin=origin(config, run_start), results={},
                        threaded=cuda if config['prefetch'] == 'auto' else config['prefetch'] == 'thread',
                        sync=torch.cuda.synchronize if cuda else (lambda: None))
    # train.py's loader (a new one has its own data.StepBatches, which makes the plan's batches 64 at a time)
    b.replay_loader = lambda: labelled('replay_loader', data.loader(plan, pool, generic, target, config, 0, 1, cuda))
    generator = torch.Generator().manual_seed(config['data_seed'])
    single = labelled('single_source_loader', lambda t: single_source_batch(
        generic['train'], plan['S'], config['batch_size'], block_size, cuda, generator))
    b.loaders = dict(replay=b.replay_loader(), **({'single-source': single} if config['compare'] else {}))
    return b


def timed_steps(b, name, n):
    """(wall, process CPU) seconds of n training steps fed by b.loaders[name] through data.prefetcher, as in
    train.py (threaded: the next batch is made while this step computes; inline: right before it). Each loader
    walks the plan's steps from b.start (cycling) in its own pipeline, so a window starts with its batch made, as
    in a long run, and the batch made during its last step is the next window's first. The loss reaches the host
    every log_interval steps, as train.py's log does."""
    if name not in b.pipes:  # per loader, kept across its windows: (prefetcher, its plan steps, next step, batch)
        steps = itertools.cycle(range(b.start, b.plan['N']))
        t = next(steps)
        prefetch = data.prefetcher(b.threaded)
        b.pipes[name] = (prefetch, steps, t, prefetch.submit(b.loaders[name], t))
    prefetch, steps, t, upcoming = b.pipes[name]
    upcoming.result()
    b.sync()
    begin, cpu_begin = time.perf_counter(), time.process_time()
    for i in range(n):
        batch, t_next = upcoming.result(), next(steps)
        upcoming = prefetch.submit(b.loaders[name], t_next)
        for group in b.optimizer.param_groups:
            group['lr'] = schedule.lr_at(b.plan, t)
        train.train_step(b.model, b.optimizer, b.scaler, b.ctx, batch, b.window, b.config['grad_clip'])
        if (i + 1) % b.config['log_interval'] == 0:
            b.window.reduced(1)
        t = t_next
    b.sync()
    elapsed = time.perf_counter() - begin, time.process_time() - cpu_begin
    b.pipes[name] = (prefetch, steps, t, upcoming)
    return elapsed


def origin(config, run_start):
    """Where the timed model's shape and weights come from, for its output line."""
    if run_start.kind == 'scratch':
        return 'from scratch (this config\'s model keys)'
    return f"{'the model directory' if run_start.kind == 'hf' else 'the checkpoint'} {run_start.path}"


def attention_kernel(b):
    """The SDPA kernel torch picks for this model's attention (its heads, head size, block_size, dtype, device),
    as torch's own dispatcher chooses it for one causal call of that shape: flash, efficient, cudnn or math."""
    from torch.nn.attention import SDPBackend
    c, block_size = b.raw_model.config, b.config['block_size']
    dtype = torch.float32 if b.dtype == 'float32' else getattr(torch, b.dtype)
    q = torch.zeros(1, block_size, c.n_head, c.head_size, device=b.system.device, dtype=dtype).transpose(1, 2)
    k = torch.zeros(1, block_size, c.kv_heads, c.head_size, device=b.system.device, dtype=dtype).transpose(1, 2)
    choice = torch._fused_sdp_choice(q, k, k, is_causal=True, enable_gqa=c.kv_heads != c.n_head)
    return SDPBackend(choice).name.lower() + (' (cpu)' if b.system.device_type == 'cpu' else '')


def print_setup(b):
    config, plan, system, model = b.config, b.plan, b.system, b.raw_model
    S, block_size = plan['S'], config['block_size']
    n_target = sum(schedule.step_batch(plan, b.start)[0])
    c = model.config
    print(f"bench: {' '.join(sys.argv[1:])}")
    print(f"load average (1 min) at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(f"model: {c.arch} {b.origin}: {c.n_layer} layers x {c.n_embd} wide, {model.get_num_params() / 1e6:.2f}M "
          f"non-embedding params, {model.get_num_params(non_embedding=False):,} parameters in all, vocab "
          f"{c.vocab_size}" + (f" (padded to {c.padded_vocab_size} rows)" if c.padded_vocab_size else ""))
    print(f"device: {system.device_name if b.cuda else cpu_model()} ({torch.get_num_threads()} threads) | dtype "
          f"{b.dtype} | {config['parallel']} x {system.world} | "
          f"{train.compile_plan(config, system.device_type, c.n_layer)}"
          f" | attention {attention_kernel(b)}"
          f" | loader {'in a prefetch thread' if b.threaded else 'inline'} | torch {torch.__version__}")
    print(f"batch: {S} sequences x {block_size} tokens = {S * block_size} tokens/step (batch_size "
          f"{config['batch_size']} x gradient_accumulation_steps {config['gradient_accumulation_steps']}); plan "
          f"steps from {b.start} (stage {schedule.stage_of(plan, b.start)}: {n_target} target + {S - n_target} "
          f"generic sequences at step {b.start})")
    print(f"flops/token: {model.estimate_flops_per_token():.4g} = 6*N + 6*L*H*Q*T (causal attention) with N = "
          f"non-embedding params + output head, L={c.n_layer} H={c.n_head} Q={c.head_size} T={block_size}")


def run_rounds(b):
    """Warm-up, then rounds of bench_steps steps per loader, alternating (the order flips every round so drift
    cancels): bench_rounds of them, or as many as fit in bench_seconds (at least 5). Returns, per loader, the
    (wall, CPU) seconds of each round."""
    config, loaders = b.config, list(b.loaders)
    for name in loaders:
        if config['bench_warmup']:
            timed_steps(b, name, config['bench_warmup'])
    seconds = {name: [] for name in loaders}
    budget_end = time.perf_counter() + config['bench_seconds']
    fixed = config['bench_rounds']
    while (len(seconds['replay']) < fixed if fixed
           else len(seconds['replay']) < 5 or time.perf_counter() < budget_end):
        r = len(seconds['replay'])
        for name in (loaders if r % 2 == 0 else loaders[::-1]):
            seconds[name].append(timed_steps(b, name, config['bench_steps']))
        if config['compare'] and 0 < fixed <= 20:
            replay_ms, single_ms = (seconds[name][-1][0] * 1000 / config['bench_steps'] for name in loaders)
            print(f"round {r + 1}/{fixed}: replay {replay_ms:.2f} ms/step, single-source {single_ms:.2f} ms/step, "
                  f"ratio {single_ms / replay_ms:.4f}")
    return seconds


def print_results(b, seconds):
    config, device_name = b.config, b.system.device_name
    rounds, per_step = len(seconds['replay']), lambda x: x * 1000 / config['bench_steps']
    if not all(np.isfinite(b.window.reduced(1))):
        print("warning: the loss is not finite: the timings are of a diverged model")
    for name in b.loaders:
        ms = per_step(statistics.median(wall for wall, _ in seconds[name]))
        tokens_per_s = b.plan['S'] * config['block_size'] * 1000 / ms
        mfu = b.raw_model.estimate_mfu(tokens_per_s, device_name)
        b.results.setdefault(name, dict(ms_per_step=ms, tokens_per_s=tokens_per_s, mfu=mfu))
        print(f"{name} loader: {ms:.2f} ms/step | {tokens_per_s:,.0f} tokens/s | mfu "
              + (f"{100 * mfu:.2f}%" if mfu is not None else f"unknown (no dense bf16 peak known for {device_name})")
              + f" | process CPU {per_step(statistics.median(cpu for _, cpu in seconds[name])):.2f} ms/step"
              + (f" | median of {rounds} rounds x {config['bench_steps']} steps" if rounds > 1
                 else f" | {config['bench_steps']} steps"))
    if config['compare']:
        # per round: single-source time / replay time = replay tokens/s / single-source tokens/s
        # by process CPU time too: steadier where other processes share the CPUs, and it counts the loader thread
        for label, i in (('ratio replay/single-source tokens/s', 0), ('same ratio by process CPU time', 1)):
            ratios = sorted(base[i] / mine[i] for mine, base in zip(seconds['replay'], seconds['single-source']))
            spread = (f"quartiles {ratios[len(ratios) // 4]:.4f}..{ratios[(3 * len(ratios)) // 4]:.4f}"
                      if len(ratios) >= 4 else f"min {ratios[0]:.4f}, max {ratios[-1]:.4f}")
            print(f"{label}: {statistics.median(ratios):.4f} (median of {rounds} alternations; {spread})")
            if i == 0 and len(ratios) >= 4 and ratios[(3 * len(ratios)) // 4] - ratios[len(ratios) // 4] > 0.05:
                print(f"note: the rounds disagree by more than 5%: something else shares the device (load average "
                      f"{os.getloadavg()[0]:.2f}); a longer --bench_seconds with fewer --bench_steps narrows the "
                      f"median")
    if b.cuda:
        b.results['peak_memory_gib'] = torch.cuda.max_memory_allocated() / 2**30
        print(f"peak memory: {b.results['peak_memory_gib']:.2f} GiB allocated by torch on this GPU")
    else:
        b.results['peak_memory_gib'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(f"peak memory: {b.results['peak_memory_gib']:.2f} GiB resident (the process's maximum RSS: model, "
              f"optimizer, activations, and torch itself)")
    b.results['compile'] = runtime.compile_counts()
    print(f"compiled: {b.results['compile']} (dynamo's counters)")
    print(f"load average (1 min) at end: {os.getloadavg()[0]:.2f}"
          + (" (other processes slow both loaders alike: that is why they alternate)" if config['compare'] else ""))


def time_loaders_alone(b):
    """The loaders alone, alternating call by call over consecutive plan steps: the host time per step's batch,
    a mean, so that replay's index arithmetic made a chunk of steps at a time (data.StepBatches) counts in full."""
    alone = dict(b.loaders, replay=b.replay_loader())
    spent = dict.fromkeys(alone, 0.0)
    batches = b.config['bench_loader_batches']
    for i in range(batches):
        for name, loader in alone.items():
            begin = time.perf_counter()
            loader(b.start + i % (b.plan['N'] - b.start))
            spent[name] += time.perf_counter() - begin
    print(f"loader only (host, one step's batch, mean of {batches} steps): "
          + ', '.join(f"{name} {v * 1000 / batches:.3f} ms" for name, v in spent.items()))


def profile(b):
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if b.cuda else [])
    with torch.profiler.profile(activities=activities) as prof:
        timed_steps(b, 'replay', b.config['bench_steps'])
    os.makedirs(b.config['out_dir'], exist_ok=True)
    path = os.path.join(b.config['out_dir'], 'bench_trace.json')
    prof.export_chrome_trace(path)
    print(prof.key_averages().table(sort_by='self_device_time_total' if b.cuda else 'self_cpu_time_total',
                                    row_limit=12))
    print(f"profile: {b.config['bench_steps']} replay steps -> {path} (open in chrome://tracing or perfetto)")


def main(argv):
    config = load_config(argv, extra_keys=BENCH_KEYS, doc=__doc__)
    check_options(config)
    b = setup(config)
    print_setup(b)
    print_results(b, run_rounds(b))
    if config['bench_json']:
        c = b.raw_model.config
        layout.write_json_atomic(config['bench_json'], dict(
            b.results, model=f"{c.arch} {b.origin}", params=b.raw_model.get_num_params(non_embedding=False),
            device=b.system.device_name, dtype=b.dtype, parallel=config['parallel'], world=b.system.world,
            attention=attention_kernel(b), tokens_per_step=b.plan['S'] * config['block_size'],
            block_size=config['block_size'], activation_checkpointing=runtime.checkpointing_mode(
                config['activation_checkpointing']), compiled=runtime.use_compile(config, b.system.device_type)))
    time_loaders_alone(b)
    if config['profile']:
        profile(b)
    for prefetch, *_ in b.pipes.values():
        prefetch.shutdown()


if __name__ == '__main__':
    run_main(main)
