"""
The model: one GPT class with two architectures behind `arch`.

- 'gpt2':  token + learned position embeddings, pre-LN blocks (LayerNorm), GELU MLP, output head tied to the
           token embedding.
- 'llama': no position table; rotary embeddings on q and k, RMSNorm, SwiGLU MLP, untied output head, no biases.
           The paper's "150m" shape is n_layer=6, n_embd=512, n_head=8, intermediate_size=1792 (22.8M parameters
           without embeddings).

The fields after init_std exist for Hugging Face models (hf.py reads them from a config.json): grouped-query
attention, a head size of its own, Llama 3.1's RoPE scaling, a tied or untied head, GPT-2's tanh GELU and its
1024-row position table. Their defaults are what a run config builds, unchanged.

forward(idx, targets) returns (None, the PER-SEQUENCE mean cross entropy, shape (B,)), so train.py can split the
loss by data source; the training loss is its .mean(). No logits come back from it: the cross entropy is computed
in chunks of positions (head_loss), so the whole float32 logits tensor never exists at once (at Llama 3's 128,256
tokens it would be 2 GiB per 4,096-token sequence, and its log-softmax as much again). forward(idx,
all_logits=True) returns every position's logits (per-token log-likelihoods for task evaluation), with targets the
loss too. Logits always cover the data's vocabulary only: a padded vocabulary's extra rows (pad_vocab) are cut.
"""
import inspect
import math
from dataclasses import dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint


