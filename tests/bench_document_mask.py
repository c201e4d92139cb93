"""The CPU cost of packed examples' attention: torch SDPA forward + backward with is_causal (text windows) against
a boolean block-diagonal causal mask from model.document_positions_and_mask (chat windows), and a boolean plain
causal mask (the mask's own cost, without the blocks), one thread, rounds interleaved; then the same for a whole
tiny llama GPT's forward + backward. Not a test: numbers for the report (docs/benchmarks.md).
    OMP_NUM_THREADS=1 python tests/bench_document_mask.py [rounds]"""
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from model import GPT, GPTConfig, document_positions_and_mask  # noqa: E402

B, H, T, Q = 8, 4, 256, 32  # 8 windows of 256 tokens, 4 heads of 32; 8 examples of 32 tokens per window


def timed(cases, run, rounds):
    for kwargs in cases.values():
        run(kwargs)  # warm-up
    times = {name: [] for name in cases}
    for _ in range(rounds):
        for name, kwargs in cases.items():
            begin = time.perf_counter()
            run(kwargs)
            times[name].append(time.perf_counter() - begin)
    for name, t in times.items():
        t.sort()
        print(f"  {name:22s} median {1000 * t[len(t) // 2]:8.1f} ms   min {1000 * t[0]:8.1f} ms")


def main(rounds):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    starts = torch.zeros(B, T, dtype=torch.bool)
    starts[:, ::32] = True
    positions, mask = document_positions_and_mask(starts)
    causal = torch.ones(T, T, dtype=torch.bool).tril().expand(B, 1, T, T)
    q, k, v = (torch.randn(B, H, T, Q, requires_grad=True) for _ in range(3))
    print(f"SDPA forward + backward, (B, heads, T, head) = {(B, H, T, Q)}, {rounds} rounds:")
    timed({'is_causal': dict(is_causal=True), 'bool block-diagonal': dict(attn_mask=mask),
           'bool plain causal': dict(attn_mask=causal)},
          lambda kw: F.scaled_dot_product_attention(q, k, v, **kw).sum().backward(), rounds)
    model = GPT(GPTConfig(arch='llama', block_size=T, vocab_size=256, n_layer=2, n_head=H, n_embd=H * Q))
    x, y = torch.randint(0, 256, (2, B, T))
    print(f"llama GPT forward + backward, 2 layers x {H * Q} wide, {B} x {T} tokens, {rounds} rounds:")
    timed({'is_causal': {}, 'bool block-diagonal': dict(positions=positions, attn_mask=mask)},
          lambda kw: model(x, y, **kw)[1].mean().backward(), rounds)
    begin = time.perf_counter()
    for _ in range(20):
        document_positions_and_mask(starts)
    print(f"document_positions_and_mask({B} x {T}): {1000 * (time.perf_counter() - begin) / 20:.2f} ms")


if __name__ == '__main__':
    if sys.argv[1:] and not sys.argv[1].isdigit():
        sys.exit(__doc__)
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 15)
