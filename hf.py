"""
hf.py: Hugging Face model directories in (export.py writes them). No transformers needed: config.json is read as
JSON, weights with the `safetensors` package, tokenizers with the `tokenizers` package (tokenizer.py).

In (train.py, init_from=DIR; eval.py, bench.py through runtime.py):
    open_model_dir(path)              config.json + the model's tokenizer, checked: the run's `hf_source`
    model_config(hf_source, block_size, dropout)
                                      -> GPTConfig, from config.json (transformers 4.x or 5.x layout)
    check_weights(path, model_config) every tensor there, with its shape, from the safetensors headers alone
    iter_weights / load_weights       our state_dict names -> tensors, read one tensor at a time
    check_data_tokenizer(...)         data prepared in the model's tokenizer, or one line naming both
    hf_names, qkv_rows                our tensor names <-> Hugging Face's, both ways (export.py writes with them)

Supported: GPT2LMHeadModel (Conv1D weights stored [in, out]; gelu_new; with or without the `transformer.` prefix;
the saved attention-mask buffers are ignored) and LlamaForCausalLM (Llama 2, 3, 3.1, 3.2: grouped-query attention,
head_dim, rope_theta, llama3 RoPE scaling, tied or untied head). Our layout: one qkv matrix with rows [q | k | v]
(Llama's q_proj, k_proj, v_proj stacked; they are already in the rotate-half order model.py uses), Llama's
up_proj = our mlp.fc, gate_proj = mlp.gate, down_proj = mlp.proj.
"""
import contextlib
import dataclasses
import json
import math
import os
import re

import torch
from safetensors import safe_open

from configurator import UserError
from model import GPT, GPTConfig
from tokenizer import model_tokenizer, name_tokenizer, read_json_file, same_tokenizer

ARCHITECTURES = {'GPT2LMHeadModel': 'gpt2', 'LlamaForCausalLM': 'llama'}
GELUS = {'gelu': 'gelu', 'gelu_new': 'gelu_new', 'gelu_pytorch_tanh': 'gelu_new'}  # HF name -> model.py's
# tensors a checkpoint may hold that are no weights: GPT-2's causal-mask buffers, old Llama rotary tables
IGNORED = re.compile(r'(transformer\.)?h\.\d+\.attn\.(bias|masked_bias)|model\.layers\.\d+\.self_attn\.rotary_emb\.'
                     r'inv_freq')
REQUIRED = object()  # model_config: a key of the model's shape, which config.json must give


# ---------------------------------------------------------------------------------------------------------------
# config.json -> GPTConfig
# ---------------------------------------------------------------------------------------------------------------

def check_not_hub_id(key, value):
    """init_from='meta-llama/Llama-3.1-8B' that is no local path: say how to download it (we never do)."""
    if not os.path.exists(value) and re.fullmatch(r"[\w.-]+/[\w.-]+", value):
        local = os.path.join('models', value.split('/')[1])
        raise UserError(f"{key}={value!r} does not exist here; if it is a Hugging Face Hub id, download it first "
                        f"(nothing is downloaded here): run `hf download {value} --local-dir {local}`, then "
                        f"{key}={local}")


def open_model_dir(path):
    """A model directory as this run's hf_source: {'dir', 'config': config.json as a dict, 'tokenizer': its
    tokenizer as meta.json keys}. UserError when config.json is missing or names an unsupported architecture."""
    file = os.path.join(path, 'config.json')
    if not os.path.isfile(file):
        raise UserError(f"{path} has no config.json: init_from takes a Hugging Face model directory (config.json "
                        f"and model.safetensors), one of our checkpoints, or a run directory with ckpt.pt")
    config = read_json_file(file)  # a JSON object, or one error line
    architecture_of(config, file)
    return dict(dir=os.path.abspath(path), config=config, tokenizer=model_tokenizer(path))


