"""Hugging Face models in and out (hf.py, export.py), proved by equality with transformers on tiny random models made
here (prepare/tiny_model.py), their weights drawn again with std 0.15 so that a wrong detail shows:
- GPT-2 (gelu_new, Conv1D, with and without the `transformer.` prefix and mask buffers) and Llama (grouped-query
  attention, llama3 RoPE scaling, untied; tied with head_dim != width/heads in the transformers 4.x config layout):
  model.py's logits equal transformers' (fp32, max abs difference <= 1e-4); with RoPE scaling ignored, or exact
  GELU for gelu_new, they do not (the tolerance catches both);
- end to end through the scripts: data prepared in the model's tokenizer -> train.py with replay from the model
  directory (its first eval equals transformers' loss on the same windows) -> export.py -> transformers loads the
  export, whose logits equal our checkpoint's and whose tokenizer encodes as our data -> sample.py decodes;
- from-scratch checkpoints export with GPT-2's tokenizer built offline (== tiktoken) or the bytes one (== UTF-8);
- tokenizer fingerprints survive re-saving; uint32 token files above 65,536 tokens;
- bad inputs: one `error:` line, exit status 2, before the model is built."""
import concurrent.futures
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import data
import export
import hf
import sources
import tokenizer
from configurator import UserError, load_config
from generate import generate
from helpers import ROOT, copy_for_resume, one_line_failures, read_log, without_timing
from model import GPT, checkpoint_model_config, model_config_from

import common  # prepare/'s (conftest.py puts it on sys.path)
import tiny_model

transformers = pytest.importorskip('transformers')
ENV = dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1', TOKENIZERS_PARALLELISM='false')
STD = 0.15
TOLERANCE = 1e-4
BLOCK = 32
# on top of config/tiny.py: N=6 steps x S=8, U=8 target sequences seen once, ρ=0.5, α=1 -> stage 2 = steps 4, 5
RUN = ['config/tiny.py', '--max_iters=6', '--target_epochs=1', '--eval_interval=3', '--log_interval=1',
       '--spike_eval_steps=0', '--checkpoint_interval=0', '--learning_rate=3e-3', '--checkpoint_steps=[3]']