@dataclass
class GPTConfig:
    arch: str = 'gpt2'            # 'gpt2' | 'llama'
    block_size: int = 256
    vocab_size: int = 50304       # GPT-2's 50257 padded up to a multiple of 64
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    intermediate_size: int = 0    # MLP hidden width; 0 = 4*n_embd (gpt2) or the Llama rule (llama)
    dropout: float = 0.0
    bias: bool = False            # gpt2 only: biases in linears and LayerNorms
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    init_std: float = 0.02
    n_kv_head: int = 0            # key/value heads, grouped-query attention; 0 = n_head
    head_dim: int = 0             # per-head width; 0 = n_embd // n_head
    n_positions: int = 0          # gpt2: rows of the position table (a Hugging Face GPT-2 has 1024); 0 = block_size
    tie_embeddings: bool = None   # head = token embedding; None = the arch's own rule (gpt2 tied, llama untied)
    activation: str = 'gelu'      # gpt2 MLP: 'gelu' (exact, erf) | 'gelu_new' (GPT-2's tanh approximation)
    rope_scaling: dict = None     # llama: None, or Llama 3.1's {'rope_type': 'llama3', 'factor',
                                  # 'low_freq_factor', 'high_freq_factor', 'original_max_position_embeddings'}
    padded_vocab_size: int = 0    # rows of the embedding and head when more than vocab_size (pad_vocab: a multiple
                                  # of 128, for aligned matmuls); the extra rows are never a target and are cut from
                                  # every logits tensor. 0 = vocab_size rows (every loaded model, older checkpoints)

    def __post_init__(self):
        if self.arch not in ('gpt2', 'llama'):
            raise ValueError(f"arch must be 'gpt2' or 'llama', got {self.arch!r}")
        if not self.head_dim and self.n_embd % self.n_head:
            raise ValueError(f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}")
        if self.n_head % self.kv_heads:
            raise ValueError(f"n_head={self.n_head} is not a multiple of n_kv_head={self.n_kv_head}")
        if self.arch == 'llama' and self.head_size % 2:
            raise ValueError("rotary embeddings need an even head dimension")
        if self.activation not in ('gelu', 'gelu_new'):
            raise ValueError(f"activation must be 'gelu' or 'gelu_new', got {self.activation!r}")
        if self.rope_scaling is not None and self.rope_scaling.get('rope_type') != 'llama3':
            raise ValueError(f"rope_scaling must be None or of rope_type 'llama3', got {self.rope_scaling!r}")
        if self.padded_vocab_size and self.padded_vocab_size < self.vocab_size:
            raise ValueError(f"padded_vocab_size={self.padded_vocab_size} is below vocab_size={self.vocab_size}")
        if self.arch == 'gpt2' and self.block_size > self.position_rows:
            raise ValueError(f"block_size={self.block_size} exceeds the {self.position_rows} position embeddings")

    @property
    def mlp_hidden(self):
        if self.intermediate_size:
            return self.intermediate_size
        if self.arch == 'gpt2':
            return 4 * self.n_embd
        # Llama: SwiGLU has three matrices, so 2/3 of 4*n_embd keeps the MLP's size; rounded up to 256
        return -(-(8 * self.n_embd // 3) // 256) * 256

    @property
    def use_bias(self):
        return self.bias and self.arch == 'gpt2'

    @property
    def kv_heads(self):
        return self.n_kv_head or self.n_head

    @property
    def head_size(self):
        return self.head_dim or self.n_embd // self.n_head

    @property
    def position_rows(self):
        return self.n_positions or self.block_size

    @property
    def vocab_rows(self):
        return self.padded_vocab_size or self.vocab_size

    @property
    def tied(self):
        return self.arch == 'gpt2' if self.tie_embeddings is None else self.tie_embeddings


VOCAB_MULTIPLE = 128  # pad_vocab rounds the embedding and head rows up to this (nanoGPT: 64; 128 suits bf16 tiles)


def model_config_from(config: dict, vocab_size: int, pad_vocab=False) -> GPTConfig:
    """The model's keys out of a full run config (configurator.load_config); vocab_size comes from the data. Fields
    that are no config key (the Hugging Face ones) keep their defaults. pad_vocab: embedding and head rows rounded
    up to a multiple of VOCAB_MULTIPLE (a model built from scratch; runtime.pad_vocab decides)."""
    padded = -(-vocab_size // VOCAB_MULTIPLE) * VOCAB_MULTIPLE if pad_vocab else vocab_size
    return GPTConfig(vocab_size=vocab_size, padded_vocab_size=padded if padded != vocab_size else 0,
                     **{f.name: config[f.name] for f in fields(GPTConfig)
                        if f.name not in ('vocab_size', 'padded_vocab_size') and f.name in config})


def checkpoint_model_config(checkpoint: dict) -> GPTConfig:
    """The GPTConfig a checkpoint's weights were made with. Checkpoints carry it whole ('model_config'); older ones
    are rebuilt from their run config and the weights' vocabulary."""
    if 'model_config' in checkpoint:
        return GPTConfig(**checkpoint['model_config'])
    return model_config_from(checkpoint['config'], checkpoint['model']['wte.weight'].shape[0])


def unpadded_state_dict(state, config: GPTConfig):
    """A state_dict with the embedding and head cut to the data's vocabulary (what export.py writes): a padded
    model's extra rows are never a target, so the model it describes is the same."""
    if not config.padded_vocab_size:
        return state
    cut = ('wte.weight', 'lm_head.weight')
    return {name: tensor[:config.vocab_size] if name in cut else tensor for name, tensor in state.items()}


def make_norm(config):
    if config.arch == 'llama':
        return nn.RMSNorm(config.n_embd, eps=config.norm_eps)
    return nn.LayerNorm(config.n_embd, eps=config.norm_eps, bias=config.bias)


def rotary_tables(config):
    """cos and sin of position * frequency, each (block_size, head_dim/2): only the positions a run feeds, not a
    model's whole context (131,072 for Llama 3.1)."""
    head_dim = config.head_size
    inv_freq = 1.0 / config.rope_theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    if config.rope_scaling is not None:
        inv_freq = llama3_frequencies(inv_freq, **{k: v for k, v in config.rope_scaling.items() if k != 'rope_type'})
    angles = torch.outer(torch.arange(config.block_size, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def llama3_frequencies(inv_freq, factor, low_freq_factor, high_freq_factor, original_max_position_embeddings):
    """Llama 3.1's RoPE scaling (its "llama3" rope_type), for contexts longer than it was pre-trained on. Measured by
    wavelength 2π/freq against the pre-training context L: rotations slower than L/low_freq_factor are slowed
    `factor` times more, rotations faster than L/high_freq_factor are kept (they resolve nearby tokens), and the
    band in between blends the two linearly in L/wavelength."""
    L = original_max_position_embeddings
    wavelength = 2 * math.pi / inv_freq
    blend = (L / wavelength - low_freq_factor) / (high_freq_factor - low_freq_factor)  # 0 slow edge .. 1 fast edge
    blended = (1 - blend) * inv_freq / factor + blend * inv_freq
    return torch.where(wavelength > L / low_freq_factor, inv_freq / factor,
                       torch.where(wavelength < L / high_freq_factor, inv_freq, blended))


def apply_rotary(x, cos, sin):
    """Rotate x (B, T, H, Q) pairwise by position; pairs are (i, i + Q/2) ("rotate half"). float32 math."""
    x1, x2 = x.float().chunk(2, dim=-1)
    cos, sin = cos.unsqueeze(-2), sin.unsqueeze(-2)  # broadcast over heads: (T, 1, Q/2) or per row (B, T, 1, Q/2)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).type_as(x)


def document_positions_and_mask(starts):
    """Packed examples that never see each other: starts (B, T) bool, True at each example's first token (a window's
    first token always counts as one). Returns positions (B, T) int64, restarting at 0 at every start (for the
    rotary tables and GPT-2's position table alike), and attn_mask (B, 1, T, T) bool for GPT.forward: a query
    attends to the keys at or before it in its own example (block-diagonal causal)."""
    B, T = starts.shape
    index = torch.arange(T, device=starts.device).expand(B, T)
    starts = starts.bool().clone()
    starts[:, 0] = True
    first = torch.where(starts, index, torch.zeros_like(index)).cummax(dim=1).values  # each token's example start
    example = starts.long().cumsum(dim=1)
    same = example[:, :, None] == example[:, None, :]
    causal = torch.ones(T, T, dtype=torch.bool, device=starts.device).tril()
    return index - first, (same & causal).unsqueeze(1)


class CausalSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.kv_heads, config.head_size
        self.dropout = config.dropout
        # one matrix for q (n_head heads), then k and v (n_kv_head heads each): rows [q | k | v]
        self.qkv = nn.Linear(config.n_embd, (self.n_head + 2 * self.n_kv_head) * self.head_dim, bias=config.use_bias)
        self.proj = nn.Linear(self.n_head * self.head_dim, config.n_embd, bias=config.use_bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x, rope=None, attn_mask=None, cache=None):
        B, T, _ = x.shape
        H, KV, Q = self.n_head, self.n_kv_head, self.head_dim
        q, k, v = self.qkv(x).split([H * Q, KV * Q, KV * Q], dim=-1)
        q, k, v = q.view(B, T, H, Q), k.view(B, T, KV, Q), v.view(B, T, KV, Q)
        if rope is not None:
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, heads, T, Q)
        if cache is not None:  # decoding: this layer's keys and values of the tokens before these come first
            if 'k' in cache:
                k, v = torch.cat((cache['k'], k), dim=2), torch.cat((cache['v'], v), dim=2)
            cache['k'], cache['v'] = k, v
        past = k.shape[2] - T
        if attn_mask is None and past and T > 1:  # new tokens after cached ones, no mask given: causal among them
            attn_mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(diagonal=past)
        # grouped-query attention: each k/v head serves H/KV consecutive query heads
        # attn_mask None: plain causal attention (SDPA's is_causal fast path; one new token sees every cached one);
        # else a boolean (B, 1, T, past + T) mask, True where a query may attend (packed examples, padded rows)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                           dropout_p=self.dropout if self.training else 0.0,
                                           is_causal=attn_mask is None and not past, enable_gqa=KV != H)
        return self.resid_dropout(self.proj(y.transpose(1, 2).reshape(B, T, H * Q)))


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        hidden = config.mlp_hidden
        self.fc = nn.Linear(config.n_embd, hidden, bias=config.use_bias)
        self.gate = nn.Linear(config.n_embd, hidden, bias=False) if config.arch == 'llama' else None
        self.proj = nn.Linear(hidden, config.n_embd, bias=config.use_bias)
        self.dropout = nn.Dropout(config.dropout)
        self.approximate = 'tanh' if config.activation == 'gelu_new' else 'none'  # 'none' = the exact erf GELU

    def forward(self, x):
        if self.gate is None:
            h = F.gelu(self.fc(x), approximate=self.approximate)
        else:
            h = F.silu(self.gate(x)) * self.fc(x)
        return self.dropout(self.proj(h))


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.norm1, self.attn = make_norm(config), CausalSelfAttention(config)
        self.norm2, self.mlp = make_norm(config), MLP(config)

    def forward(self, x, rope=None, attn_mask=None, cache=None):
        x = x + self.attn(self.norm1(x), rope, attn_mask, cache)
        return x + self.mlp(self.norm2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_rows, config.n_embd)
        self.wpe = nn.Embedding(config.position_rows, config.n_embd) if config.arch == 'gpt2' else None
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.norm_f = make_norm(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_rows, bias=False)
        if config.tied:
            self.lm_head.weight = self.wte.weight  # tied: one tensor, counted and decayed once
        if config.arch == 'llama':
            # recomputed from the config on construction, so kept out of the state_dict
            cos, sin = rotary_tables(config)
            self.register_buffer('rope_cos', cos, persistent=False)
            self.register_buffer('rope_sin', sin, persistent=False)

        self.apply(self._init_weights)
        # GPT-2: each block adds two projections to the residual stream, so scale them to keep its variance flat
        # with depth. Applied to llama too (its reference init is unspecified here; this is the nanoGPT choice).
        for name, p in self.named_parameters():
            if name.endswith('proj.weight'):
                nn.init.normal_(p, mean=0.0, std=config.init_std / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.init_std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx, targets=None, all_logits=False, positions=None, attn_mask=None, cache=None):
        """idx, targets: (B, T) int64. With targets: (None, loss (B,)), each sequence's mean cross entropy over its
        targets != -1, or with all_logits=True (logits (B, T, V), loss). Without targets: (logits (B, 1, V), None),
        the last position's, or with all_logits=True every position's, (logits (B, T, V), None). V = the data's
        vocabulary (config.vocab_size), also where the embedding is padded.
        positions: (B, T) int64, each token's position (None: 0..T-1 in every row); attn_mask: (B, 1, T, T) bool,
        True where a query may attend (None: causal). Both None is the fast path every text window takes.
        cache: decoding with a KV cache (generate.py), a list of one dict per block (generate.new_cache) that
        holds the keys and values of the tokens fed before; idx are the tokens after them, positions (None:
        past..past+T-1) and attn_mask (B, 1, T, past + T) cover the cached tokens too."""
        B, T = idx.shape
        past = cache[0]['k'].shape[2] if cache and 'k' in cache[0] else 0
        assert past + T <= self.config.block_size, \
            f"sequence of {past + T} tokens > block_size {self.config.block_size}"
        x = self.wte(idx)
        rope = None
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(past, past + T, device=idx.device) if positions is None else positions)
        elif positions is None:
            rope = (self.rope_cos[past:past + T], self.rope_sin[past:past + T])
        else:
            rope = (self.rope_cos[positions], self.rope_sin[positions])
        x = self.drop(x)
        # activation checkpointing and compile wrap each block's forward (runtime.py)
        for i, block in enumerate(self.blocks):
            x = block(x, rope, attn_mask, None if cache is None else cache[i])
        x = self.norm_f(x)

        if targets is None:  # generation only needs the last position
            return self.logits(x if all_logits else x[:, [-1], :]), None
        if all_logits:
            logits = self.logits(x)
            return logits, sequence_loss(token_losses(logits, targets), targets)
        return None, self.head_loss(x, targets)

    def logits(self, x):
        """The head's logits over the data's vocabulary: a padded head's extra rows cut."""
        logits = self.lm_head(x)
        return logits[..., :self.config.vocab_size] if self.config.padded_vocab_size else logits

    def head_loss(self, x, targets):
        """Head and per-sequence cross entropy of the final norm's output x (B, T, C), in chunks of
        LOSS_CHUNK_LOGITS logits, each under torch.utils.checkpoint, so the whole (B*T, V) float32 logits tensor
        and its log-softmax never exist at once. What a chunk keeps for the backward pass (keep_low_precision_logits)
        is its head output where that is in a low precision (bf16 training: 2 bytes a logit, no matmul recomputed),
        and nothing in float32 (the head's matmul recomputed, chunk by chunk). A batch within one chunk (every CPU
        test and the demo) takes the unchunked path, the same ops as before, bit for bit. Every position's loss is
        the same row-wise formula either way; chunking only reorders the sum of the head's weight gradient over
        positions (float rounding, ~1e-7). runtime.py compiles this method on GPUs."""
        B, T = targets.shape
        rows = max(1, LOSS_CHUNK_LOGITS // self.config.vocab_rows)  # positions per chunk
        if rows >= B * T:
            return sequence_loss(token_losses(self.logits(x), targets), targets)
        x, flat = x.flatten(0, 1), targets.flatten()
        recompute = torch.is_grad_enabled()
        chunks = [torch.utils.checkpoint.checkpoint(self._chunk_loss, x[i:i + rows], flat[i:i + rows],
                                                    use_reentrant=False, context_fn=keep_low_precision_logits)
                  if recompute else self._chunk_loss(x[i:i + rows], flat[i:i + rows]) for i in range(0, B * T, rows)]
        return sequence_loss(torch.cat(chunks), targets)

    def _chunk_loss(self, x, targets):
        device = x.device.type
        if not torch.is_autocast_enabled(device):
            return token_losses(self.logits(x), targets)
        # autocast's cast of the head weight, done here: autocast caches it across the forward's chunks but not in
        # the recompute, and the checkpoint must see the same ops in both
        dtype = torch.get_autocast_dtype(device)
        with torch.autocast(device, enabled=False):
            logits = F.linear(x.to(dtype), self.lm_head.weight.to(dtype))
        return token_losses(logits[..., :self.config.vocab_size] if self.config.padded_vocab_size else logits, targets)

    def get_num_params(self, non_embedding=True):
        """Parameter count, tied weights once. non_embedding=True leaves out every embedding and unembedding
        matrix (gpt2: token table = tied head, and position table; llama: token table and the untied head), the
        way the paper counts (22.8M for its "150m" model). The FLOP estimate adds the head back: see
        flops_per_token."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.wte.weight.numel()
            if self.wpe is not None:
                n -= self.wpe.weight.numel()
            if self.lm_head.weight is not self.wte.weight:
                n -= self.lm_head.weight.numel()
        return n

    def configure_optimizers(self, weight_decay, learning_rate, betas, eps, device_type):
        """AdamW with two groups: [0] decayed matrices, [1] everything else (norms, biases, ...).
        llama (the paper's rule): every matrix but the token embedding is decayed; the untied head is decayed, a
        tied one (Llama 3.2 1B/3B) is the token embedding and is not.
        gpt2 (as nanoGPT): every matrix is decayed, including the tied embedding/head and the position table."""
        exempt = self.wte.weight if self.config.arch == 'llama' else None
        params = list(self.parameters())  # tied weights appear once
        decay = [p for p in params if p.dim() >= 2 and p is not exempt]
        no_decay = [p for p in params if p.dim() < 2 or p is exempt]
        fused = device_type == 'cuda' and 'fused' in inspect.signature(torch.optim.AdamW).parameters
        return torch.optim.AdamW([{'params': decay, 'weight_decay': weight_decay},
                                  {'params': no_decay, 'weight_decay': 0.0}],
                                 lr=learning_rate, betas=betas, eps=eps, fused=fused)

    def estimate_flops_per_token(self):
        """Training FLOPs per token (forward + backward): see flops_per_token."""
        return flops_per_token(self.config, self.get_num_params(non_embedding=True))

    def estimate_mfu(self, tokens_per_second, device_name):
        """Model FLOPs utilisation of ONE device processing tokens_per_second (per device, not summed over DDP
        ranks), as a fraction of its dense bf16 peak; None where the peak is unknown (CPU, other GPUs)."""
        peak = peak_flops(device_name)
        return None if peak is None else self.estimate_flops_per_token() * tokens_per_second / peak


LOSS_CHUNK_LOGITS = 2 ** 25  # logits per chunk of the training loss: 128 MiB in float32 (GPT-2's vocabulary: 667
                             # positions per chunk, Llama 3's: 261; wide enough for full-speed matmuls)


def keep_low_precision_logits():
    """The chunked loss's checkpoint policy: keep the head matmul's output when it is in a low precision (cheap to
    keep, dear to recompute), recompute everything else (the float32 upcast, the log-softmax)."""
    from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts

    def policy(ctx, op, *args, **kwargs):
        low = op == torch.ops.aten.mm.default and args[0].dtype in (torch.bfloat16, torch.float16)
        return CheckpointPolicy.MUST_SAVE if low else CheckpointPolicy.PREFER_RECOMPUTE
    return create_selective_checkpoint_contexts(policy)


def token_losses(logits, targets):
    """Each position's cross entropy (float32, 0 where the target is -1), flat: the loss's one formula."""
    return F.cross_entropy(logits.float().flatten(0, -2), targets.flatten(), ignore_index=-1, reduction='none')


def sequence_loss(token_loss, targets):
    """Per-sequence mean of token_losses over the targets != -1 (B,)."""
    counted = (targets != -1).sum(dim=1)
    return token_loss.view(targets.shape).sum(dim=1) / counted.clamp(min=1)


def flops_per_token(config: GPTConfig, non_embedding_params: int) -> int:
    """6N + 6*L*H*Q*T: 6N for the matmuls with the weights (2 forward, 4 backward; PaLM appendix B, as nanoGPT),
    plus causal attention's QK^T and AV. Over a full context of T = block_size those are 2 matmuls x 2 FLOPs x H*Q
    per (query, key) pair, times 3 for forward + backward: 12*H*Q*T per token and layer if every query saw all T
    keys (PaLM's and nanoGPT's count); causally a query sees (T+1)/2 keys on average, so half: 6*L*H*Q*T (as
    FlashAttention and torchtitan count causal attention). N = the parameters that take part in a matmul per token:
    the non-embedding parameters plus the output head over the data's vocabulary (n_embd*vocab_size; a padded
    head's extra rows are wasted work, not counted), as nanoGPT's N includes its tied head; embedding lookups cost
    no matmul and are left out. Recomputation (activation checkpointing, the chunked loss's head) is not counted:
    MFU measures the model's FLOPs, not the hardware's."""
    L, H, T = config.n_layer, config.n_head, config.block_size
    Q = config.head_size
    N = non_embedding_params + config.n_embd * config.vocab_size
    return 6 * N + 6 * L * H * Q * T


# Dense (no sparsity) bf16 tensor-core peaks, FLOP/s. First match wins, so the specific names come first.
PEAK_BF16_FLOPS = [
    ('H100 PCIE', 756e12),
    ('H100 NVL', 835e12),
    ('H100', 989e12),   # SXM, e.g. 'NVIDIA H100 80GB HBM3'
    ('H200', 989e12),   # also GH200
    ('A100', 312e12),   # SXM and PCIe alike
]


def peak_flops(device_name: str):
    """Dense bf16 peak FLOP/s for a torch.cuda.get_device_name() string, or None when unknown (CPU included)."""
    name = ' '.join(str(device_name).upper().replace('-', ' ').replace('_', ' ').split())
    return next((peak for key, peak in PEAK_BF16_FLOPS if key in name), None)
