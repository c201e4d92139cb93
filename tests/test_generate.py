"""Decoding with the KV cache (generate.generate_rows): rows of different lengths in one left-padded batch, with
and without the cache, each row alone, and transformers' generate(do_sample=False) on the same tiny random weights
(prepare/tiny_model.py: a Llama with grouped-query attention and Llama 3.1's RoPE scaling, a GPT-2 with learned
positions), drawn with std 0.3 so that near-ties are rare. Tokens are compared up to the first step whose top two
logits are closer than 1e-4 (where float rounding may pick either); such steps are counted, and there are none on
this data. Also: stop callbacks and EOS end rows, sampling keeps working, and past block_size the model reads the
last block_size tokens as before the cache."""
import numpy as np
import pytest
import torch

import hf
import sample
from configurator import UserError
from generate import generate, generate_rows
from model import GPT, GPTConfig

import tiny_model  # prepare/'s (conftest.py puts it on sys.path)

GAP = 1e-4
NEW = 40
PROMPTS = ["def f(x):\n    return", "The", "A class is a", "Lists are mutable sequences, typically used to store "
           "collections of homogeneous items (where the precise degree of similarity will vary by application). "
           "Lists may be constructed in several ways", "import os\nimport sys\n\nprint("]


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    """One thread: these many small forwards only wait on each other with two on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='module')
def models(tmp_path_factory):
    """{arch: (transformers model, our GPT on its weights, the prompts' token ids)}."""
    root = tmp_path_factory.mktemp('models')
    texts = tiny_model.training_texts()[:40]
    made = {}
    for arch, seed in (('llama', 5), ('gpt2', 6)):
        tok, config = tiny_model.make_tokenizer(arch, vocab_size=384, texts=texts)
        theirs = tiny_model.make_model(arch, str(root / arch), tok, config, std=0.3, seed=seed)
        path = str(root / arch)
        ours_config = hf.model_config(hf.open_model_dir(path), 256)
        ours = GPT(ours_config)
        ours.load_state_dict(hf.load_weights(path, ours_config))
        made[arch] = (theirs, ours.eval(), [tok.encode(p).ids for p in PROMPTS])
    assert made['llama'][1].config.kv_heads < made['llama'][1].config.n_head  # grouped-query attention
    assert made['llama'][1].config.rope_scaling['rope_type'] == 'llama3'
    assert max(len(p) for p in made['llama'][2]) + NEW > 64  # past the RoPE scaling's original context
    return made


def step_gaps(model, prompt, new):
    """The top-two logit gap at each generated step (one forward over prompt + new, no cache)."""
    with torch.no_grad():
        logits, _ = model(torch.tensor([prompt + new[:-1]]), all_logits=True)
    top = logits[0, len(prompt) - 1:].float().topk(2, dim=-1).values
    return (top[:, 0] - top[:, 1]).tolist()


def agreeing_prefix(a, b, gaps):
    """How many leading tokens must be equal: up to the first near-tie step (and the number of near-ties)."""
    ties = [i for i, g in enumerate(gaps) if g < GAP]
    n = ties[0] if ties else len(gaps)
    assert a[:n] == b[:n], (a, b, n)
    return len(ties)


@pytest.mark.parametrize('arch', ['llama', 'gpt2'])
def test_cache_equals_no_cache_and_transformers(models, arch):
    theirs, ours, prompts = models[arch]
    cached = generate_rows(ours, prompts, NEW)
    recomputed = generate_rows(ours, prompts, NEW, use_cache=False)
    alone = [generate_rows(ours, [p], NEW)[0] for p in prompts]
    near_ties = 0
    for i, prompt in enumerate(prompts):
        with torch.no_grad():
            hf_ids = theirs.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                                     do_sample=False, max_new_tokens=NEW, min_new_tokens=NEW, eos_token_id=None,
                                     pad_token_id=0)[0, len(prompt):].tolist()
        assert len(cached[i]) == len(hf_ids) == NEW
        gaps = step_gaps(ours, prompt, cached[i])
        for other in (recomputed[i], alone[i], hf_ids):
            near_ties += agreeing_prefix(cached[i], other, gaps)
    assert near_ties == 0  # every token of every row was compared


def test_eos_and_stop_end_rows(models):
    _, ours, prompts = models['gpt2']
    full = generate_rows(ours, prompts, NEW)
    eos = full[0][5]
    stop_at = {1: 3, 3: 7}  # rows 1 and 3 stop after that many tokens; the others run to the budget or eos
    out = generate_rows(ours, prompts, NEW, eos_ids={eos}, stop=lambda row, ids: len(ids) == stop_at.get(row, -1))
    for i, row in enumerate(full):
        end = min([stop_at.get(i, NEW)] + [j + 1 for j, t in enumerate(row) if t == eos])
        assert out[i] == row[:end], i
    assert len(out[0]) <= 6 and len(out[1]) <= 3


@pytest.mark.parametrize('arch', ['llama', 'gpt2'])
def test_past_block_size_and_sampling(arch):
    """Past block_size the cached decoding reads the last block_size tokens, as recomputing does; sampling with a
    seed gives the same tokens with and without the cache."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(arch=arch, block_size=16, vocab_size=61, n_layer=2, n_head=4, n_kv_head=2, n_embd=32,
                          init_std=0.3)).eval()
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8, 9, 10], [11]]
    assert generate_rows(model, prompts, 30) == generate_rows(model, prompts, 30, use_cache=False)
    draws = []
    for use_cache in (True, False):
        torch.manual_seed(3)
        draws.append(generate_rows(model, [[1, 2, 3]] * 3, 20, temperature=0.8, top_k=10, use_cache=use_cache))
    assert draws[0] == draws[1] and len({tuple(d) for d in draws[0]}) > 1
    out = generate(model, torch.tensor([[1, 2, 3]] * 2), 20, temperature=0.8, top_k=10)
    assert out.shape == (2, 23) and np.all(out[:, :3].numpy() == [[1, 2, 3]] * 2)


@pytest.mark.parametrize('argv', [['--temperature=inf'], ['--temperature', 'nan'], ['--temperature=-inf'],
                                  ['--temperature=1e999'], ['--temperature=-0.5']])
def test_temperature_must_be_a_finite_number(argv):
    """sample.py: inf and nan (no float literals) are read as the numbers they are and refused by the rule, not
    called 'no float', before any checkpoint is read; generate_rows refuses them too (inf would draw uniformly, nan
    fails in multinomial)."""
    with pytest.raises(UserError, match=r"^--temperature=\S+ must be 0 or more( \(a finite number\))?$"):
        sample.main([*argv, '--out_dir=no/such/run'])
    model = GPT(GPTConfig(block_size=8, vocab_size=16, n_layer=1, n_head=1, n_embd=8))
    with pytest.raises(ValueError, match='must be a finite number >= 0'):
        generate_rows(model, [[1, 2]], 2, temperature=float(argv[-1].split('=')[-1]))
