"""
bench.py: how fast is a training step of a config, and what does replay cost?

    python bench.py config/tiny.py                    # ms/step, tokens/s, MFU with the replay loader
    python bench.py config/tiny.py --compare          # replay loader vs a nanoGPT-style single-source loader
    python bench.py config/tiny.py --profile          # also a torch profiler trace: out_dir/bench_trace.json

It measures the real code: the plan from schedule.make_plan, batches from train.load_step (both memmaps of the
config's data), one step = train.train_step, fed as train.py feeds it (train.prefetcher: a prefetch thread on
cuda, inline on cpu), the LR of the plan's step, and a host read of the loss sums every log_interval steps as
train.py's logs do. The steps timed are the plan's from bench_start (default: the first stage-2 step, where both
sources are mixed), after bench_warmup untimed steps (torch.compile, allocator, page cache). Single process:
tokens/s is one device's.

--compare alternates, in this process and on the same model (the order flips every round so drift cancels):
bench_steps steps fed by the replay loader, then bench_steps fed by single_source_batch, for bench_rounds rounds
or, by default, as many as fit in bench_seconds; it prints the ratio of their tokens/s (the median over rounds).
Both loaders are fed the same way to the same train_step, so they differ only in how a batch is made. Since
compute hides the loader on a GPU, it also times each loader alone, without compute.

MFU = flops/token x tokens/s / the device's dense bf16 peak (model.py: flops_per_token, peak_flops); unknown on
CPU and on GPUs model.py has no peak for.

Extra keys (besides every config key): compare, profile (bare --compare / --profile work too), bench_steps,
bench_warmup, bench_rounds, bench_seconds, bench_loader_batches, bench_start, prefetch.
"""
import contextlib
import itertools
import os
import platform
import statistics
import sys
import time

import numpy as np
import torch

import schedule
import train
from configurator import UserError, load_config, run_main
from model import GPT, model_config_from

BENCH_KEYS = dict(
    compare=False,           # also time the nanoGPT-style single-source loader, alternating with replay's
    profile=False,           # write a torch profiler trace of one window of replay steps to out_dir
    bench_steps=10,          # timed steps per measurement (per loader and round with --compare)
    bench_warmup=3,          # untimed steps first, per loader
    bench_rounds=0,          # rounds of bench_steps per loader (alternating with --compare); medians are printed.
                             # 0 = as many as fit in bench_seconds, at least 5
    bench_seconds=20.0,      # time budget of bench_rounds=0
    bench_loader_batches=64, # loader-only timing: steps per loader (mean printed; 64 = one train.StepBatches chunk)
    bench_start=-1,          # first plan step timed; -1 = the first stage-2 step (0 without a stage 2)
    prefetch='auto',         # where the loaders run: 'auto' = as train.py (a thread on cuda, inline on cpu),
                             # 'thread' or 'inline' to measure the other choice
)
SWITCHES = ('--compare', '--profile')


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


