import math

import pytest
import torch
import torch.nn.functional as F

from configurator import DEFAULTS
from generate import generate
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
    logits, loss = model(x, y, all_logits=True)
    assert logits.shape == (4, T, V) and loss.shape == (4,)
    no_logits, train_loss = model(x, y)  # the training forward: the loss alone, the same numbers
    assert no_logits is None and torch.equal(train_loss, loss)
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
    logits, _ = model(x, all_logits=True)
    logits2, _ = model(x2, all_logits=True)
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
    out = generate(model, prompt, max_new_tokens=T + 4, temperature=0.8, top_k=10)  # longer than block_size
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
    assert torch.equal(model(x, all_logits=True)[0], other(x, all_logits=True)[0])
    assert torch.equal(model(x, y)[1], other(x, y)[1])
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
    # attention from first principles: a causal sequence of T tokens has T*T/2 (query, key) pairs (half the
    # square, as FlashAttention counts); per pair, head and layer QK^T and AV take 2 FLOPs each per head dimension,
    # x3 for forward + backward; spread over the sequence's T tokens
    pairs = T * T / 2
    attention_per_token = L * H * 3 * (2 * Q + 2 * Q) * pairs / T
    expected = 6 * matmul_params + attention_per_token
    assert model.estimate_flops_per_token() == flops_per_token(model.config, N) == expected
    assert attention_per_token == 12 * L * H * Q * T / 2  # half of the non-causal count (PaLM's, nanoGPT's)
    padded = build('llama', padded_vocab_size=128)  # a padded head's extra rows are no model FLOPs
    assert padded.estimate_flops_per_token() == model.estimate_flops_per_token()

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
    logits, loss = model(x, y, all_logits=True)
    causal = torch.ones(T, T, dtype=torch.bool).tril().expand(4, 1, T, T)
    positions = torch.arange(T).expand(4, T)
    logits2, loss2 = model(x, y, all_logits=True, positions=positions, attn_mask=causal)
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


def old_formula(model, x, y):
    """The loss exactly as model.py computed it before the chunked head: the whole (B, T, V) logits, upcast, one
    cross entropy over all positions."""
    B, T_ = x.shape
    h = model.drop(model.wte(x) + (model.wpe(torch.arange(T_)) if model.wpe is not None else 0))
    rope = None if model.wpe is not None else (model.rope_cos[:T_], model.rope_sin[:T_])
    for block in model.blocks:
        h = block(h, rope)
    logits = model.lm_head(model.norm_f(h))
    token_loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=-1,
                                 reduction='none').view(B, T_)
    return token_loss.sum(dim=1) / (y != -1).sum(dim=1).clamp(min=1)


def loss_and_grads(model, loss_fn):
    model.zero_grad(set_to_none=True)
    loss = loss_fn()
    loss.mean().backward()
    return loss.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize('arch', ARCHS)
def test_training_loss_is_the_old_formula_bit_for_bit(arch):
    """Within one chunk (every CPU run here, the demo) the training forward computes what it always did, to the
    bit, loss and gradients: CPU float32 runs stay bit-identical."""
    model = build(arch)
    x, y = batch()
    y[1, :3] = -1
    new, new_grads = loss_and_grads(model, lambda: model(x, y)[1])
    old, old_grads = loss_and_grads(model, lambda: old_formula(model, x, y))
    assert torch.equal(new, old)
    assert all(torch.equal(a, b) for a, b in zip(new_grads, old_grads))


@pytest.mark.parametrize('arch', ARCHS)
def test_chunked_loss_equals_the_old_formula(arch, monkeypatch):
    """Chunks of 7 positions (of 64): losses and every gradient equal the whole-tensor formula to 1e-6, and no
    tensor of the whole (B*T, V) logits' size exists at any moment of the forward or backward pass."""
    import model as model_module
    from torch.utils._python_dispatch import TorchDispatchMode
    vocab = 1000  # the whole logits (64 x 1000) larger than any weight or activation
    monkeypatch.setattr(model_module, 'LOSS_CHUNK_LOGITS', 7 * vocab)
    model = build(arch, vocab_size=vocab)
    g = torch.Generator().manual_seed(3)
    x, y = (torch.randint(0, vocab, (4, T), generator=g) for _ in range(2))
    y[2, 5:] = -1
    old, old_grads = loss_and_grads(model, lambda: old_formula(model, x, y))

    class Largest(TorchDispatchMode):
        largest = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in (out if isinstance(out, (tuple, list)) else [out]):
                if isinstance(t, torch.Tensor) and t.dtype.is_floating_point:
                    Largest.largest = max(Largest.largest, t.numel())
            return out
    with Largest():
        new, new_grads = loss_and_grads(model, lambda: model(x, y)[1])
    assert torch.allclose(new, old, atol=1e-6, rtol=0)
    for (name, _), a, b in zip(model.named_parameters(), new_grads, old_grads):
        assert torch.allclose(a, b, atol=1e-6, rtol=0), name
    assert Largest.largest < 4 * T * vocab  # the largest tensor is a weight (1000 x 32) or a chunk, never the logits
    assert Largest.largest >= 7 * vocab  # (the mode did see the chunks)


