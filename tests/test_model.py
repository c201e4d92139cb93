import math
import os
import sys

import pytest
import torch
import torch.nn.functional as F

from configurator import DEFAULTS
from model import GPT, GPTConfig, flops_per_token, model_config_from, peak_flops

ARCHS = ['gpt2', 'llama']
V, T, C, L, H = 97, 16, 32, 2, 2


def tiny(arch, **overrides):
    return GPTConfig(**{**dict(arch=arch, block_size=T, vocab_size=V, n_layer=L, n_head=H, n_embd=C), **overrides})


def build(arch, seed=0, **overrides):
    torch.manual_seed(seed)
    return GPT(tiny(arch, **overrides))


def batch(B=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, V, (B, T), generator=g), torch.randint(0, V, (B, T), generator=g)


@pytest.mark.parametrize('arch', ARCHS)
def test_shapes_and_per_sequence_loss(arch):
    model = build(arch).eval()
    x, y = batch()
    logits, loss = model(x, y)
    assert logits.shape == (4, T, V) and loss.shape == (4,)
    assert torch.allclose(loss.mean(), F.cross_entropy(logits.flatten(0, 1), y.flatten()), atol=1e-6)
    assert abs(loss.mean().item() - math.log(V)) < 0.5  # near-uniform at init

    last, none = model(x)
    assert none is None and last.shape == (4, 1, V)
    assert torch.allclose(last[:, 0], logits[:, -1], atol=1e-5)

    y_masked = y.clone()
    y_masked[0, :5] = -1  # ignored targets leave the mean of the rest
    _, loss_masked = model(x, y_masked)
    expected = F.cross_entropy(logits[0, 5:], y[0, 5:])
    assert torch.allclose(loss_masked[0], expected, atol=1e-6)
    assert torch.allclose(loss_masked[1:], loss[1:])


@pytest.mark.parametrize('arch', ARCHS)
def test_causal(arch):
    model = build(arch).eval()
    x, _ = batch()
    x2 = x.clone()
    x2[:, 10:] = (x2[:, 10:] + 1) % V  # change the future only
    logits, _ = model(x, x)
    logits2, _ = model(x2, x2)
    assert torch.allclose(logits[:, :10], logits2[:, :10], atol=1e-5)
    assert not torch.allclose(logits[:, 10:], logits2[:, 10:], atol=1e-5)


def hand_count(arch, hidden, bias=False):
    """(all parameters, non-embedding parameters) of the tiny config, counted by hand."""
    norm = C * (2 if bias else 1)
    attn = 4 * C * C + (4 * C if bias else 0)
    mlp = (2 if arch == 'gpt2' else 3) * C * hidden + (hidden + C if bias else 0)
    non_embedding = L * (2 * norm + attn + mlp) + norm
    embedding = V * C + (T * C if arch == 'gpt2' else V * C)  # gpt2: tied head + positions; llama: untied head
    return non_embedding + embedding, non_embedding


@pytest.mark.parametrize('arch,overrides,hidden', [
    ('gpt2', {}, 4 * C), ('gpt2', dict(intermediate_size=48), 48), ('gpt2', dict(bias=True), 4 * C),
    ('llama', {}, 256), ('llama', dict(intermediate_size=48), 48), ('llama', dict(bias=True), 256),  # bias: gpt2 only
])
def test_num_params_by_hand(arch, overrides, hidden):
    model = build(arch, **overrides)
    total, non_embedding = hand_count(arch, hidden, bias=overrides.get('bias', False) and arch == 'gpt2')
    assert model.get_num_params(non_embedding=False) == total
    assert model.get_num_params() == non_embedding


def test_llama_hidden_rule():
    assert GPTConfig(arch='llama', n_embd=512, n_head=8).mlp_hidden == 1536
    assert GPTConfig(arch='llama', n_embd=4096, n_head=32).mlp_hidden == 11008  # Llama-7B
    assert GPTConfig(arch='gpt2', n_embd=512, n_head=8).mlp_hidden == 2048


@pytest.mark.parametrize('arch', ARCHS)
def test_adamw_lowers_loss(arch):
    model = build(arch)
    opt = model.configure_optimizers(weight_decay=0.1, learning_rate=1e-2, betas=(0.9, 0.95), eps=1e-8,
                                     device_type='cpu')
    x, y = batch()
    losses = []
    for _ in range(15):
        _, loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.mean().backward()
        opt.step()
        losses.append(loss.mean().item())
    assert losses[-1] < 0.6 * losses[0], losses


@pytest.mark.parametrize('arch', ARCHS)
def test_generate(arch):
    model = build(arch).eval()
    prompt = torch.randint(0, V, (2, 5))
    out = model.generate(prompt, max_new_tokens=T + 4, temperature=0.8, top_k=10)  # longer than block_size
    assert out.shape == (2, 5 + T + 4)
    assert torch.equal(out[:, :5], prompt)
    assert out.min() >= 0 and out.max() < V


@pytest.mark.parametrize('arch', ARCHS)
def test_state_dict_round_trip(arch, tmp_path):
    model = build(arch, seed=0).eval()
    path = tmp_path / 'model.pt'
    torch.save(model.state_dict(), path)
    other = build(arch, seed=1).eval()
    other.load_state_dict(torch.load(path, weights_only=True))
    x, y = batch()
    assert torch.equal(model(x, y)[0], other(x, y)[0])
    if arch == 'gpt2':
        assert other.lm_head.weight is other.wte.weight  # still tied after loading


