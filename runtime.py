"""
runtime.py: the setup every script that builds a model shares (train.py, bench.py, sample.py): ranks and device,
precision (autocast and GradScaler), the model from a config or a checkpoint, the optimizer, torch.compile, and the
parallelism: the DDP wrapper or FSDP2 sharding (parallel='ddp' | 'fsdp').
"""
import contextlib
import os
from collections import namedtuple

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

import checkpoint
import hf
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
        dist.init_process_group(backend=backend)
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


def load_model(model_config, config, system, dtype, start):
    """The model a run starts with (checkpoint.Start), in its starting weights, sharded under parallel='fsdp'.
    Under FSDP2 a run that does not start from scratch is built on the meta device and sharded first, so each rank
    materialises only its part: a Hugging Face model is read tensor by tensor (one whole tensor at a time), a
    sharded checkpoint shard by shard. (From scratch the whole model is initialised on every rank, exactly as in
    one process, then sharded.) A resume or fork from a sharded checkpoint gets its weights in train.restore(),
    with the optimizer, in one read."""
    saved, fsdp = start.checkpoint or {}, config['parallel'] == 'fsdp'
    if fsdp and start.kind != 'scratch':
        model = materialize(shard(build_model(model_config, 'meta', config['seed']), dtype), system.device)
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
    return shard(model, dtype) if fsdp else model


def make_optimizer(model, config, device_type):
    """AdamW with the weight-decay groups of model.configure_optimizers, at the config's peak LR (train.py sets
    each step's LR from the plan). Sharded parameters (FSDP2's DTensors) take the foreach kernels, not fused."""
    return model.configure_optimizers(config['weight_decay'], config['learning_rate'],
                                      (config['beta1'], config['beta2']), config['adam_eps'],
                                      device_type if config['parallel'] != 'fsdp' else 'cpu')


def use_compile(config, device_type):
    """torch.compile: 'auto' = on GPUs only (on a CPU it compiles for minutes to save little)."""
    return config['compile'] if config['compile'] != 'auto' else device_type == 'cuda'


def shard(model, dtype):
    """FSDP2: every transformer block and then the root sharded over all ranks (each rank holds 1/world of every
    weight, gradient and AdamW moment; a block's weights are gathered just for its forward and backward). On GPUs a
    low dtype is the mixed-precision policy: parameters in bfloat16 for compute, gradients reduced in float32.
    Activation checkpointing (switched on in compile_and_wrap) recomputes inside each sharded block."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard  # imported when used: ~1 s
    policy = (MixedPrecisionPolicy(param_dtype=getattr(torch, dtype), reduce_dtype=torch.float32)
              if dtype != 'float32' else MixedPrecisionPolicy())
    for block in model.blocks:
        fully_shard(block, mp_policy=policy)
    fully_shard(model, mp_policy=policy)  # the embeddings, final norm and head (tied or not) as one more group
    return model


def compile_and_wrap(model, config, system):
    """torch.compile and, with several ranks under DDP, the DDP wrapper; under FSDP2 the model is sharded already
    (shard()) and is what the loop calls. Returns the model the loop calls; keep the raw model for state dicts,
    parameters and generation."""
    model.activation_checkpointing = config['activation_checkpointing']
    if use_compile(config, system.device_type):
        model = torch.compile(model)
    if config['parallel'] == 'ddp' and system.world > 1:
        model = DDP(model, device_ids=[system.local_rank] if system.device_type == 'cuda' else None)
    return model
