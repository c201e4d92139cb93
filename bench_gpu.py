"""
bench_gpu.py: the GPU rows of docs/benchmarks.md in one command, printed as one markdown table (make bench-gpu).

    python bench_gpu.py                  # one GPU: GPT-2 124M; the 150M Llama shape at block 4096; the
                                         # Llama-3.2-1B shape under FSDP2 (torchrun, one rank). < 10 min on an H100
    python bench_gpu.py --device=cpu     # the same three rows at toy sizes, in seconds (make test runs this)

Data: random tokens in GPT-2's 50,257-token vocabulary, written once as a generic and a target source under
--data_dir (seconds, no download, no tokenizer: a step's speed does not depend on what the tokens say). Each row
is one bench.py run (the run's real model and train_step, bf16 and torch.compile on cuda) that writes its numbers
to a JSON file (bench.py's bench_json); the table has ms/step, tokens/s, MFU, peak memory, what compiled (graphs
and graph breaks, dynamo's counters) and the attention kernel SDPA picked. Full logs: --out/<row>.log.
"""
import json
import os
import subprocess
import sys
import time

import numpy as np

from configurator import UserError, check_rule, parse_options, run_main

OPTIONS = dict(
    device='cuda',                   # 'cuda' (the real rows) or 'cpu' (toy sizes: checks the whole path)
    data_dir='data/bench_random',    # where the random-token sources are written (once)
    out='out/bench_gpu',             # each row's log and JSON
    timeout_s=300,                   # per row
)
RULES = dict(device=('cuda', 'cpu'), data_dir='an output directory', out='an output directory', timeout_s='at least 1')
VOCAB = 50257
# the rows of docs/benchmarks.md: (name, bench.py arguments, under torchrun). 65,536 tokens per step each; timed
# steps from the plan's stage 2 (both sources mixed), after 3 untimed ones (torch.compile, the allocator)
GPU_ROWS = [
    ('GPT-2 124M, block 1024', ['config/model_gpt2_124m.py', '--block_size=1024', '--batch_size=16',
                                '--gradient_accumulation_steps=4'], False),
    ('150M Llama shape, block 4096', ['config/model_llama_150m_shape.py', '--block_size=4096', '--batch_size=8',
                                      '--gradient_accumulation_steps=2'], False),
    ('Llama-3.2-1B shape, FSDP2 x 1, block 2048', ['config/model_llama32_1b_shape.py', '--parallel=fsdp',
                                                   '--block_size=2048', '--batch_size=8',
                                                   '--gradient_accumulation_steps=4'], True),
]
GPU_ARGS = ['--target_tokens=131072', '--device=cuda', '--dtype=bfloat16', '--compile=True', '--bench_steps=5',
            '--bench_warmup=3', '--bench_rounds=3']
# toy sizes on a CPU: the same rows' code paths (fsdp under torchrun), float32, eager
CPU_SHAPE = ['--n_layer=1', '--n_head=2', '--n_kv_head=0', '--n_embd=32', '--intermediate_size=64',
             '--block_size=32', '--batch_size=2', '--gradient_accumulation_steps=1']
CPU_ARGS = ['--target_tokens=128', '--device=cpu', '--dtype=float32', '--compile=False', '--bench_steps=1',
            '--bench_warmup=1', '--bench_rounds=1']
# 40 steps; the target (131,072 tokens on cuda, seen once) is 5% of the slots, so stage 2 is the last 4 steps
COMMON = ['config/demo.py', '--max_iters=40', '--target_epochs=1', '--val_tokens=65536', '--bench_loader_batches=1']


