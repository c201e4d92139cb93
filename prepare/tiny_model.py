"""
A tiny random Hugging Face model directory, made offline with transformers and the tokenizers package: it stands in
for a real `hf download meta-llama/Llama-3.2-1B --local-dir models/...` in the README and the tests.

    python prepare/tiny_model.py --arch llama --out models/tiny-llama
    python prepare/tiny_model.py --arch gpt2 --out models/tiny-gpt2

llama: LlamaForCausalLM, 2 layers, width 64, 4 query heads sharing 2 key/value heads (grouped-query attention) of
16, Llama 3.1's RoPE scaling (rope_type llama3), untied head (--tied for a Llama-3.2-style tied one), and a
Llama-3-style tokenizer that puts <|begin_of_text|> before each text and ends documents with <|end_of_text|>.
gpt2: GPT2LMHeadModel, 2 layers, width 64, 4 heads, gelu_new, and a GPT-2-style byte-level tokenizer with no BOS
and <|endoftext|>. Both tokenizers are byte-level BPE with 512 tokens, trained on the prose of Python's reference
documentation (pydoc_data.topics, which every Python has), plus three special tokens for chat after the trained
ones: <|start_header_id|>, <|end_header_id|> and the end-of-turn token <|eot_id|> (distinct from the end-of-sequence
token, as in Llama 3). The directory's chat_template.jinja is a small Llama-3-style template without {% generation %}
tags (CHAT_TEMPLATE: BOS, then each turn as a role header, the trimmed content and <|eot_id|>). The weights are
transformers' random init (std 0.02), or drawn again with --std.
"""
import json
import os
import shutil
import tempfile

from common import UserError, Parser, run_main

SPECIAL = {'llama': dict(bos='<|begin_of_text|>', eos='<|end_of_text|>'), 'gpt2': dict(bos=None, eos='<|endoftext|>')}
CHAT_TOKENS = ('<|start_header_id|>', '<|end_header_id|>', '<|eot_id|>')
# Llama 3's turn format (no tool calls, no date header); unknown roles are refused, as a stricter template would
CHAT_TEMPLATE = (
    "{{- bos_token }}\n"
    "{%- for message in messages %}\n"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] %}\n"
    "{{- raise_exception('Unknown role: ' + message['role']) }}\n"
    "{%- endif %}\n"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + "
    "'<|eot_id|>' }}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}\n"
    "{%- endif %}\n")


def training_texts():
    try:
        from pydoc_data.topics import topics
    except ImportError:
        raise UserError('this Python has no pydoc_data.topics to train the tiny tokenizer on') from None
    return [topics[k] for k in sorted(topics)]


