"""arch='llama' end to end on CPU: train.py trains it, its checkpoint samples (read back with weights_only=True),
and a resume continues it exactly. A short tiny run (8 steps, stage 2 from step 4) keeps this file fast."""
import contextlib
import os

import pytest
import torch

import runtime
import sources
import train
from generate import generate
from helpers import copy_for_resume, make_sources, read_log, run_train, without_timing
from model import GPT, model_config_from

# on top of config/tiny.py: N=8 steps x S=8; U=8 x e=2 target sequences with ρ=0.5, α=1: stage 2 = steps 4..7
LLAMA = ['--arch=llama', '--max_iters=8', '--target_epochs=2', '--log_interval=1', '--eval_interval=4',
         '--spike_eval_steps=0', '--checkpoint_steps=[6]']


@pytest.fixture(scope='module')
def llama_run(tmp_path_factory):
    generic, target = make_sources(str(tmp_path_factory.mktemp('data')))
    out = str(tmp_path_factory.mktemp('llama'))
    data_args = LLAMA + [f'--generic_dir={generic}', f'--target_dir={target}']
    run_train(data_args + [f'--out_dir={out}'])
    return out, data_args


def load_model(path):
    checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    vocab_size = checkpoint['model']['wte.weight'].shape[0]
    model = GPT(model_config_from(checkpoint['config'], vocab_size))
    model.load_state_dict(checkpoint['model'])
    return model.eval(), checkpoint['config']


def test_llama_trains(llama_run):
    out, _ = llama_run
    log = read_log(out)
    evals = [r for r in log if r['kind'] == 'eval']
    assert [r['step'] for r in evals] == [0, 4, 8]
    # it learns the repeated target data (synthetic generic windows never repeat: nothing to learn there)
    assert evals[-1]['val_loss_target'] < evals[0]['val_loss_target']
    target_losses = [r['loss_target'] for r in log if r['kind'] == 'train' and r['loss_target'] is not None]
    assert len(target_losses) == 4 and target_losses[-1] < target_losses[0] - 0.2
    assert [r for r in log if r['kind'] == 'train'][-1]['target_seqs'] == 16
    # the checkpoint holds a Llama: gated MLP, untied head, no position table, rotary tables not saved
    state = torch.load(os.path.join(out, 'ckpt.pt'), map_location='cpu', weights_only=True)['model']
    assert 'blocks.0.mlp.gate.weight' in state and 'wpe.weight' not in state
    assert not any('rope' in k for k in state)
    assert not torch.equal(state['lm_head.weight'], state['wte.weight'])


def test_llama_checkpoint_samples(llama_run):
    out, _ = llama_run
    model, config = load_model(os.path.join(out, 'ckpt.pt'))
    assert model.config.arch == 'llama'
    # the weights read back are the trained model: they give the logged final validation loss
    source = sources.open_source('target', config['target_dir'])
    system = runtime.System(rank=0, local_rank=0, world=1, device='cpu', device_type='cpu', device_name='cpu')
    val = train.evaluate(model, source, config, contextlib.nullcontext(), system)
    assert val == pytest.approx([r for r in read_log(out) if r['kind'] == 'eval'][-1]['val_loss_target'], rel=1e-5)
    prompt = torch.tensor([[1, 2, 3]])
    samples = []
    for _ in range(2):
        torch.manual_seed(0)
        samples.append(generate(model, prompt, max_new_tokens=40, temperature=0.8, top_k=50))
    assert samples[0].shape == (1, 43) and torch.equal(samples[0][:, :3], prompt)  # 40 > block_size: cropped
    assert torch.equal(samples[0], samples[1])  # seeded sampling repeats
    assert int(samples[0].max()) < model.config.vocab_size and int(samples[0].min()) >= 0


def test_llama_resume_continues_exactly(llama_run, tmp_path):
    """8 straight steps == 6 steps + resume + 2: same ids, same losses (CPU is deterministic)."""
    out, data_args = llama_run
    resumed = copy_for_resume(out, 6, str(tmp_path / 'resumed'))
    run_train(data_args + [f'--out_dir={resumed}', '--init_from=resume'])
    assert without_timing(read_log(resumed)) == without_timing(read_log(out))