def write_random_source(path, train_tokens, val_tokens, seed, vocab=VOCAB):
    """A prepared source of uniform random ids below vocab (uint16, or uint32 above 65,536 ids), as prepare/ writes
    one: train.bin, val.bin, meta.json (last). Kept if it is there already."""
    if os.path.isfile(os.path.join(path, 'meta.json')):
        return
    os.makedirs(path, exist_ok=True)
    rng, dtype = np.random.default_rng(seed), np.uint16 if vocab <= 65536 else np.uint32
    for split, n in (('train', train_tokens), ('val', val_tokens)):
        rng.integers(0, vocab, n, dtype=dtype).tofile(os.path.join(path, f'{split}.bin'))
    meta = dict(tokenizer=f'random{vocab}', vocab_size=vocab, dtype=np.dtype(dtype).name, max_token_id=vocab - 1,
                command='bench_gpu.write_random_source (random tokens for timing)')
    with open(os.path.join(path, 'meta.json'), 'w') as f:
        json.dump(meta, f)


def fmt(value, spec, missing='-'):
    return missing if value is None else format(value, spec)


def table(rows):
    lines = ['| row | device | model | ms/step | tokens/s | MFU | peak memory | compiled (graphs, breaks) | '
             'attention kernel |', '| --- | --- | --- | --- | --- | --- | --- | --- | --- |']
    for name, r in rows:
        if r is None:
            lines.append(f'| {name} | failed: see its log | | | | | | | |')
            continue
        replay, compiled = r['replay'], r['compile']
        lines.append(
            f"| {name} | {r['device']}, {r['dtype']}, {r['parallel']} x {r['world']} | {r['params'] / 1e6:.1f}M "
            f"params | {replay['ms_per_step']:.1f} | {replay['tokens_per_s']:,.0f} | "
            f"{fmt(replay['mfu'] and 100 * replay['mfu'], '.1f', 'unknown')}{'%' if replay['mfu'] else ''} | "
            f"{r['peak_memory_gib']:.2f} GiB | "
            + (f"{compiled['graphs']}, {compiled['graph_breaks']}" if r['compiled'] else 'off')
            + f" | {r['attention']} |")
    return '\n'.join(lines)


def main(argv):
    options = parse_options(argv, OPTIONS, usage="python bench_gpu.py [--device=cuda|cpu] [--data_dir=DIR]",
                            rules=RULES, doc=__doc__)
    cpu = options['device'] == 'cpu'
    generic, target = (os.path.join(options['data_dir'], name) for name in ('generic', 'target'))
    for path in (generic, target):  # the sources' own directories, made below
        check_rule('--data_dir', path, 'an output directory')
    if not cpu:
        import torch  # here: --help and a refused option need none
        if not torch.cuda.is_available():
            raise UserError("--device='cuda' but no CUDA GPU is visible: use --device=cpu for the rows at toy sizes")
    begin = time.time()
    # enough for 40 steps of 65,536 tokens without repeating, and the target's 131,072 tokens
    write_random_source(generic, 40 * 65536 + 4097, 65537, seed=0)
    write_random_source(target, 131072 + 4097, 65537, seed=1)
    os.makedirs(options['out'], exist_ok=True)
    rows = []
    for i, (name, args, distributed) in enumerate(GPU_ROWS):
        result_path = os.path.join(options['out'], f'row{i}.json')
        if os.path.exists(result_path):
            os.remove(result_path)
        cmd = (['-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=1'] if distributed else [])
        cmd = [sys.executable, *cmd, 'bench.py', *COMMON, *args, *(CPU_SHAPE + CPU_ARGS if cpu else GPU_ARGS),
               f'--generic_dir={generic}', f'--target_dir={target}', f"--out_dir={options['out']}",
               f'--bench_json={result_path}']
        log_path = os.path.join(options['out'], f'row{i}.log')
        print(f"{name}: {' '.join(cmd[1:])}", flush=True)
        with open(log_path, 'w') as log:
            try:
                done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=options['timeout_s'])
                ok = done.returncode == 0 and os.path.exists(result_path)
            except subprocess.TimeoutExpired:
                ok = False
        if not ok:
            print(f"  failed: see {log_path}", flush=True)
        rows.append((name + (' (toy size on cpu)' if cpu else ''),
                     json.load(open(result_path)) if ok else None))
    print()
    print(table(rows))
    print(f"\n{time.time() - begin:.0f} s in all, data included; logs in {options['out']}/")
    if any(r is None for _, r in rows):
        sys.exit(1)


if __name__ == '__main__':
    run_main(main)