@pytest.mark.parametrize('arch', ARCHS)
def test_padded_vocabulary(arch, tmp_path):
    """pad_vocab: embedding and head rounded up to 128 rows; logits, loss and samples see the data's vocabulary
    only; the loss equals an unpadded model's with the same weights; export's state is the unpadded model's."""
    from model import VOCAB_MULTIPLE, unpadded_state_dict
    config = model_config_from({**DEFAULTS, 'arch': arch, 'n_layer': L, 'n_head': H, 'n_embd': C, 'block_size': T},
                               vocab_size=V, pad_vocab=True)
    assert config.vocab_size == V and config.padded_vocab_size == VOCAB_MULTIPLE == 128
    assert model_config_from(DEFAULTS, vocab_size=256, pad_vocab=True).padded_vocab_size == 0  # a multiple already
    torch.manual_seed(0)
    padded = GPT(config)
    assert padded.wte.weight.shape[0] == padded.lm_head.weight.shape[0] == 128
    plain = GPT(tiny(arch))
    plain.load_state_dict(unpadded_state_dict(padded.state_dict(), config))  # the export's state loads unpadded
    x, y = batch()
    logits, loss = padded(x, y, all_logits=True)
    assert logits.shape == (4, T, V) and padded(x)[0].shape == (4, 1, V)
    assert torch.allclose(logits, plain(x, all_logits=True)[0], atol=1e-6)
    assert torch.allclose(padded(x, y)[1], plain(x, y)[1], atol=1e-6)
    padded.lm_head.weight.data[V:] = 1e4  # rows beyond the vocabulary can never be sampled
    assert int(generate(padded, x[:, :4], max_new_tokens=8).max()) < V
    assert padded.get_num_params() == plain.get_num_params()  # non-embedding parameters alike


def test_padded_run_resumes_and_exports_its_true_vocabulary(sources, tmp_path):
    """pad_vocab=True on data with a 32,700-token vocabulary: the checkpoint holds 32,768 rows and the true
    vocabulary; a run started from it without padding keeps its rows; export.py writes 32,700."""
    import json
    import shutil
    from safetensors.torch import load_file

    import export
    from helpers import run_train
    data = tmp_path / 'data'
    for name, path in zip(('generic', 'target'), sources):
        shutil.copytree(path, data / name)
        meta = json.loads((data / name / 'meta.json').read_text())
        (data / name / 'meta.json').write_text(json.dumps(dict(meta, vocab_size=32700)))
    out = tmp_path / 'run'
    run_train([f"--generic_dir={data / 'generic'}", f"--target_dir={data / 'target'}", f'--out_dir={out}',
               '--pad_vocab=True', '--max_iters=8', '--target_epochs=1', '--eval_interval=0', '--spike_eval_steps=0'])
    saved = torch.load(out / 'ckpt.pt', weights_only=False)
    assert saved['model']['wte.weight'].shape[0] == 32768 and saved['model_config']['vocab_size'] == 32700
    run_train([f"--generic_dir={data / 'generic'}", f"--target_dir={data / 'target'}", f'--out_dir={tmp_path / "next"}',
               f"--init_from={out / 'ckpt.pt'}", '--pad_vocab=False', '--max_iters=8', '--target_epochs=1',
               '--eval_interval=0', '--spike_eval_steps=0'])  # loads: the checkpoint's rows, not this run's setting
    export.main([str(out), f"--to={tmp_path / 'hf'}"])
    config = json.loads((tmp_path / 'hf' / 'config.json').read_text())
    weights = load_file(tmp_path / 'hf' / 'model.safetensors')
    assert config['vocab_size'] == 32700 and weights['transformer.wte.weight'].shape[0] == 32700


@pytest.mark.parametrize('dtype,recomputed', [(torch.float32, True), (torch.bfloat16, False)])
def test_chunked_loss_recomputes_the_head_only_in_float32(dtype, recomputed, monkeypatch):
    """Under bf16 autocast a chunk keeps its bf16 head output (no matmul recomputed: 2 bytes a logit, no float32
    copy); in float32 it keeps nothing and recomputes the head's matmul in the backward pass."""
    import model as model_module
    from torch.utils._python_dispatch import TorchDispatchMode
    monkeypatch.setattr(model_module, 'LOSS_CHUNK_LOGITS', 16 * V)  # 4 chunks of 16 positions
    model = build('llama')
    x, y = batch()

    class Matmuls(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.head = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func == torch.ops.aten.mm.default and V in (*args[0].shape, *args[1].shape):
                self.head += 1  # a matmul with the head's V side: forward, recompute, or its gradients
            return func(*args, **(kwargs or {}))
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        _, loss = model(x, y)
    with Matmuls() as counted:
        loss.mean().backward()
    # backward per chunk: the gradients of x and of the head weight (2), + the forward's matmul when recomputed
    assert counted.head == 4 * (3 if recomputed else 2)
