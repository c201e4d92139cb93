"""
runtime.py: the setup every script that builds a model shares (train.py, bench.py, sample.py): ranks and device,
precision (autocast and GradScaler), the model from a config or a checkpoint, the optimizer (and what a resume
restores besides the weights), activation checkpointing and torch.compile, and the parallelism: the DDP wrapper or
FSDP2 sharding (parallel='ddp' | 'fsdp').

The order is torchtitan's: activation checkpointing inside each block, then torch.compile of each block (and of the
head and loss), then FSDP2's sharding or the DDP wrapper. So FSDP2's hooks, which run around each block, stay out
of the compiled code and nothing breaks a graph (compiling the sharded root instead gave eager blocks: dynamo broke
its graph at FSDP2's hooks, and with activation checkpointing compiled nothing at all).
"""
import contextlib
import datetime
import functools
import os
from collections import namedtuple

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import checkpoint
import hf
from configurator import DEFAULTS
from model import GPT, rotary_tables

# rank, local_rank, world: from torchrun's environment (0, 0, 1 in a single process); device: 'cpu' or 'cuda:i'
System = namedtuple('System', 'rank local_rank world device device_type device_name')


def pick_device(device, local_rank=0):
    """'auto' -> this rank's GPU if there is one, else the CPU; 'cuda' -> this rank's GPU."""
    if device == 'auto':
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
    return f'cuda:{local_rank}' if device == 'cuda' else device


def init_system(config):
    """Ranks come only from torchrun's environment; the process group is set up when there is more than one
    process (DDP)."""
    distributed = int(os.environ.get('RANK', -1)) != -1
    rank, local_rank, world = ((int(os.environ['RANK']), int(os.environ['LOCAL_RANK']),
                                int(os.environ['WORLD_SIZE'])) if distributed else (0, 0, 1))
    device = pick_device(config['device'], local_rank)
    device_type = 'cuda' if device.startswith('cuda') else 'cpu'
    if distributed:
        backend = config['backend'] if config['backend'] != 'auto' else ('nccl' if device_type == 'cuda' else 'gloo')
        # our timeout, not NCCL's 10 minutes: rank 0 renames a sharded 8B checkpoint while the others wait (eval.py
        # passes no run config: the default)
        seconds = config.get('dist_timeout_s', DEFAULTS['dist_timeout_s'])
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=seconds))
    if device_type == 'cuda':
        torch.cuda.set_device(device)
    device_name = torch.cuda.get_device_name(device) if device_type == 'cuda' else 'cpu'
    return System(rank, local_rank, world, device, device_type, device_name)


DTYPES = ('auto', 'float32', 'bfloat16', 'float16')  # the `dtype` settings precision() takes


def precision(dtype, device_type, parallel='ddp'):
    """(dtype name, autocast context, GradScaler). 'auto': bfloat16 on GPUs that have it, else float16 (with loss
    scaling); float32 on the CPU. Under FSDP2 a low precision is its mixed-precision policy (shard()), not autocast."""
    if dtype == 'auto':
        dtype = ('bfloat16' if torch.cuda.is_bf16_supported() else 'float16') if device_type == 'cuda' else 'float32'
    ctx = (contextlib.nullcontext() if dtype == 'float32' or parallel == 'fsdp'
           else torch.autocast(device_type=device_type, dtype=getattr(torch, dtype)))
    return dtype, ctx, torch.amp.GradScaler(device_type, enabled=(dtype == 'float16'))


def pad_vocab(config, device_type):
    """Whether a model built from scratch pads its vocabulary (model.VOCAB_MULTIPLE): 'auto' = on GPUs, where
    aligned matmuls pay; on a CPU the extra rows only cost."""
    return config['pad_vocab'] if config['pad_vocab'] != 'auto' else device_type == 'cuda'


def build_model(model_config, device, seed, state_dict=None):
    """The model, initialised from `seed` (so the same config gives the same weights), then loaded from
    state_dict when given. device='meta': shapes only, no memory (fill it after sharding: materialize())."""
    torch.manual_seed(seed)
    if device == 'meta':
        with torch.device('meta'):  # built there: .to('meta') would untie a tied head from its embedding
            return GPT(model_config)
    model = GPT(model_config).to(device)
    if state_dict is not None:
        model.load_state_dict(state_dict)
    return model