def architecture_of(config, where):
    names = config.get('architectures') or []
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise UserError(f"{where}: architectures={names!r} must be a list of class names, e.g. "
                        f"[\"LlamaForCausalLM\"]")
    name = names[0] if names else {'gpt2': 'GPT2LMHeadModel', 'llama': 'LlamaForCausalLM'}.get(config.get('model_type'))
    if name not in ARCHITECTURES:
        raise UserError(f"{where}: architecture {names[0] if names else config.get('model_type')!r} is not "
                        f"supported (supported: {', '.join(ARCHITECTURES)})")
    return name


def model_config(hf_source, block_size, dropout=0.0):
    """The GPTConfig of a Hugging Face config.json, for a run of block_size tokens per sequence (rotary tables
    cover only those; GPT-2 keeps its whole position table). Defaults are transformers' own for a missing key, but
    the keys of the model's shape (REQUIRED: a default there is only a shape mismatch later) must be given. Both
    config layouts: 4.x (rope_theta + rope_scaling) and 5.x (rope_parameters). Every field read is checked here,
    type and range, so that a bad one is one line naming config.json and it, not a crash or a nan loss later."""
    config, where = hf_source['config'], os.path.join(hf_source['dir'], 'config.json')
    architecture = architecture_of(config, where)

    def get(key, default, kind=int, fields=config, least=1):
        """fields[key] (default when missing or null) of its type; a given number at least `least` (floats: more
        than 0, finite: an epsilon, a RoPE base or factor)."""
        value, name = fields.get(key), key if fields is config else f"{rope_key}['{key}']"
        if value is None:
            if default is REQUIRED:
                raise UserError(f"{where}: {name} is missing (the model's {'shape' if fields is config else 'RoPE'} "
                                f"needs it): take the model's own config.json")
            return default
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise UserError(f"{where}: {name}={value!r} must be {kind.__name__}")
        if kind is int and value < least:
            raise UserError(f"{where}: {name}={value!r} must be at least {least}")
        if kind is float and not 0 < value < math.inf:
            raise UserError(f"{where}: {name}={value!r} must be a positive finite number")
        return value

    def unsupported(key, value, supported):
        raise UserError(f"{where}: {key}={value!r} is not supported here (supported: {supported})")

    if architecture == 'GPT2LMHeadModel':
        activation = get('activation_function', 'gelu_new', str)
        if activation not in GELUS:
            unsupported('activation_function', activation, ', '.join(GELUS))
        for key, wanted in (('scale_attn_weights', True), ('scale_attn_by_inverse_layer_idx', False),
                            ('add_cross_attention', False)):
            if get(key, wanted, bool) != wanted:
                unsupported(key, not wanted, wanted)
        positions, positions_key = get('n_positions', get('n_ctx', 1024)), 'n_positions'
        shape = dict(arch='gpt2', n_layer=get('n_layer', REQUIRED), n_head=get('n_head', REQUIRED),
                     n_embd=get('n_embd', REQUIRED), intermediate_size=get('n_inner', 0), bias=True,
                     norm_eps=get('layer_norm_epsilon', 1e-5, float), n_positions=positions,
                     activation=GELUS[activation], tie_embeddings=get('tie_word_embeddings', True, bool),
                     vocab_size=get('vocab_size', REQUIRED))
    else:
        if get('hidden_act', 'silu', str) != 'silu':
            unsupported('hidden_act', config['hidden_act'], 'silu')
        for key in ('attention_bias', 'mlp_bias'):
            if get(key, False, bool):
                unsupported(key, True, False)
        # 4.x's name first, as 5.x reads it
        rope_key = next((k for k in ('rope_scaling', 'rope_parameters') if config.get(k)), 'rope_scaling')
        rope = config.get(rope_key) or {}
        if not isinstance(rope, dict):
            raise UserError(f"{where}: {rope_key}={rope!r} must be a dict (e.g. {{'rope_type': 'llama3', "
                            f"'factor': 8.0, ...}}) or null")
        rope_type = get('rope_type', get('type', 'default', str, rope), str, rope)
        if rope_type not in ('default', 'llama3'):
            unsupported('rope_type', rope_type, 'default, llama3')
        if rope.get('partial_rotary_factor', 1.0) != 1.0:
            unsupported('partial_rotary_factor', rope['partial_rotary_factor'], 1.0)
        positions, positions_key = get('max_position_embeddings', 2048), 'max_position_embeddings'
        scaling = None
        if rope_type == 'llama3':
            scaling = dict(rope_type='llama3', **{k: get(k, REQUIRED, float, rope) for k in (
                'factor', 'low_freq_factor', 'high_freq_factor')},
                original_max_position_embeddings=get('original_max_position_embeddings', positions, int, rope))
            if scaling['low_freq_factor'] >= scaling['high_freq_factor']:  # the blend divides by their difference
                raise UserError(f"{where}: {rope_key}['low_freq_factor']={scaling['low_freq_factor']} must be less "
                                f"than {rope_key}['high_freq_factor']={scaling['high_freq_factor']}")
        n_head = get('num_attention_heads', REQUIRED)
        shape = dict(arch='llama', n_layer=get('num_hidden_layers', REQUIRED), n_head=n_head,
                     n_embd=get('hidden_size', REQUIRED), n_kv_head=get('num_key_value_heads', n_head),
                     head_dim=get('head_dim', 0), intermediate_size=get('intermediate_size', REQUIRED),
                     norm_eps=get('rms_norm_eps', 1e-6, float),
                     rope_theta=get('rope_theta', get('rope_theta', 10000.0, float), float, rope),
                     rope_scaling=scaling, tie_embeddings=get('tie_word_embeddings', False, bool),
                     vocab_size=get('vocab_size', REQUIRED))
    if block_size > positions:
        raise UserError(f"block_size={block_size} is longer than the model's context: {where} has "
                        f"{positions_key}={positions}")
    try:
        return GPTConfig(block_size=block_size, dropout=dropout, **shape)
    except ValueError as e:  # inconsistent numbers, e.g. heads that do not divide the width
        raise UserError(f"{where}: {e}") from None