def make_tokenizer(style, vocab_size=512, texts=None):
    """A byte-level BPE tokenizers.Tokenizer and its tokenizer_config.json (a dict, with the chat template under
    'chat_template', which make_model writes to chat_template.jinja), Llama-3- or GPT-2-style."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    special = SPECIAL[style]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    names = [t for t in (special['bos'], special['eos']) if t]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=names, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts or training_texts(), trainer)
    tok.add_special_tokens([AddedToken(t, special=True) for t in CHAT_TOKENS])  # after: the trained ids stay
    if special['bos']:  # Llama 3: every text starts with BOS; no EOS is added (prepare/ ends documents with it)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{special['bos']} $A", pair=f"{special['bos']} $A {special['bos']} $B",
            special_tokens=[(special['bos'], tok.token_to_id(special['bos']))])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    config = dict(tokenizer_class='PreTrainedTokenizerFast', bos_token=special['bos'] or special['eos'],
                  eos_token=special['eos'], clean_up_tokenization_spaces=False, model_max_length=256,
                  chat_template=CHAT_TEMPLATE)
    return tok, config


def make_model(arch, out, tokenizer, tokenizer_config, tied=False, std=None, seed=0, max_shard_size=None,
               **overrides):
    """Save a tiny random transformers model with this tokenizer to `out`; returns the model (eval mode)."""
    import torch
    import transformers
    eos = tokenizer.token_to_id(SPECIAL[arch]['eos'])
    bos = tokenizer.token_to_id(SPECIAL[arch]['bos']) if SPECIAL[arch]['bos'] else eos
    vocab_size = tokenizer.get_vocab_size()
    torch.manual_seed(seed)
    if arch == 'llama':
        config = transformers.LlamaConfig(**{**dict(
            vocab_size=vocab_size, hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, max_position_embeddings=256, rms_norm_eps=1e-5,
            rope_parameters=dict(rope_type='llama3', rope_theta=10000.0, factor=8.0, low_freq_factor=1.0,
                                 high_freq_factor=4.0, original_max_position_embeddings=64),
            tie_word_embeddings=tied, bos_token_id=bos, eos_token_id=eos), **overrides})
        model = transformers.LlamaForCausalLM(config)
    elif arch == 'gpt2':
        config = transformers.GPT2Config(**{**dict(
            vocab_size=vocab_size, n_positions=256, n_embd=64, n_layer=2, n_head=4, activation_function='gelu_new',
            tie_word_embeddings=True, bos_token_id=bos, eos_token_id=eos), **overrides})
        model = transformers.GPT2LMHeadModel(config)
    else:
        raise UserError(f"--arch must be llama or gpt2, got {arch!r}")
    if std is not None:  # larger than the 0.02 init, so that a wrong detail shows in the logits
        with torch.no_grad():
            for name, p in model.named_parameters():
                is_norm_scale = name.endswith('.weight') and ('norm' in name or '.ln_' in name)
                p.copy_(1 + std * torch.randn_like(p) if is_norm_scale else std * torch.randn_like(p))
    model.eval()
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out, **({'max_shard_size': max_shard_size} if max_shard_size else {}))
    save_tokenizer(out, tokenizer, tokenizer_config)
    return model


def save_tokenizer(out, tokenizer, tokenizer_config):
    """tokenizer.json, tokenizer_config.json and (from the config's chat_template) chat_template.jinja, where
    transformers' save_pretrained puts a single template today."""
    os.makedirs(out, exist_ok=True)
    tokenizer.save(os.path.join(out, 'tokenizer.json'))
    tokenizer_config = dict(tokenizer_config)
    chat_template = tokenizer_config.pop('chat_template', None)
    if chat_template is not None:
        with open(os.path.join(out, 'chat_template.jinja'), 'w', encoding='utf-8') as f:
            f.write(chat_template)
    with open(os.path.join(out, 'tokenizer_config.json'), 'w') as f:
        json.dump(tokenizer_config, f, indent=2)


def main(argv):
    p = Parser(__doc__)
    p.add_argument('--arch', choices=['llama', 'gpt2'], default='llama')
    p.add_argument('--out', required=True, help='the model directory to write, e.g. models/tiny-llama')
    p.add_argument('--tied', action='store_true', help='llama: tie the head to the token embedding (Llama 3.2); '
                                                      "gpt2's head is always tied")
    p.add_argument('--std', type=float, default=None, rule='a positive number',
                   help='draw every matrix again with this std')
    args = p.parse_args(argv)
    if args.tied and args.arch != 'llama':
        raise UserError("--tied only applies to --arch llama: gpt2's head is always tied to its token embedding")
    if os.path.exists(args.out) and os.listdir(args.out):
        raise UserError(f'{args.out} exists and is not empty: choose a new --out')
    parent = os.path.dirname(os.path.abspath(args.out))
    tok, tok_config = make_tokenizer(args.arch)
    os.makedirs(parent, exist_ok=True)
    # built beside --out and renamed into place whole: an interrupted run leaves no model without a tokenizer
    tmp = tempfile.mkdtemp(dir=parent, prefix=f'.{os.path.basename(os.path.abspath(args.out))}.partial-')
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp's 0700 is for secrets: a model directory is not one
        make_model(args.arch, tmp, tok, tok_config, tied=args.tied, std=args.std)
        os.replace(tmp, args.out)  # over an empty --out too (rename replaces an empty directory)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp)
    print(f'{args.out}: a tiny random {"LlamaForCausalLM" if args.arch == "llama" else "GPT2LMHeadModel"} with a '
          f'{tok.get_vocab_size()}-token tokenizer and a chat template (stands in for `hf download`)')


if __name__ == '__main__':
    run_main(main)