def materialize(model, device):
    """A model built on the meta device (and sharded): allocate its (local) weights on `device`, uninitialised,
    and recompute its buffers (the rotary tables), which are not in any state dict."""
    model.to_empty(device=device)
    if model.config.arch == 'llama':
        cos, sin = rotary_tables(model.config)
        model.rope_cos.copy_(cos)
        model.rope_sin.copy_(sin)
    return model


CHECKPOINTING = ('none', 'full', 'selective')  # activation_checkpointing's settings


def checkpointing_mode(value):
    """activation_checkpointing as one of CHECKPOINTING; the older True / False read as 'full' / 'none'."""
    return {True: 'full', False: 'none'}.get(value, value) if isinstance(value, bool) else value


def selective_context():
    """torchtitan's per-op policy for 'selective' checkpointing, as a context_fn for torch.utils.checkpoint: the
    backward pass keeps the outputs of attention and of every other matmul (the expensive ops) and recomputes the
    rest (norms, activations, rotary, every second matmul). Memory and compute: docs/benchmarks.md "8B memory"."""
    from torch.utils.checkpoint import CheckpointPolicy, create_selective_checkpoint_contexts
    aten = torch.ops.aten
    attention = {getattr(aten, name).default for name in (
        '_scaled_dot_product_flash_attention', '_scaled_dot_product_efficient_attention',
        '_scaled_dot_product_cudnn_attention', '_scaled_dot_product_flash_attention_for_cpu') if hasattr(aten, name)}
    matmuls = {'forward': 0, 'recompute': 0}  # per checkpointed call: the recompute counts as its forward did

    def policy(ctx, op, *args, **kwargs):
        if op == aten.mm.default:
            key = 'recompute' if ctx.is_recompute else 'forward'
            matmuls[key] += 1
            keep = matmuls[key] % 2 == 1
        else:
            keep = op in attention
        return CheckpointPolicy.MUST_SAVE if keep else CheckpointPolicy.PREFER_RECOMPUTE
    return create_selective_checkpoint_contexts(policy)


def checkpointed(forward, mode):
    """forward with its activations recomputed in the backward pass ('full': every one; 'selective': the policy
    above); unchanged where no gradient is taken (evals, generation)."""
    if mode == 'none':
        return forward
    context = {'context_fn': selective_context} if mode == 'selective' else {}

    @functools.wraps(forward)
    def run(*args, **kwargs):
        if not torch.is_grad_enabled():
            return forward(*args, **kwargs)
        return torch.utils.checkpoint.checkpoint(forward, *args, use_reentrant=False, **context, **kwargs)
    return run


def prepare_blocks(model, config, device_type, backend='inductor'):
    """Activation checkpointing inside each block and torch.compile of each block's forward (and of the head and
    loss, model.head_loss), before shard() and the DDP wrapper. Module hooks (FSDP2's) run outside the compiled
    forward, and the state_dict keys stay the model's own (no _orig_mod prefix). The blocks are alike, so they
    share one compiled graph (compile_counts()). The embedding stays eager: a lookup and an add, nothing to fuse.
    backend: torch.compile's (tests count graphs with their own)."""
    compiled = use_compile(config, device_type)
    for block in model.blocks:
        forward = checkpointed(block.forward, checkpointing_mode(config['activation_checkpointing']))
        block.forward = torch.compile(forward, backend=backend, fullgraph=True) if compiled else forward
    if compiled:
        model.head_loss = torch.compile(model.head_loss, backend=backend, fullgraph=True)
    return model


def compile_counts():
    """What torch.compile compiled in this process, as dynamo's counters report it: graphs (unique graphs
    compiled) and graph breaks (0 when nothing is compiled)."""
    from torch._dynamo.utils import counters
    return dict(graphs=counters['stats']['unique_graphs'], graph_breaks=sum(counters['graph_break'].values()))