def describe(model_config):
    """One line: the shape a run loaded (printed at its start; summary.json has all fields)."""
    c = model_config
    heads = f"{c.n_head} heads" + (f" ({c.kv_heads} key/value)" if c.kv_heads != c.n_head else '')
    extra = [f"rope_theta {c.rope_theta:g}" + (", llama3 scaling" if c.rope_scaling else '')] \
        if c.arch == 'llama' else [c.activation]
    return (f"{c.arch}: {c.n_layer} layers, width {c.n_embd}, {heads} of {c.head_size}, MLP {c.mlp_hidden}, "
            f"vocab {c.vocab_size}, {'tied' if c.tied else 'untied'} head, " + ', '.join(extra))


# ---------------------------------------------------------------------------------------------------------------
# Weights: our names <-> Hugging Face names
# ---------------------------------------------------------------------------------------------------------------

GPT2_MODULES = {'norm1': 'ln_1', 'norm2': 'ln_2', 'attn.qkv': 'attn.c_attn', 'attn.proj': 'attn.c_proj',
                'mlp.fc': 'mlp.c_fc', 'mlp.proj': 'mlp.c_proj'}
LLAMA_MODULES = {'norm1': 'input_layernorm', 'norm2': 'post_attention_layernorm', 'attn.proj': 'self_attn.o_proj',
                 'mlp.gate': 'mlp.gate_proj', 'mlp.fc': 'mlp.up_proj', 'mlp.proj': 'mlp.down_proj'}


def hf_names(config, name, prefix=''):
    """(Hugging Face tensor names, how) one of our state_dict tensors is made of. how: 'copy'; 'transpose' (GPT-2's
    Conv1D stores [in, out]); 'stack' (our qkv = Llama's q_proj, k_proj, v_proj stacked by rows). prefix: GPT-2's
    'transformer.' or ''. A tied head is the token embedding."""
    if name == 'lm_head.weight' and config.tied:
        name = 'wte.weight'
    module, kind = name.rsplit('.', 1)
    layer = re.fullmatch(r'blocks\.(\d+)\.(.+)', module)
    if config.arch == 'gpt2':
        if layer:
            hf = f"{prefix}h.{layer[1]}.{GPT2_MODULES[layer[2]]}.{kind}"
            return [hf], 'transpose' if kind == 'weight' and not layer[2].startswith('norm') else 'copy'
        return [{'lm_head': 'lm_head'}.get(module, prefix + {'norm_f': 'ln_f'}.get(module, module)) + f'.{kind}'], \
            'copy'
    if layer:
        base = f"model.layers.{layer[1]}."
        if layer[2] == 'attn.qkv':
            return [f"{base}self_attn.{p}_proj.{kind}" for p in 'qkv'], 'stack'
        return [f"{base}{LLAMA_MODULES[layer[2]]}.{kind}"], 'copy'
    return [{'wte': 'model.embed_tokens', 'norm_f': 'model.norm', 'lm_head': 'lm_head'}[module] + f'.{kind}'], 'copy'


