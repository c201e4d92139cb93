"""
runtime.py: the setup every script that builds a model shares (train.py, bench.py, sample.py): ranks and device,
precision (autocast and GradScaler), the model from a config or a checkpoint, the optimizer, torch.compile and the
DDP wrapper.
"""
import contextlib
import os
from collections import namedtuple

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from model import GPT

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


def precision(dtype, device_type):
    """(dtype name, autocast context, GradScaler). 'auto': bfloat16 on GPUs that have it, else float16 (with loss
    scaling); float32 on the CPU."""
    if dtype == 'auto':
        dtype = ('bfloat16' if torch.cuda.is_bf16_supported() else 'float16') if device_type == 'cuda' else 'float32'
    ctx = (contextlib.nullcontext() if dtype == 'float32'
           else torch.autocast(device_type=device_type, dtype=getattr(torch, dtype)))
    return dtype, ctx, torch.amp.GradScaler(device_type, enabled=(dtype == 'float16'))


def build_model(model_config, device, seed, state_dict=None):
    """The model, initialised from `seed` (so the same config gives the same weights), then loaded from
    state_dict when given."""
    torch.manual_seed(seed)
    model = GPT(model_config).to(device)
    if state_dict is not None:
        model.load_state_dict(state_dict)
    return model


def make_optimizer(model, config, device_type):
    """AdamW with the weight-decay groups of model.configure_optimizers, at the config's peak LR (train.py sets
    each step's LR from the plan)."""
    return model.configure_optimizers(config['weight_decay'], config['learning_rate'],
                                      (config['beta1'], config['beta2']), config['adam_eps'], device_type)


def use_compile(config, device_type):
    """torch.compile: 'auto' = on GPUs only (on a CPU it compiles for minutes to save little)."""
    return config['compile'] if config['compile'] != 'auto' else device_type == 'cuda'


def compile_and_wrap(model, config, system):
    """torch.compile and, with several ranks, DDP. Returns the model the loop calls; keep the raw model for
    state_dict(), parameters and generation."""
    if use_compile(config, system.device_type):
        model = torch.compile(model)
    if system.world > 1:
        model = DDP(model, device_ids=[system.local_rank] if system.device_type == 'cuda' else None)
    return model