def load_model(model_config, config, system, dtype, start):
    """The model a run starts with (checkpoint.Start), in its starting weights, sharded under parallel='fsdp'.
    Under FSDP2 a run that does not start from scratch is built on the meta device and sharded first, so each rank
    materialises only its part: a Hugging Face model is read tensor by tensor (one whole tensor at a time), a
    sharded checkpoint shard by shard. (From scratch the whole model is initialised on every rank, exactly as in
    one process, then sharded.) A resume or fork from a sharded checkpoint gets its weights in restore(), with
    the optimizer, in one read."""
    saved, fsdp = start.checkpoint or {}, config['parallel'] == 'fsdp'
    if fsdp and start.kind != 'scratch':
        model = prepare_blocks(build_model(model_config, 'meta', config['seed']), config, system.device_type)
        model = materialize(shard(model, dtype), system.device)
        if start.kind == 'hf':
            hf.load_into(model, start.path, model_config)
        elif 'model' in saved:
            checkpoint.load_full_weights(model, saved['model'])
        elif start.kind == 'weights':
            checkpoint.load_sharded(start.path, model)
        return model
    model = build_model(model_config, system.device, config['seed'],
                        hf.load_weights(start.path, model_config) if start.kind == 'hf' else saved.get('model'))
    if start.kind == 'weights' and 'sharded' in saved:
        checkpoint.load_sharded(start.path, model)
    prepare_blocks(model, config, system.device_type)
    return shard(model, dtype) if fsdp else model


def make_optimizer(model, config, device_type):
    """AdamW with the weight-decay groups of model.configure_optimizers, at the config's peak LR (train.py sets
    each step's LR from the plan). On cuda torch's fused kernel under both parallels: plain tensors under ddp, and
    FSDP2's sharded DTensors under fsdp (torch's DTensor runs the fused AdamW op shard by shard, with no full-size
    temporaries, where the foreach path allocated them). On CPU torch's default per-tensor loop, as before, so that
    CPU runs stay bit-identical."""
    return model.configure_optimizers(config['weight_decay'], config['learning_rate'],
                                      (config['beta1'], config['beta2']), config['adam_eps'], device_type)


def use_compile(config, device_type):
    """torch.compile: 'auto' = on GPUs only (on a CPU it compiles for minutes to save little)."""
    return config['compile'] if config['compile'] != 'auto' else device_type == 'cuda'


def shard(model, dtype):
    """FSDP2: every transformer block and then the root sharded over all ranks (each rank holds 1/world of every
    weight, gradient and AdamW moment; a block's weights are gathered just for its forward and backward). On GPUs a
    low dtype is the mixed-precision policy: parameters in bfloat16 for compute, gradients reduced in float32.
    Checkpointing and compile are set up on the blocks before (prepare_blocks), inside each sharded block."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard  # imported when used: ~1 s
    policy = (MixedPrecisionPolicy(param_dtype=getattr(torch, dtype), reduce_dtype=torch.float32)
              if dtype != 'float32' else MixedPrecisionPolicy())
    for block in model.blocks:
        fully_shard(block, mp_policy=policy)
    fully_shard(model, mp_policy=policy)  # the embeddings, final norm and head (tied or not) as one more group
    return model


def restore(run):
    """What a resume or fork (run: train.py's Run) continues from its checkpoint besides the weights, which a
    sharded checkpoint brings here too: optimizer moments, loss scale, RNG states, and the log window open at the
    checkpoint (kept reduced, so rank 0 alone holds it). Returns the step of the last train record."""
    saved = run.start.checkpoint
    if 'sharded' in saved:
        checkpoint.load_sharded(saved['sharded'], run.raw_model, run.optimizer)
    else:
        run.optimizer.load_state_dict(saved['optimizer'])
    run.scaler.load_state_dict(saved['scaler'])
    torch.set_rng_state(saved['rng_cpu'])
    if run.system.device_type == 'cuda' and 'rng_cuda' in saved:
        torch.cuda.set_rng_state(saved['rng_cuda'])
    if run.system.rank == 0:
        run.window.sums.copy_(saved['log_sums'])
    return saved['last_log_step']


def wrap_ddp(model, config, system):
    """With several ranks under DDP, the DDP wrapper (the blocks are compiled already: prepare_blocks); under FSDP2
    the model is sharded already (shard()) and is what the loop calls. Returns the model the loop calls; keep the raw
    model for state dicts, parameters and generation."""
    if config['parallel'] == 'ddp' and system.world > 1:
        model = DDP(model, device_ids=[system.local_rank] if system.device_type == 'cuda' else None)
    return model