def our_shapes(config):
    """Our state_dict's names and shapes, from a model built on the meta device (no memory, no RNG)."""
    with torch.device('meta'):
        return {k: tuple(v.shape) for k, v in GPT(config).state_dict().items()}


def qkv_rows(config):
    """Row counts of q, k, v in our qkv tensor."""
    Q = config.head_size
    return [config.n_head * Q, config.kv_heads * Q, config.kv_heads * Q]


def weight_files(path):
    """{Hugging Face tensor name: safetensors file} of a model directory: model.safetensors, or the shards that
    model.safetensors.index.json lists (each one checked to be there)."""
    single, index = os.path.join(path, 'model.safetensors'), os.path.join(path, 'model.safetensors.index.json')
    if os.path.isfile(single):
        return {name: single for name in read_header(single)}
    if not os.path.isfile(index):
        others = [f for f in ('pytorch_model.bin', 'model.pt') if os.path.exists(os.path.join(path, f))]
        raise UserError(f"{path} has no model.safetensors or model.safetensors.index.json"
                        + (f" (only {others[0]}, which is not read here: save the model with safetensors)"
                           if others else ''))
    try:
        with open(index) as f:
            weight_map = json.load(f)['weight_map']
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{index} is not a safetensors index (a JSON object with a weight_map): "
                        f"{type(e).__name__}: {e}") from None
    for shard in sorted(set(weight_map.values())):
        if not os.path.isfile(os.path.join(path, shard)):
            raise UserError(f"{path}: shard {shard} is missing (model.safetensors.index.json lists it): download "
                            f"the model again")
    return {name: os.path.join(path, shard) for name, shard in weight_map.items()}


def read_header(file):
    """{name: (shape, safetensors dtype: 'F32', 'BF16', 'I64'...)} of a safetensors file, from its header alone."""
    try:
        with safe_open(file, framework='pt') as f:
            slices = {name: f.get_slice(name) for name in f.keys()}
            return {name: (tuple(s.get_shape()), s.get_dtype()) for name, s in slices.items()}
    except Exception as e:  # safetensors raises its own SafetensorError for a torn or foreign file
        raise UserError(f"{file} is not a readable safetensors file ({type(e).__name__}: {str(e)[:160]})") from None


def check_weights(path, config):
    """Before any compute: every tensor the model needs is in the directory with the shape config.json implies,
    and no tensor is left over (a leftover means config.json and the weights disagree). Reads headers only."""
    files = weight_files(path)
    header = {}
    for file in sorted(set(files.values())):
        header.update(read_header(file))
    shapes = {name: shape for name, (shape, _) in header.items()}
    prefix = gpt2_prefix(shapes)
    used = set()
    for name, shape in our_shapes(config).items():
        names, how = hf_names(config, name, prefix)
        wanted = ([(shape[::-1] if how == 'transpose' else shape)] if how != 'stack'
                  else [(rows,) + shape[1:] for rows in qkv_rows(config)])
        for hf, want in zip(names, wanted):
            if hf not in shapes:
                raise UserError(f"{path}: tensor {hf} is missing from the weights (config.json implies shape "
                                f"{list(want)})")
            if shapes[hf] != want:
                raise UserError(f"{path}: tensor {hf} in {os.path.basename(files[hf])} has shape {list(shapes[hf])}, "
                                f"but config.json implies {list(want)}")
            if not header[hf][1].startswith(('F', 'BF')):  # load_state_dict would cast integers to floats silently
                raise UserError(f"{path}: tensor {hf} in {os.path.basename(files[hf])} holds {header[hf][1]} "
                                f"values, not floating point: these are not a model's weights")
            used.add(hf)
    left = sorted(n for n in shapes if n not in used and not IGNORED.fullmatch(n)
                  and not (n == 'lm_head.weight' and config.tied))
    if left:
        raise UserError(f"{path}: {len(left)} tensor(s) that config.json does not account for, e.g. {left[0]}: "
                        f"config.json and the weights disagree")