def script(*args, expect_ok=True):
    result = subprocess.run([sys.executable, *args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    if expect_ok:
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope='module')
def models(tmp_path_factory):
    """Tiny transformers models saved as Hugging Face directories, and the transformers models themselves."""
    root = tmp_path_factory.mktemp('models')
    texts = tiny_model.training_texts()[:40]
    toks = {style: tiny_model.make_tokenizer(style, vocab_size=384, texts=texts) for style in ('llama', 'gpt2')}
    made = {}

    def make(name, arch, **kwargs):
        made[name] = (str(root / name), tiny_model.make_model(arch, str(root / name), *toks[arch], std=STD, **kwargs))
    # sharded as transformers shards (model.safetensors.index.json), to read that path too
    make('llama', 'llama', max_shard_size='100KB')
    make('llama_tied', 'llama', tied=True, num_key_value_heads=1, head_dim=8, seed=1)
    make('gpt2', 'gpt2', seed=2)
    to_transformers_4_layout(made['llama_tied'][0])
    # the Hub's openai-community/gpt2 layout: no `transformer.` prefix, causal-mask buffers saved
    bare = str(root / 'gpt2_bare')
    shutil.copytree(made['gpt2'][0], bare)
    from safetensors.torch import load_file, save_file
    tensors = {k.removeprefix('transformer.'): v for k, v in load_file(f'{bare}/model.safetensors').items()}
    for i in range(2):
        tensors[f'h.{i}.attn.bias'] = torch.tril(torch.ones(1, 1, 256, 256))
        tensors[f'h.{i}.attn.masked_bias'] = torch.tensor(-1e4)
    save_file(tensors, f'{bare}/model.safetensors', metadata={'format': 'pt'})
    made['gpt2_bare'] = (bare, made['gpt2'][1])
    return made


def to_transformers_4_layout(path):
    """config.json as transformers 4.x wrote it: rope_theta at the top, rope_scaling, torch_dtype."""
    with open(f'{path}/config.json') as f:
        config = json.load(f)
    rope = config.pop('rope_parameters')
    config['rope_theta'] = rope.pop('rope_theta')
    config['rope_scaling'] = rope
    config['torch_dtype'] = config.pop('dtype')
    with open(f'{path}/config.json', 'w') as f:
        json.dump(config, f)


def ours(path, block_size=BLOCK, **changes):
    """model.py's model of a Hugging Face directory, as train.py builds it (config.json, checked weights)."""
    config = hf.model_config(hf.open_model_dir(path), block_size)
    hf.check_weights(path, config)
    model = GPT(dataclasses.replace(config, **changes))
    model.load_state_dict(hf.load_weights(path, config))
    return model.eval()


def max_diff(model, reference, vocab_size, seed=0):
    ids = torch.randint(0, vocab_size, (2, BLOCK), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        a = model(ids, all_logits=True)[0]
        b = reference(ids).logits
    assert a.shape == b.shape and b.abs().max() > 1  # logits of weights this large are far from zero
    return (a - b).abs().max().item()


@pytest.mark.parametrize('name', ['llama', 'llama_tied', 'gpt2', 'gpt2_bare'])
def test_logits_equal_transformers(models, name):
    path, reference = models[name]
    model = ours(path)
    assert max_diff(model, reference, reference.config.vocab_size) <= TOLERANCE
    c = model.config
    expected = dict(llama=(2, 4, 16, False), llama_tied=(1, 4, 8, True), gpt2=(4, 4, 16, True),
                    gpt2_bare=(4, 4, 16, True))[name]
    assert (c.kv_heads, c.n_head, c.head_size, c.tied) == expected
    if name.startswith('llama'):  # both layouts carry the llama3 scaling; rotary tables only for the run's block
        assert c.rope_scaling['rope_type'] == 'llama3' and model.rope_cos.shape == (BLOCK, c.head_size // 2)
        assert (model.lm_head.weight is model.wte.weight) == c.tied


def test_negative_controls_fail_the_tolerance(models):
    """The comparison catches what it must: ignoring llama3 RoPE scaling, or exact GELU for gelu_new."""
    path, reference = models['llama']
    assert max_diff(ours(path, rope_scaling=None), reference, reference.config.vocab_size) > 10 * TOLERANCE
    path, reference = models['gpt2']
    assert max_diff(ours(path, activation='gelu'), reference, reference.config.vocab_size) > 10 * TOLERANCE


def test_config_layouts_agree(models, tmp_path):
    """transformers 4.x (rope_theta + rope_scaling) and 5.x (rope_parameters) layouts give the same model."""
    path = models['llama'][0]
    layout4 = str(tmp_path / 'layout4')
    shutil.copytree(path, layout4)
    to_transformers_4_layout(layout4)
    new, old = (hf.model_config(hf.open_model_dir(p), BLOCK) for p in (path, layout4))
    assert new == old and new.rope_scaling == dict(rope_type='llama3', factor=8.0, low_freq_factor=1.0,
                                                   high_freq_factor=4.0, original_max_position_embeddings=64)


def test_round_trip_export_without_training(models, tmp_path):
    """Each model, loaded and exported at once in bfloat16 and in small shards: transformers reads it, and its
    tensors are the source's in bfloat16."""
    for name in ('llama_tied', 'gpt2_bare'):
        path, reference = models[name]
        model = ours(path)
        checkpoint = dict(model=model.state_dict(), model_config=dataclasses.asdict(model.config),
                          hf_source=hf.open_model_dir(path))
        out = str(tmp_path / name)
        export.export(checkpoint, out, torch.bfloat16, max_shard_bytes=20_000)
        assert os.path.isfile(f'{out}/model.safetensors.index.json') and os.path.isfile(f'{out}/tokenizer.json')
        loaded = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
        for (key, a), b in zip(reference.state_dict().items(), loaded.state_dict().values()):
            assert torch.equal(a.to(torch.bfloat16).float(), b), key


# ---- end to end: prepare -> train.py with replay -> export.py -> transformers, sample.py ------------------------

@pytest.fixture(scope='module')
def trained(models, tmp_path_factory):
    """For the untied GQA Llama (BOS-adding tokenizer) and GPT-2 (no BOS): data prepared in the model's tokenizer,
    6 training steps with replay from its directory, the export."""
    def pipeline(name):
        path = models[name][0]
        root = tmp_path_factory.mktemp(name)
        data = dict(generic=str(root / 'generic'), target=str(root / 'target'))
        script('prepare/demo.py', '--tokenizer', path, '--max_tokens', '20K', '--val_tokens', '3000',
               '--generic_out', data['generic'], '--target_out', data['target'], '--workers', '1')
        out, export = str(root / 'out'), str(root / 'export')
        result = script('train.py', *RUN, f'--init_from={path}', f"--generic_dir={data['generic']}",
                        f"--target_dir={data['target']}", f'--out_dir={out}')
        script('export.py', out, f'--to={export}')
        return dict(path=path, data=data, out=out, export=export, stdout=result.stdout)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:  # two single-threaded chains of processes, side by side
        return dict(zip(('llama', 'gpt2'), pool.map(pipeline, ('llama', 'gpt2'))))


@pytest.mark.parametrize('name', ['llama', 'gpt2'])
def test_trains_from_the_model_and_exports_what_it_trained(models, trained, name):
    run, reference = trained[name], models[name][1]
    with open(f"{run['out']}/summary.json") as f:
        summary = json.load(f)
    log = read_log(run['out'])
    # the loaded shape, not the run's model keys (config/tiny.py: gpt2, 2 heads, width 32)
    shape = summary['model']
    assert shape['source'] == os.path.abspath(run['path']) and shape['n_embd'] == 64 and shape['n_head'] == 4
    assert shape['arch'] == name and shape['n_kv_head'] == (2 if name == 'llama' else 0)
    assert f"model from {os.path.abspath(run['path'])}: {name}: 2 layers, width 64" in run['stdout']
    assert summary['plan']['stage2_start'] == 4 and [r for r in log if r['kind'] == 'train'][-1]['target_seqs'] == 8

    # what train.py trained from is the model: its eval before the first step = transformers' loss, same windows
    source = sources.open_source('target', run['data']['target'])
    config = load_config(RUN)
    windows = data.read_windows(source['val'], np.arange(sources.val_windows(source, config)), BLOCK)
    rows = torch.from_numpy(windows)
    with torch.no_grad():
        logits = reference(rows[:, :-1]).logits
    hf_loss = F.cross_entropy(logits.flatten(0, 1), rows[:, 1:].flatten()).item()
    assert [r for r in log if r['kind'] == 'eval'][0]['val_loss_target'] == pytest.approx(hf_loss, abs=1e-4)
    # the data is in the model's tokenizer: documents end with its end-of-sequence token, Llama's start with BOS
    tok = tokenizer.hf_tokenizer(run['path'])
    target = np.fromfile(f"{run['data']['target']}/train.bin", dtype=np.uint16)
    assert target[-1] == tok['eot_token'] and (target[0] == tok['bos_token']) == (name == 'llama')
    assert tok['bos_token'] is None if name == 'gpt2' else tok['bos_token'] == 0

    # the export is the trained checkpoint, and not the starting model
    checkpoint = torch.load(f"{run['out']}/ckpt.pt", weights_only=True)
    model = GPT(checkpoint_model_config(checkpoint))
    model.load_state_dict(checkpoint['model'])
    exported = transformers.AutoModelForCausalLM.from_pretrained(run['export']).eval()
    assert max_diff(model.eval(), exported, reference.config.vocab_size) <= TOLERANCE
    assert max_diff(model, reference, reference.config.vocab_size) > 1e-3  # training changed it
    # and its tokenizer encodes text as our data does (without the end-of-sequence we add per document)
    text = 'Floating point literals are described by the following lexical definitions.'
    ids, _ = tok['encode']([text])
    assert transformers.AutoTokenizer.from_pretrained(run['export'])(text).input_ids == ids[:-1].tolist()


def test_resume_needs_no_model_directory(trained, tmp_path):
    """A run from a model directory resumes exactly from its checkpoint alone (shape, source and tokenizer in it),
    and its run config's model keys stay unused (here a different n_layer, which a run from scratch would refuse)."""
    run = trained['gpt2']
    resumed = copy_for_resume(run['out'], 3, str(tmp_path / 'resumed'))
    script('train.py', *RUN, '--init_from=resume', '--n_layer=5', f"--generic_dir={run['data']['generic']}",
           f"--target_dir={run['data']['target']}", f'--out_dir={resumed}')
    assert without_timing(read_log(resumed)) == without_timing(read_log(run['out']))


def test_sample_decodes_with_the_model_tokenizer(trained):
    run = trained['llama']
    result = script('sample.py', f"--out_dir={run['out']}", '--start=The ', '--num_samples=1',
                    '--max_new_tokens=24', '--seed=7', '--device=cpu')
    checkpoint = torch.load(f"{run['out']}/ckpt.pt", weights_only=True)
    model = GPT(checkpoint_model_config(checkpoint))
    model.load_state_dict(checkpoint['model'])
    tok = tokenizer.hf_tokenizer(run['path'])
    prompt = torch.tensor(tok['encode'](['The '])[0][:-1].astype(np.int64))[None]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the subprocess, so the sampled tokens are the same
    try:
        torch.manual_seed(7)
        ids = generate(model.eval(), prompt, 24, temperature=0.8, top_k=200)
    finally:
        torch.set_num_threads(threads)
    assert ids[0, 0] == tok['bos_token'] and ids.shape == (1, prompt.shape[1] + 24)
    assert result.stdout.split('\n---------------\n')[0] == tok['decode'](ids[0].tolist())
    assert result.stdout.startswith('<|begin_of_text|>The ')
    # a tokenizer with more tokens than the model (gpt2's 50257, 384 here): one line before any generation
    result = script('sample.py', run['out'], '--tokenizer=gpt2', '--device=cpu', expect_ok=False)
    assert result.returncode == 2 and result.stderr.count('\n') == 1 and result.stdout == ''
    assert result.stderr.startswith("error: tokenizer 'gpt2' has 50257 tokens, more than the ") and \
        'pass the tokenizer it was trained with' in result.stderr


# ---- from-scratch checkpoints and tokenizers ----------------------------------------------------------------------

@pytest.mark.parametrize('arch,name', [('gpt2', 'gpt2'), ('llama', 'bytes')])
def test_from_scratch_checkpoint_exports_with_its_tokenizer(tmp_path, arch, name):
    """A checkpoint from scratch (its data's tokenizer as train.py records it, data in gpt2 or bytes): transformers
    loads the export with the same logits, and its tokenizer is tiktoken's gpt2 or UTF-8 bytes."""
    config = load_config(['config/tiny.py', f'--arch={arch}'])
    vocab = 50257 if name == 'gpt2' else 257
    torch.manual_seed(0)
    model = GPT(model_config_from(config, vocab)).eval()
    with torch.no_grad():  # larger weights than the init, and nonzero norm biases would not exist (bias=False)
        for p in model.parameters():
            p.add_(STD * torch.randn_like(p))
    out = str(tmp_path / 'export')
    meta = dict(tokenizer=name, vocab_size=vocab, eot_token=vocab - 1)  # a prepared source's meta.json keys
    export.export(dict(model=model.state_dict(), model_config=dataclasses.asdict(model.config), tokenizer=name,
                       tokenizer_meta=tokenizer.tokenizer_meta(meta)), out)
    exported = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert max_diff(model, exported, vocab) <= TOLERANCE
    text = "Replay: héllo wörld — 日本語 🙂  x's\n\n\tdone"
    encoded = transformers.AutoTokenizer.from_pretrained(out)(text).input_ids
    if name == 'gpt2':
        import tiktoken
        tokenizer.seed_gpt2_cache()
        assert encoded == tiktoken.get_encoding('gpt2').encode_ordinary(text)
    else:
        assert encoded == list(text.encode('utf-8'))


def test_tokenizer_fingerprint_is_the_tokenizer_not_the_file(models, tmp_path):
    path = models['llama'][0]
    copy = str(tmp_path / 'resaved')
    os.makedirs(copy)
    from tokenizers import Tokenizer
    Tokenizer.from_file(f'{path}/tokenizer.json').save(f'{copy}/tokenizer.json', pretty=False)
    shutil.copy(f'{path}/tokenizer_config.json', copy)
    assert open(f'{copy}/tokenizer.json', 'rb').read() != open(f'{path}/tokenizer.json', 'rb').read()
    a, b = tokenizer.model_tokenizer(path), tokenizer.model_tokenizer(copy)
    assert a['tokenizer_fingerprint'] == b['tokenizer_fingerprint'] and tokenizer.same_tokenizer(a, b)
    assert not tokenizer.same_tokenizer(a, tokenizer.model_tokenizer(models['gpt2'][0]))
    # GPT-2's tokenizer.json and tiktoken's gpt2 data are the same tokenizer
    gpt2 = str(tmp_path / 'gpt2')
    os.makedirs(gpt2)
    tokenizer.builtin_hf_tokenizer('gpt2').save(f'{gpt2}/tokenizer.json')
    with open(f'{gpt2}/tokenizer_config.json', 'w') as f:
        json.dump(dict(eos_token='<|endoftext|>'), f)
    assert tokenizer.same_tokenizer(tokenizer.model_tokenizer(gpt2), dict(tokenizer='gpt2', vocab_size=50257))
    assert not tokenizer.same_tokenizer(tokenizer.model_tokenizer(gpt2), dict(tokenizer='bytes', vocab_size=257))


def test_large_vocabulary_goes_to_uint32(tmp_path):
    """A 70,001-token tokenizer (Llama 3 has 128,256) whose end-of-text id is 70,000: uint32 files hold it."""
    from tokenizers import AddedToken, Tokenizer, models as tok_models, pre_tokenizers
    symbols = tokenizer.byte_symbols()
    vocab = {**{c: i for i, c in enumerate(symbols)}, **{f'unused{i}': i for i in range(256, 70000)}}
    tok = Tokenizer(tok_models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.add_special_tokens([AddedToken('<eos>', special=True)])
    os.makedirs(tmp_path / 'big')
    tok.save(str(tmp_path / 'big' / 'tokenizer.json'))
    with open(tmp_path / 'big' / 'tokenizer_config.json', 'w') as f:
        json.dump(dict(eos_token='<eos>'), f)
    meta = common.prepare_source(['first doc', 'second', 'third one'], str(tmp_path / 'data'), {}, 'test', [],
                                 tokenizer=str(tmp_path / 'big'), val_tokens=5)
    assert (meta['dtype'], meta['vocab_size'], meta['eot_token']) == ('uint32', 70001, 70000)
    tokens = np.fromfile(tmp_path / 'data' / 'train.bin', dtype=np.uint32)
    assert tokens.tolist() == list(b'second') + [70000] + list(b'third one') + [70000]


# ---- bad inputs ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def broken(models, trained, tmp_path_factory):
    """Broken copies of the model directories, and data that does not fit."""
    root = tmp_path_factory.mktemp('broken')
    gpt2, llama = models['gpt2'][0], models['llama'][0]

    def copy(name, source):
        shutil.copytree(source, root / name)
        return str(root / name)

    def edit_config(path, **changes):
        with open(f'{path}/config.json') as f:
            config = json.load(f)
        config.update(changes)
        with open(f'{path}/config.json', 'w') as f:
            json.dump(config, f)

    dirs = dict(no_config=copy('no_config', gpt2), other_arch=copy('other_arch', gpt2),
                no_shard=copy('no_shard', llama), no_tensor=copy('no_tensor', gpt2),
                wrong_shape=copy('wrong_shape', llama), yarn=copy('yarn', llama),
                big_vocab=copy('big_vocab', trained['gpt2']['data']['target']))
    os.remove(f"{dirs['no_config']}/config.json")
    edit_config(dirs['other_arch'], architectures=['MistralForCausalLM'])
    with open(f"{dirs['no_shard']}/model.safetensors.index.json") as f:
        os.remove(f"{dirs['no_shard']}/{sorted(set(json.load(f)['weight_map'].values()))[-1]}")
    from safetensors.torch import load_file, save_file
    tensors = load_file(f"{dirs['no_tensor']}/model.safetensors")
    del tensors['transformer.h.1.mlp.c_fc.weight']
    save_file(tensors, f"{dirs['no_tensor']}/model.safetensors", metadata={'format': 'pt'})
    edit_config(dirs['wrong_shape'], intermediate_size=128)
    edit_config(dirs['yarn'], rope_parameters=dict(rope_type='yarn', rope_theta=10000.0, factor=4.0))
    with open(f"{dirs['big_vocab']}/meta.json") as f:
        meta = json.load(f)
    with open(f"{dirs['big_vocab']}/meta.json", 'w') as f:
        json.dump(dict(meta, vocab_size=70000), f)
    return dirs


def test_bad_inputs_fail_fast_with_one_clear_line(models, trained, broken, tmp_path):
    gpt2, llama = trained['gpt2'], trained['llama']
    data = lambda run: [f"--generic_dir={run['data']['generic']}", f"--target_dir={run['data']['target']}"]
    cases = [
        ('no config.json', [f"--init_from={broken['no_config']}", *data(gpt2)], "has no config.json"),
        ('unsupported architecture', [f"--init_from={broken['other_arch']}", *data(gpt2)],
         "architecture 'MistralForCausalLM' is not supported (supported: GPT2LMHeadModel, LlamaForCausalLM)"),
        ('missing shard', [f"--init_from={broken['no_shard']}", *data(llama)],
         "-of-00006.safetensors is missing (model.safetensors.index.json lists it)"),
        ('missing tensor', [f"--init_from={broken['no_tensor']}", *data(gpt2)],
         "tensor transformer.h.1.mlp.c_fc.weight is missing from the weights"),
        ('wrong shape', [f"--init_from={broken['wrong_shape']}", *data(llama)],
         "tensor model.layers.0.mlp.up_proj.weight in model-0000"),
        ('unsupported RoPE', [f"--init_from={broken['yarn']}", *data(llama)],
         "rope_type='yarn' is not supported here (supported: default, llama3)"),
        ('data in another tokenizer', [f"--init_from={gpt2['path']}", *data(llama)],
         f"was prepared with tokenizer 'llama' (fingerprint "),
        ('vocabulary larger than the dtype', [f"--init_from={gpt2['path']}", *data(gpt2)[:1],
                                              f"--target_dir={broken['big_vocab']}"],
         "vocab_size 70000 does not fit its dtype uint16"),
        ('block longer than the context', [f"--init_from={gpt2['path']}", *data(gpt2), '--block_size=512'],
         "block_size=512 is longer than the model's context"),
        ('a Hub id', ['--init_from=meta-llama/Llama-3.1-8B', *data(llama)],
         "run `hf download meta-llama/Llama-3.1-8B --local-dir models/Llama-3.1-8B`, then init_from=models/"),
    ]
    argv = [[*RUN, *args, f'--out_dir={tmp_path}/case{i}'] for i, (_, args, _) in enumerate(cases)]
    failures, results = one_line_failures([(name, expected) for name, _, expected in cases], argv, tmp_path)
    assert not failures, '\n'.join(failures)
    # the other tokenizer's line names both
    line = results[6][2]
    assert f"uses 'gpt2' (fingerprint " in line and f"--tokenizer={os.path.abspath(gpt2['path'])}" in line


LLAMA_ROPE = dict(rope_type='llama3', factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0, rope_theta=1e4)


@pytest.mark.parametrize('arch, changes, expected', [
    ('llama', dict(rope_parameters='llama3'), "rope_parameters='llama3' must be a dict"),
    ('llama', dict(rope_parameters=None, rope_scaling='llama3'), "rope_scaling='llama3' must be a dict"),
    ('llama', dict(rope_parameters=None, rope_theta='abc'), "rope_theta='abc' must be float"),
    ('llama', dict(rope_parameters=dict(LLAMA_ROPE, rope_theta=-5)), "rope_parameters['rope_theta']=-5.0 must be a "
                                                                     "positive finite number"),
    ('llama', dict(rope_parameters=dict(LLAMA_ROPE, factor=0)), "rope_parameters['factor']=0.0 must be a positive"),
    ('llama', dict(rope_parameters=dict(LLAMA_ROPE, high_freq_factor=1.0)),
     "rope_parameters['low_freq_factor']=1.0 must be less than rope_parameters['high_freq_factor']=1.0"),
    ('llama', dict(rope_parameters={k: v for k, v in LLAMA_ROPE.items() if k != 'factor'}),
     "rope_parameters['factor'] is missing"),
    ('llama', dict(rms_norm_eps=-1.0), "rms_norm_eps=-1.0 must be a positive finite number"),
    ('llama', dict(rms_norm_eps=float('nan')), "rms_norm_eps=nan must be a positive finite number"),
    ('llama', dict(num_attention_heads=0), "num_attention_heads=0 must be at least 1"),
    ('llama', dict(num_attention_heads=None), "num_attention_heads is missing (the model's shape needs it)"),
    ('gpt2', dict(n_head=None), "n_head is missing (the model's shape needs it)"),
    ('gpt2', dict(layer_norm_epsilon=0), "layer_norm_epsilon=0.0 must be a positive finite number"),
    ('gpt2', dict(n_positions=-1), "n_positions=-1 must be at least 1"),
    ('gpt2', dict(architectures='GPT2LMHeadModel'), "architectures='GPT2LMHeadModel' must be a list of class names"),
])
def test_config_fields_are_checked_in_one_line(models, tmp_path, arch, changes, expected):
    """A config.json field of the wrong type or range (a string where RoPE's dict belongs, a RoPE base, factor or
    epsilon <= 0 or NaN, no heads) or a missing shape key: one UserError naming config.json and the field, with no
    warning before it, instead of a crash, a torch warning or a nan loss after out_dir was made. None: removed."""
    path = shutil.copytree(models[arch][0], tmp_path / arch)
    with open(path / 'config.json') as f:
        config = json.load(f)
    config.update(changes)
    config = {k: v for k, v in config.items() if v is not None}
    with open(path / 'config.json', 'w') as f:
        json.dump(config, f)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        with pytest.raises(UserError) as caught:
            hf.model_config(hf.open_model_dir(str(path)), BLOCK)
    assert str(caught.value).startswith(f"{path}/config.json: ") and expected in str(caught.value)


@pytest.mark.parametrize('dtype, refused', [(torch.int32, True), (torch.float16, False), (torch.bfloat16, False)])
def test_weights_that_are_not_floating_point_are_refused(models, tmp_path, dtype, refused):
    """Integer tensors were cast to floats by load_state_dict without a word; half precision loads as it is."""
    from safetensors.torch import load_file, save_file
    path = shutil.copytree(models['gpt2'][0], tmp_path / 'gpt2')
    tensors = load_file(path / 'model.safetensors')
    tensors['transformer.h.0.mlp.c_fc.weight'] = tensors['transformer.h.0.mlp.c_fc.weight'].to(dtype)
    save_file(tensors, path / 'model.safetensors', metadata={'format': 'pt'})
    config = hf.model_config(hf.open_model_dir(str(path)), BLOCK)
    if refused:
        with pytest.raises(UserError, match="tensor transformer.h.0.mlp.c_fc.weight in model.safetensors holds I32 "
                                            "values, not floating point"):
            hf.check_weights(str(path), config)
    else:
        hf.check_weights(str(path), config)


def test_export_and_prepare_bad_inputs(trained, tmp_path):
    run = trained['llama']
    checkpoint = torch.load(f"{run['out']}/ckpt.pt", weights_only=True)
    with pytest.raises(UserError, match='is not an empty directory'):
        export.export(checkpoint, run['export'])
    with pytest.raises(UserError, match='is no longer at'):  # the tokenizer the run used has gone
        checkpoint['hf_source']['dir'] = checkpoint['tokenizer_meta']['tokenizer_path'] = str(tmp_path / 'gone')
        checkpoint['hf_source']['tokenizer']['tokenizer_path'] = str(tmp_path / 'gone')
        export.export(checkpoint, str(tmp_path / 'out'))
    assert not os.path.exists(tmp_path / 'out')
    with pytest.raises(UserError, match='has no tokenizer.json'):
        tokenizer.get_tokenizer(str(tmp_path))
    with pytest.raises(UserError, match='hf download meta-llama/Llama-3.1-8B --local-dir DIR'):
        tokenizer.get_tokenizer('meta-llama/Llama-3.1-8B')


def test_export_refuses_a_non_empty_directory_unless_forced(trained, tmp_path):
    """export.py into a non-empty directory: one error line, exit status 2, nothing touched; --force=True replaces
    it once the export is complete, but never a directory holding the checkpoint being exported."""
    run = trained['gpt2']
    to = tmp_path / 'taken'
    to.mkdir()
    (to / 'notes.txt').write_text('keep me')
    result = script('export.py', run['out'], f'--to={to}', expect_ok=False)
    assert result.returncode == 2 and result.stderr.count('\n') == 1 and 'Traceback' not in result.stderr
    assert result.stderr.startswith(f'error: --to={to} exists and is not an empty directory') and \
        '--force=True' in result.stderr
    assert os.listdir(to) == ['notes.txt']
    export.main([run['out'], f'--to={to}', '--force=True'])
    assert sorted(os.listdir(to)) == sorted(os.listdir(run['export']))  # replaced: notes.txt is gone
    assert transformers.AutoModelForCausalLM.from_pretrained(str(to)) is not None
    before = sorted(os.listdir(run['out']))
    with pytest.raises(UserError, match='holds the checkpoint'):
        export.main([run['out'], f"--to={run['out']}", '--force=True'])
    assert sorted(os.listdir(run['out'])) == before and not [p for p in os.listdir(tmp_path) if '.tmp' in p]


def test_export_write_failures_are_one_line(trained, tmp_path, monkeypatch):
    """A parent of --to that is not writable (refused before converting: os.access is made to say so, as root
    passes every permission), and a disk that fills while the weights are written (safetensors' SafetensorError):
    one UserError naming the path, --to never made, no temporary directory left."""
    run, real_access = trained['gpt2'], os.access
    (tmp_path / 'ro' / 'x').mkdir(parents=True)  # an empty --to, writable itself: the export is made beside it
    monkeypatch.setattr(os, 'access', lambda path, mode: os.path.realpath(path) != str(tmp_path / 'ro')
                        and real_access(path, mode))
    with pytest.raises(UserError, match=f"--to={tmp_path}/ro/x cannot be written: {tmp_path}/ro is not writable"):
        export.main([run['out'], f'--to={tmp_path}/ro/x'])
    from safetensors import SafetensorError

    def full_disk(*args, **kwargs):
        raise SafetensorError('Error while serializing: I/O error: No space left on device (os error 28)')
    monkeypatch.setattr(export, 'save_file', full_disk)
    with pytest.raises(UserError, match=f"cannot write the export {tmp_path}/full .*No space left on device"):
        export.main([run['out'], f'--to={tmp_path}/full'])
    assert os.listdir(tmp_path) == ['ro'] and os.listdir(tmp_path / 'ro') == ['x'] and not os.listdir(tmp_path / 'ro/x')


CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")


@pytest.mark.parametrize('form', ['chat_template.jinja', 'tokenizer_config.json'])
def test_export_carries_the_models_chat_template(models, tmp_path, form):
    """A model directory with a chat template (chat_template.jinja, or tokenizer_config.json's chat_template): the
    export renders conversations with it through transformers' apply_chat_template, as the source does; from the
    run's model directory (hf_source) or from the directory the data's tokenizer was read from."""
    path = str(tmp_path / 'chat_model')
    shutil.copytree(models['llama'][0], path)
    with open(f'{path}/tokenizer_config.json') as f:
        config = {k: v for k, v in json.load(f).items() if k != 'chat_template'}
    if os.path.exists(f'{path}/chat_template.jinja'):
        os.remove(f'{path}/chat_template.jinja')
    if form == 'chat_template.jinja':
        with open(f'{path}/chat_template.jinja', 'w') as f:
            f.write(CHAT_TEMPLATE)
    else:
        config['chat_template'] = CHAT_TEMPLATE
    with open(f'{path}/tokenizer_config.json', 'w') as f:
        json.dump(config, f)
    model = ours(path)
    checkpoint = dict(model=model.state_dict(), model_config=dataclasses.asdict(model.config))
    if form == 'chat_template.jinja':  # a run from the model directory
        checkpoint['hf_source'] = hf.open_model_dir(path)
    else:  # a run from scratch on data prepared with --tokenizer=DIR
        checkpoint['tokenizer_meta'] = tokenizer.tokenizer_meta(tokenizer.model_tokenizer(path))
    out = str(tmp_path / 'export')
    assert export.export(checkpoint, out).endswith('with its chat template')
    messages = [dict(role='system', content='Be brief.'), dict(role='user', content='Héllo?'),
                dict(role='assistant', content='Hi.')]
    exported, source = (transformers.AutoTokenizer.from_pretrained(p) for p in (out, path))
    text = exported.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == '<|system|>Be brief.\n<|user|>Héllo?\n<|assistant|>Hi.\n<|assistant|>'
    assert text == source.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert exported.apply_chat_template(messages, tokenize=True, return_dict=False) == \
        source.apply_chat_template(messages, tokenize=True, return_dict=False)