def groups(opt):
    decay, no_decay = opt.param_groups
    assert decay['weight_decay'] == 0.1 and no_decay['weight_decay'] == 0.0
    return decay['params'], no_decay['params']


def contains(params, tensor):
    return any(p is tensor for p in params)


def test_weight_decay_groups_llama():
    model = build('llama')
    decay, no_decay = groups(model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), 1e-8, 'cpu'))
    assert contains(no_decay, model.wte.weight) and contains(decay, model.lm_head.weight)
    assert contains(no_decay, model.norm_f.weight) and contains(no_decay, model.blocks[0].norm1.weight)
    assert all(p.dim() == 2 for p in decay) and all(p.dim() == 1 for p in no_decay if p is not model.wte.weight)
    assert len(decay) + len(no_decay) == len(list(model.parameters()))


def test_weight_decay_groups_gpt2():
    model = build('gpt2', bias=True)
    decay, no_decay = groups(model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), 1e-8, 'cpu'))
    assert sum(p is model.wte.weight for p in decay + no_decay) == 1  # tied embedding/head appears once
    assert contains(decay, model.wte.weight) and contains(decay, model.wpe.weight)
    assert all(p.dim() == 2 for p in decay) and all(p.dim() == 1 for p in no_decay)
    assert sum(p.numel() for p in decay + no_decay) == model.get_num_params(non_embedding=False)


def test_paper_150m_shape():
    config = GPTConfig(arch='llama', block_size=1024, vocab_size=50304, n_layer=6, n_head=8, n_embd=512,
                       intermediate_size=1792)
    with torch.device('meta'):  # shapes only; no memory, no init time
        model = GPT(config)
    total, non_embedding = model.get_num_params(non_embedding=False), model.get_num_params()
    assert total == non_embedding + 2 * 50304 * 512
    assert 73.5e6 < total < 74.5e6
    assert round(non_embedding / 1e6, 1) == 22.8  # the paper: 22.8M without embeddings


def test_model_config_from_run_config():
    config = {**DEFAULTS, 'arch': 'llama', 'n_layer': 3, 'block_size': 64}
    mc = model_config_from(config, vocab_size=123)
    assert (mc.arch, mc.n_layer, mc.block_size, mc.vocab_size, mc.n_embd) == ('llama', 3, 64, 123, DEFAULTS['n_embd'])


def test_flops_and_peaks():
    model = build('llama')
    N, Q = model.get_num_params(), C // H
    matmul_params = N + model.config.n_embd * model.config.vocab_size  # the output head is a matmul too
    assert model.estimate_flops_per_token() == flops_per_token(model.config, N) == 6 * matmul_params + 12 * L * H * Q * T

    assert peak_flops('NVIDIA A100-SXM4-80GB') == 312e12
    assert peak_flops('NVIDIA A100 80GB PCIe') == 312e12
    assert peak_flops('NVIDIA H100 80GB HBM3') == 989e12
    assert peak_flops('H100 SXM') == 989e12
    assert peak_flops('NVIDIA H100 PCIe') == 756e12
    assert peak_flops('NVIDIA H200') == 989e12
    for unknown in ('cpu', '', 'NVIDIA GeForce RTX 4090', 'Tesla V100-SXM2-16GB'):
        assert peak_flops(unknown) is None

    assert model.estimate_mfu(1e6, 'cpu') is None
    assert model.estimate_mfu(1e6, 'NVIDIA H100 80GB HBM3') == pytest.approx(model.estimate_flops_per_token() * 1e6
                                                                            / 989e12)


@pytest.mark.parametrize('arch', ARCHS)
def test_traces_as_one_graph(arch):
    """torch.compile must see no graph breaks (nothing Python-side mutated in forward). The eager backend
    checks the tracing without needing a C++ compiler."""
    model = build(arch).eval()
    compiled = torch.compile(model, backend='eager', fullgraph=True)
    x, y = batch()
    assert torch.allclose(compiled(x, y)[1], model(x, y)[1], atol=1e-6)


@pytest.mark.parametrize('arch', ARCHS)
def test_explicit_positions_and_mask(arch):
    """positions/attn_mask given explicitly as the fast path's own (0..T-1, causal) change nothing; a row placed
    after left padding, with its own positions and a mask that hides the padding, computes what it computes alone."""
    model = build(arch).eval()
    x, y = batch()
    logits, loss = model(x, y)
    causal = torch.ones(T, T, dtype=torch.bool).tril().expand(4, 1, T, T)
    positions = torch.arange(T).expand(4, T)
    logits2, loss2 = model(x, y, positions=positions, attn_mask=causal)
    assert torch.allclose(logits, logits2, atol=1e-5) and torch.allclose(loss, loss2, atol=1e-6)

    pad = 5  # row 0's first T - pad tokens, right-aligned behind `pad` padding tokens
    shifted = torch.cat([torch.zeros(1, pad, dtype=torch.long), x[:1, :T - pad]], 1)
    row_positions = (torch.arange(T) - pad).clamp(min=0).view(1, T)
    visible = causal[:1].clone()
    visible[..., :pad] = False
    visible[..., :pad, :pad] = torch.eye(pad, dtype=torch.bool)  # padding queries see themselves (no empty rows)
    padded_logits, _ = model(shifted, positions=row_positions, attn_mask=visible, all_logits=True)
    alone, _ = model(x[:1, :T - pad], all_logits=True)
    assert torch.allclose(padded_logits[:, pad:], alone, atol=1e-5)