def gpt2_prefix(names):
    """GPT2LMHeadModel saves `transformer.h.0...`; GPT2Model and the Hub's original gpt2 files save `h.0...`."""
    return 'transformer.' if any(n.startswith('transformer.') for n in names) else ''


def iter_weights(path, config):
    """(our name, tensor) for every tensor of our state_dict, read from the safetensors files one at a time, in
    their stored dtype (load_state_dict casts). A sharded loader can take each tensor, keep its shard and drop the
    rest, without ever holding the whole model. Call check_weights first: this assumes the names and shapes."""
    files = weight_files(path)
    prefix = gpt2_prefix(files)
    with contextlib.ExitStack() as stack:
        opened = {}

        def read(hf):
            if files[hf] not in opened:
                opened[files[hf]] = stack.enter_context(safe_open(files[hf], framework='pt'))
            return opened[files[hf]].get_tensor(hf)
        for name in our_shapes(config):
            names, how = hf_names(config, name, prefix)
            if how == 'stack':
                yield name, torch.cat([read(hf) for hf in names], dim=0)
            elif how == 'transpose':
                yield name, read(names[0]).t().contiguous()
            else:
                yield name, read(names[0])


def load_weights(path, config):
    """Our state_dict (names -> tensors) of a Hugging Face model directory."""
    return dict(iter_weights(path, config))


def load_into(model, path, config):
    """Fill a model sharded with FSDP2 (its parameters DTensors, already allocated) from a Hugging Face model
    directory: each tensor is read whole, one at a time, and each rank copies only its own shard of it, so no rank
    ever holds the whole model."""
    from torch.distributed.tensor import distribute_tensor  # imported when used: ~1 s
    params = dict(model.named_parameters(remove_duplicate=False))
    with torch.no_grad():
        for name, full in iter_weights(path, config):
            param = params[name]
            mine = distribute_tensor(full.to(param.device, param.dtype), param.device_mesh, param.placements,
                                     src_data_rank=None)  # no communication: every rank read the same tensor
            param.to_local().copy_(mine.to_local())


# ---------------------------------------------------------------------------------------------------------------
# The data's tokenizer against the model's (tokenizer.py tells tokenizers apart)
# ---------------------------------------------------------------------------------------------------------------

def check_data_tokenizer(hf_source, model_config, sources):
    """The data was prepared in the model's tokenizer (same fingerprint of vocabulary, merges and special tokens;
    gpt2 data fits a GPT-2 directory's tokenizer) and its ids fit the model's embedding. One line naming both."""
    model_tok = hf_source.get('tokenizer')
    if model_tok is None:
        raise UserError(f"{hf_source['dir']} has no tokenizer.json, so the data cannot be checked to be in the "
                        f"model's tokenizer: copy the model's tokenizer files there")
    for source in sources:
        meta, where = source['meta'], f"{source['name']}_dir={source['dir']}"
        if not same_tokenizer(meta, model_tok):
            raise UserError(f"{where} was prepared with tokenizer {name_tokenizer(meta)}, but the model "
                            f"{hf_source['dir']} uses {name_tokenizer(model_tok)}: prepare the data with "
                            f"--tokenizer={model_tok['tokenizer_path']}")
        if meta['vocab_size'] > model_config.vocab_size:
            raise UserError(f"{where} has vocab_size {meta['vocab_size']}, more than the model's "
                            f"{model_config.vocab_size} embeddings ({hf_source['dir']})")


def model_summary(model_config, hf_source):
    """summary.json's `model`: the shape that was trained and where it came from."""
    return dict(dataclasses.asdict(model_config), source=hf_source['dir'] if hf_source else 'scratch')