def main():
    argv = [f'{a}=True' if a in SWITCHES else a for a in sys.argv[1:]]
    config = load_config(argv, extra_keys=BENCH_KEYS)
    train.check_config(config, 1)
    for key in ('bench_steps', 'bench_loader_batches'):
        if config[key] < 1:
            raise UserError(f"{key}={config[key]} must be at least 1")
    for key in ('bench_warmup', 'bench_rounds', 'bench_seconds'):
        if config[key] < 0:
            raise UserError(f"{key}={config[key]} must be 0 or more")
    if config['prefetch'] not in ('auto', 'thread', 'inline'):
        raise UserError(f"prefetch={config['prefetch']!r} must be 'auto', 'thread' or 'inline'")

    device = config['device']
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    if device == 'cuda':
        device = 'cuda:0'  # torch.cuda.set_device needs an index
    cuda = device.startswith('cuda')
    device_type = 'cuda' if cuda else 'cpu'
    if cuda:
        torch.cuda.set_device(device)
    device_name = torch.cuda.get_device_name(device) if cuda else 'cpu'
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    threaded = cuda if config['prefetch'] == 'auto' else config['prefetch'] == 'thread'

    # --- data and plan, as train.py makes them ---
    generic = train.open_source('generic', config['generic_dir'])
    target = train.open_source('target', config['target_dir'])
    train.check_sources(generic, target, config)
    bs, micro_batch, accum = config['block_size'], config['batch_size'], config['gradient_accumulation_steps']
    windows = lambda source: max(0, (len(source['train']) - 1) // bs)
    plan = schedule.make_plan(config, windows(target), windows(generic))
    pool = schedule.target_pool(config['data_seed'], windows(target), plan['U']) if plan['U'] else np.zeros(0, int)
    N, S = plan['N'], plan['S']
    start = config['bench_start'] if config['bench_start'] >= 0 else (plan['stage2_start'] if plan['stage2_steps']
                                                                        else 0)
    if start >= N:
        raise UserError(f"bench_start={start} is past the plan's last step {N - 1}")

    # --- model and optimizer, as train.py makes them ---
    torch.manual_seed(config['seed'])
    raw_model = GPT(model_config_from(config, generic['meta']['vocab_size'])).to(device)
    dtype = config['dtype']
    if dtype == 'auto':
        dtype = ('bfloat16' if torch.cuda.is_bf16_supported() else 'float16') if cuda else 'float32'
    ctx = (contextlib.nullcontext() if dtype == 'float32'
           else torch.autocast(device_type=device_type, dtype=getattr(torch, dtype)))
    scaler = torch.amp.GradScaler(device_type, enabled=(dtype == 'float16'))
    optimizer = raw_model.configure_optimizers(config['weight_decay'], config['learning_rate'],
                                               (config['beta1'], config['beta2']), config['adam_eps'], device_type)
    use_compile = config['compile'] if config['compile'] != 'auto' else cuda
    model = torch.compile(raw_model) if use_compile else raw_model
    sums = torch.zeros(5, device=device, dtype=torch.float64)

    views = train.window_view(generic['train'], bs), train.window_view(target['train'], bs)

    def replay_loader():
        """train.py's loader, with its own train.StepBatches (it makes the plan's step batches 64 at a time)."""
        step_batches = train.StepBatches(plan)
        return labelled('replay_loader',
                        lambda t: train.load_step(t, step_batches, pool, *views, micro_batch, accum, 0, cuda))

    generator = torch.Generator().manual_seed(config['data_seed'])
    single = labelled('single_source_loader',
                      lambda t: single_source_batch(generic['train'], S, micro_batch, bs, cuda, generator))
    loaders = dict(replay=replay_loader(), **({'single-source': single} if config['compare'] else {}))
    pipes = {}  # per loader, kept across its windows: (prefetcher, its plan steps, next step, that step's batch)

    def timed_steps(name, n):
        """(wall, process CPU) seconds of n training steps fed by loaders[name] through train.prefetcher, as in
        train.py (threaded: the next batch is made while this step computes; inline: right before it). Each loader
        walks the plan's steps from start (cycling) in its own pipeline, so a window starts with its batch made,
        as in a long run, and the batch made during its last step is the next window's first. The loss reaches
        the host every log_interval steps, as train.py's log does."""
        if name not in pipes:
            steps = itertools.cycle(range(start, N))
            t = next(steps)
            prefetch = train.prefetcher(threaded)
            pipes[name] = (prefetch, steps, t, prefetch.submit(loaders[name], t))
        prefetch, steps, t, upcoming = pipes[name]
        upcoming.result()
        sync()
        begin, cpu_begin = time.perf_counter(), time.process_time()
        for i in range(n):
            batch, t_next = upcoming.result(), next(steps)
            upcoming = prefetch.submit(loaders[name], t_next)
            for group in optimizer.param_groups:
                group['lr'] = schedule.lr_at(plan, t)
            train.train_step(model, optimizer, scaler, ctx, batch, sums, config['grad_clip'])
            if (i + 1) % config['log_interval'] == 0:
                sums.tolist()
            t = t_next
        sync()
        elapsed = time.perf_counter() - begin, time.process_time() - cpu_begin
        pipes[name] = (prefetch, steps, t, upcoming)
        return elapsed

    n_target = sum(schedule.step_batch(plan, start)[0])
    print(f"bench: {' '.join(sys.argv[1:])}")
    print(f"load average (1 min) at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(f"model: {config['arch']}, {raw_model.get_num_params() / 1e6:.2f}M non-embedding params, "
          f"{raw_model.get_num_params(non_embedding=False) / 1e6:.2f}M total, vocab {raw_model.config.vocab_size}")
    print(f"device: {device_name if cuda else cpu_model()} ({torch.get_num_threads()} threads) | dtype {dtype} | "
          f"compile {use_compile} | loader {'in a prefetch thread' if threaded else 'inline'} | torch "
          f"{torch.__version__}")
    print(f"batch: {S} sequences x {bs} tokens = {S * bs} tokens/step (batch_size {micro_batch} x "
          f"gradient_accumulation_steps {accum}); plan steps from {start} (stage {schedule.stage_of(plan, start)}: "
          f"{n_target} target + {S - n_target} generic sequences at step {start})")
    L, H, Q = config['n_layer'], config['n_head'], config['n_embd'] // config['n_head']
    print(f"flops/token: {raw_model.estimate_flops_per_token():.4g} = 6*N + 12*L*H*Q*T with N = non-embedding "
          f"params + output head, L={L} H={H} Q={Q} T={bs}")

    for name in loaders:
        if config['bench_warmup']:
            timed_steps(name, config['bench_warmup'])
    seconds = {name: [] for name in loaders}  # (wall, CPU) per round
    per_step = lambda x: x * 1000 / config['bench_steps']
    budget_end = time.perf_counter() + config['bench_seconds']
    fixed = config['bench_rounds']
    while (len(seconds['replay']) < fixed if fixed
           else len(seconds['replay']) < 5 or time.perf_counter() < budget_end):
        r = len(seconds['replay'])
        for name in (list(loaders) if r % 2 == 0 else list(loaders)[::-1]):
            seconds[name].append(timed_steps(name, config['bench_steps']))
        if config['compare'] and 0 < fixed <= 20:
            replay_ms, single_ms = per_step(seconds['replay'][-1][0]), per_step(seconds['single-source'][-1][0])
            print(f"round {r + 1}/{fixed}: replay {replay_ms:.2f} ms/step, single-source {single_ms:.2f} ms/step, "
                  f"ratio {single_ms / replay_ms:.4f}")
    rounds = len(seconds['replay'])
    if not all(np.isfinite(sums.tolist())):
        print("warning: the loss is not finite: the timings are of a diverged model")

    for name in loaders:
        ms = per_step(statistics.median(wall for wall, _ in seconds[name]))
        tokens_per_s = S * bs * 1000 / ms
        mfu = raw_model.estimate_mfu(tokens_per_s, device_name)
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
    print(f"load average (1 min) at end: {os.getloadavg()[0]:.2f}"
          + (" (other processes slow both loaders alike: that is why they alternate)" if config['compare'] else ""))

    # the loaders alone, alternating call by call over consecutive plan steps: the host time per step's batch,
    # a mean, so that replay's index arithmetic made a chunk of steps at a time (train.StepBatches) counts in full
    alone = dict(loaders, replay=replay_loader())
    spent = dict.fromkeys(alone, 0.0)
    for i in range(config['bench_loader_batches']):
        for name, loader in alone.items():
            begin = time.perf_counter()
            loader(start + i % (N - start))
            spent[name] += time.perf_counter() - begin
    print(f"loader only (host, one step's batch, mean of {config['bench_loader_batches']} steps): "
          + ', '.join(f"{name} {v * 1000 / config['bench_loader_batches']:.3f} ms" for name, v in spent.items()))

    if config['profile']:
        activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if cuda else [])
        with torch.profiler.profile(activities=activities) as prof:
            timed_steps('replay', config['bench_steps'])
        os.makedirs(config['out_dir'], exist_ok=True)
        path = os.path.join(config['out_dir'], 'bench_trace.json')
        prof.export_chrome_trace(path)
        print(prof.key_averages().table(sort_by='self_device_time_total' if cuda else 'self_cpu_time_total',
                                        row_limit=12))
        print(f"profile: {config['bench_steps']} replay steps -> {path} (open in chrome://tracing or perfetto)")
    for prefetch, *_ in pipes.values():
        prefetch.shutdown()


if __name__ == '__main__':
    run_main(main)
