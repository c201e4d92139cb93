"""Training on chat sources (sources.py's chat windows, model.py's document masking, train.py's loss over loss tokens),
judged against plain torch written here, and text-only runs against their logs from before chat data existed.
Chat sources are written here in the on-disk format prepare/ makes (sources.py's docstring): {split}.bin in windows
of block_size + 1 tokens, {split}.mask.bin, {split}.starts.bin, meta.json with format 'chat'. As in helpers.py,
the first token of window w is base + w, so a fed row's first token says which window train.py read."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import data
import pre_change_logs
import schedule
import sources
from configurator import load_config
from generate import generate
from helpers import ROOT, one_line_failures, read_log, write_source
from model import GPT, GPTConfig, document_positions_and_mask

BLOCK, VOCAB, TARGET_BASE, PAD = 32, 1300, 1200, 0
ENV = dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1')


def pack_windows(n_windows, block_size, base, seed):
    """n_windows chat windows of block_size + 1 tokens: examples of 2..block_size/2 random tokens (ids 1..255)
    packed whole while they fit, then padding (PAD) to the window's end; the loss on the second half of each
    example (never its first token). Returns tokens, mask, starts (flat) and each window's segments [(a, b,
    is_padding)]."""
    rng = np.random.default_rng(seed)
    width = block_size + 1
    tokens, mask, starts = (np.zeros(n_windows * width, dtype=d) for d in (np.uint16, np.uint8, np.uint8))
    segments = []
    for w in range(n_windows):
        at, here = w * width, []
        while at < (w + 1) * width:
            length = int(rng.integers(2, block_size // 2 + 1))
            if at + length > (w + 1) * width:  # the rest is padding, its own segment, with no loss
                here.append((at - w * width, width, True))
                starts[at] = 1
                break
            tokens[at:at + length] = rng.integers(1, 256, length)
            mask[at + length // 2:at + length] = 1
            starts[at] = 1
            here.append((at - w * width, at + length - w * width, False))
            at += length
        tokens[w * width] = base + w
        segments.append(here)
    return tokens, mask, starts, segments


def write_chat_source(path, n_windows, block_size=BLOCK, base=TARGET_BASE, val_windows=6, seed=0):
    os.makedirs(path, exist_ok=True)
    counts = {}
    for split, n in (('train', n_windows), ('val', val_windows)):
        tokens, mask, starts, segments = pack_windows(n, block_size, base, seed + (split == 'val'))
        tokens.tofile(os.path.join(path, f'{split}.bin'))
        mask.tofile(os.path.join(path, f'{split}.mask.bin'))
        starts.tofile(os.path.join(path, f'{split}.starts.bin'))
        counts[split] = dict(examples=sum(not pad for s in segments for *_, pad in s), loss_tokens=int(mask.sum()),
                             dropped=0, truncated=0, windows=n)
    meta = dict(tokenizer='synthetic', vocab_size=VOCAB, eot_token=VOCAB - 1, dtype='uint16', format='chat',
                block_size=block_size, window_stride=block_size + 1, chat_template_sha256='0' * 64,
                loss_on='assistant', end_of_turn='<|eot|>', date='2026-01-01', pad_token_id=PAD, counts=counts)
    with open(os.path.join(path, 'meta.json'), 'w') as f:
        json.dump(meta, f)
    return str(path)


def read_chat_split(path, split='train'):
    """tokens, mask, starts of a chat split as (windows, block_size + 1) arrays, read here without data.py."""
    arrays = [np.fromfile(os.path.join(path, f'{split}{kind}.bin'), dtype=d)
              for kind, d in (('', np.uint16), ('.mask', np.uint8), ('.starts', np.uint8))]
    return [a.reshape(-1, BLOCK + 1) for a in arrays]


# ---------------------------------------------------------------------------------------------------------------
# the model: packed examples never see each other
# ---------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize('arch', ['gpt2', 'llama'])
def test_packed_examples_compute_what_they_compute_alone(arch):
    """Each example of a packed window gets the logits it gets run alone (float32, <= 1e-5); with the mask or the
    restarting positions taken away (gpt2's learned positions; the negative controls), examples after a window's
    first do not."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(arch=arch, block_size=BLOCK, vocab_size=VOCAB, n_layer=2, n_head=2, n_embd=32)).eval()
    tokens, _, starts, segments = pack_windows(4, BLOCK, TARGET_BASE, seed=3)
    rows = torch.from_numpy(tokens.reshape(4, -1).astype(np.int64))[:, :-1]
    starts = torch.from_numpy(starts.reshape(4, -1)[:, :-1].astype(bool))
    positions, attn_mask = document_positions_and_mask(starts)
    with torch.no_grad():
        packed = model(rows, all_logits=True, positions=positions, attn_mask=attn_mask)[0]
        no_mask = model(rows, all_logits=True, positions=positions)[0]
        no_positions = model(rows, all_logits=True, attn_mask=attn_mask)[0]
        worst, control_mask, control_positions, later = 0.0, [], [], 0
        for w, window in enumerate(segments):
            for a, b, pad in window:
                b = min(b, BLOCK)  # inputs are the window's first BLOCK tokens
                if pad or b <= a:
                    continue
                alone = model(rows[w:w + 1, a:b], all_logits=True)[0][0]
                worst = max(worst, (packed[w, a:b] - alone).abs().max().item())
                if a > 0:
                    later += 1
                    control_mask.append((no_mask[w, a:b] - alone).abs().max().item())
                    control_positions.append((no_positions[w, a:b] - alone).abs().max().item())
    assert worst <= 1e-5, worst
    assert later >= 8  # the windows do pack several examples each
    assert min(control_mask) > 1e-3, control_mask
    if arch == 'gpt2':  # rotary attention depends on relative positions only: within an example, a shift is moot
        assert min(control_positions) > 1e-3, control_positions


def test_document_positions_and_mask():
    starts = torch.tensor([[1, 0, 0, 1, 0, 1], [0, 0, 1, 0, 0, 0]], dtype=torch.bool)  # row 1: no start at 0
    positions, mask = document_positions_and_mask(starts)
    assert positions.tolist() == [[0, 1, 2, 0, 1, 0], [0, 1, 0, 1, 2, 3]]
    assert mask.shape == (2, 1, 6, 6)
    assert mask[0, 0].int().tolist() == [[1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0],
                                         [0, 0, 0, 1, 0, 0], [0, 0, 0, 1, 1, 0], [0, 0, 0, 0, 0, 1]]
    assert mask[1, 0, 5].int().tolist() == [0, 0, 1, 1, 1, 1]


# ---------------------------------------------------------------------------------------------------------------
# sources.py and data.py: a chat source's windows, masks and counts
# ---------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def chat_data(tmp_path_factory):
    """A text generic source (every token of window w is w) and a chat target source (window w starts with
    TARGET_BASE + w), vocab 1300."""
    root = tmp_path_factory.mktemp('chat')
    generic = write_source(str(root / 'generic'), 400, BLOCK, 0, vocab=VOCAB)
    return generic, write_chat_source(root / 'target', 40), root


def test_chat_windows_are_whole_windows_of_their_stride(chat_data):
    generic_dir, target_dir, _ = chat_data
    target = sources.open_source('target', target_dir)
    assert sources.is_chat(target) and not sources.is_chat(sources.open_source('generic', generic_dir))
    assert sources.train_windows(target, BLOCK) == 40 == sources.split_windows('target', target_dir, BLOCK)
    tokens, mask, starts = data.split_views(target, 'train', BLOCK)
    expected = read_chat_split(target_dir)
    assert all(np.array_equal(view, e) for view, e in zip((tokens, mask, starts), expected))
    assert [int(t) for t in tokens[:, 0]] == [TARGET_BASE + w for w in range(40)]
    loss_mask, first = data.chat_rows((tokens, mask, starts), np.array([3, 5]))
    assert np.array_equal(loss_mask, expected[1][[3, 5], 1:]) and np.array_equal(first, expected[2][[3, 5], :-1])


def test_every_rank_counts_the_whole_steps_loss_tokens(chat_data):
    """2 ranks x 2 micro-steps: each rank gets its own rows, and both the step's loss-token count of all S."""
    generic_dir, target_dir, _ = chat_data
    config = load_config(['config/tiny.py', f'--generic_dir={generic_dir}', f'--target_dir={target_dir}',
                          '--batch_size=2', '--gradient_accumulation_steps=4'])
    generic, target = sources.open_sources(config)
    plan = schedule.make_plan(config, sources.train_windows(target, BLOCK), sources.train_windows(generic, BLOCK))
    pool = schedule.pool_of(plan)
    t = schedule.stage_starts(plan)[0]  # stage 2: half target
    ranks = [data.loader(plan, pool, generic, target, config, rank, 2, False)(t) for rank in (0, 1)]
    is_target, ids = schedule.step_batch(plan, t)
    tokens, mask, _ = read_chat_split(target_dir)
    expected = sum(int(mask[pool[i], 1:].sum()) if tgt else BLOCK for tgt, i in zip(is_target, ids))
    rows = torch.cat([m.rows for micro in ranks for m in micro]).numpy()
    assert [int(r[0]) for r in rows] == [TARGET_BASE + pool[i] if tgt else i for tgt, i in zip(is_target, ids)]
    assert {(m.step_loss_tokens, m.step_loss_windows) for micro in ranks for m in micro} == {(expected, 8)}
    assert sum(int(m.loss_mask.sum()) for micro in ranks for m in micro) == expected


# ---------------------------------------------------------------------------------------------------------------
# train.py: one step's loss and gradients against plain torch (2 processes x 2 micro-steps, gloo)
# ---------------------------------------------------------------------------------------------------------------

# train.py (run as a file: torchrun takes no -c) with the optimizer's step wrapped to save, on rank 0, the gradients it is given (by parameter name) in
# out_dir/grads_<call>.pt, the call'th step of this process
RECORD_GRADS = r'''
import os, runpy, sys
sys.path.insert(0, os.getcwd())
import torch
import runtime
make_optimizer, calls = runtime.make_optimizer, [0]


def recording(model, config, device_type):
    optimizer = make_optimizer(model, config, device_type)
    step = optimizer.step

    def record(*args, **kwargs):
        if os.environ.get('RANK', '0') == '0':
            torch.save({n: p.grad.clone() for n, p in model.named_parameters()},
                       os.path.join(config['out_dir'], f'grads_{calls[0]}.pt'))
        calls[0] += 1
        return step(*args, **kwargs)
    optimizer.step = record
    return optimizer


runtime.make_optimizer = recording
sys.argv[0] = 'train.py'
runpy.run_path('train.py', run_name='__main__')
'''
# N=4 x S=8 (2 ranks x 2 micro-steps of 2), U=4 x e=2, ρ=0.5, α=1: stage 2 = steps 2-3, half chat windows; no
# clipping (the recorded gradients are the step's own), weights kept after step 2
CHAT_RUN = ['--max_iters=4', '--batch_size=2', '--gradient_accumulation_steps=4', f'--target_tokens={4 * BLOCK}',
            '--target_epochs=2', '--grad_clip=0', '--log_interval=1', '--eval_interval=2', '--checkpoint_steps=[2]',
            '--val_tokens=200', '--log_batch_ids=True', '--backend=gloo']
CHECKED_STEP = 2


@pytest.fixture(scope='module')
def chat_runs(chat_data):
    """train.py on the chat data under torchrun, 2 processes, once per loss_average (llama for 'tokens', gpt2 for
    'sequences'), the two at once: {mode: out_dir}."""
    generic_dir, target_dir, root = chat_data
    procs, launcher = {}, root / 'record_grads.py'
    launcher.write_text(RECORD_GRADS)
    for mode, arch in (('tokens', 'llama'), ('sequences', 'gpt2')):
        out = str(root / f'run_{mode}')
        cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2',
               str(launcher), 'config/tiny.py', f'--generic_dir={generic_dir}', f'--target_dir={target_dir}',
               f'--out_dir={out}', f'--loss_average={mode}', f'--arch={arch}', *CHAT_RUN]
        procs[mode] = (out, subprocess.Popen(cmd, cwd=ROOT, env=ENV, text=True, stdout=subprocess.PIPE,
                                             stderr=subprocess.STDOUT))
    for mode, (out, proc) in procs.items():
        output, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, output[-4000:]
    return {mode: out for mode, (out, _) in procs.items()}


def plain_step_loss(model, windows, loss_average):
    """The step's loss in plain torch, no masks: every example run alone (its tokens up to the next example's
    start), cross entropy on its loss-token labels; 'tokens': summed / the step's loss tokens, 'sequences': each
    window's mean, averaged over the windows with any. windows: (tokens, mask, starts) rows of B+1 (a text window:
    all labels count, one example). Returns (loss, token-mean loss, loss tokens)."""
    sums, counts = [], []
    for tokens, mask, starts in windows:
        edges = [i for i in range(len(tokens)) if starts[i]] + [len(tokens)]
        total, count = torch.zeros(()), 0
        for a, b in zip(edges, edges[1:]):
            labels = torch.from_numpy(tokens[a + 1:b].astype(np.int64))
            counted = torch.from_numpy(mask[a + 1:b].astype(bool))
            if b - a < 2 or not counted.any():
                continue
            logits, _ = model(torch.from_numpy(tokens[a:b - 1].astype(np.int64))[None], all_logits=True)
            total = total + F.cross_entropy(logits[0][counted], labels[counted], reduction='sum')
            count += int(counted.sum())
        sums.append(total)
        counts.append(count)
    n_tokens = sum(counts)
    token_mean = sum(sums) / n_tokens
    if loss_average == 'tokens':
        return token_mean, token_mean, n_tokens
    means = [s / c for s, c in zip(sums, counts) if c]
    return sum(means) / len(means), token_mean, n_tokens


@pytest.mark.parametrize('loss_average', ['tokens', 'sequences'])
def test_one_chat_step_equals_plain_torch(chat_runs, chat_data, loss_average):
    """Step 2 (the first of stage 2, half chat windows) of a 2-process x 2-micro-step run: the ids fed are the
    plan's windows; the logged loss is the cross entropy over the step's loss tokens / their count, and the
    gradient that of plain torch's loss (plain_step_loss) from the step's starting weights, both loss_average
    modes. Caught (each tried by hand): the ranks' gradient average not undone (no x world: 'tokens' fails); the
    loss mask one label off; no document mask (this test and the validation test)."""
    generic_dir, target_dir, _ = chat_data
    out = chat_runs[loss_average]
    log = read_log(out)
    config = load_config(['config/tiny.py', f'--generic_dir={generic_dir}', f'--target_dir={target_dir}',
                          *CHAT_RUN, f'--loss_average={loss_average}'])
    plan = schedule.make_plan(config, 40, 400)
    pool = schedule.pool_of(plan)
    assert schedule.stage_starts(plan) == [CHECKED_STEP]
    generic_tokens = np.fromfile(os.path.join(generic_dir, 'train.bin'), dtype=np.uint16)
    chat = read_chat_split(target_dir)
    for record in (r for r in log if r['kind'] == 'batch'):  # decoded as test_train.py decodes them
        is_target, ids = schedule.step_batch(plan, record['step'])
        assert record['first_tokens'] == [TARGET_BASE + pool[i] if tgt else i for tgt, i in zip(is_target, ids)]
        assert record['is_target'] == [int(x) for x in is_target]

    is_target, ids = schedule.step_batch(plan, CHECKED_STEP)
    assert 0 < is_target.sum() < len(is_target)  # a step that mixes chat and text windows
    ones, first = np.ones(BLOCK + 1, dtype=np.uint8), np.eye(1, BLOCK + 1, dtype=np.uint8)[0]
    windows = [tuple(a[pool[i]] for a in chat) if tgt else (generic_tokens[i * BLOCK:][:BLOCK + 1], ones, first)
               for tgt, i in zip(is_target, ids)]
    saved = torch.load(os.path.join(out, f'ckpt_{CHECKED_STEP}.pt'), map_location='cpu', weights_only=False)
    model = GPT(GPTConfig(**saved['model_config']))
    model.load_state_dict(saved['model'])
    loss, token_mean, n_tokens = plain_step_loss(model, windows, loss_average)
    loss.backward()
    grads = torch.load(os.path.join(out, f'grads_{CHECKED_STEP}.pt'), weights_only=True)
    assert set(grads) == {n for n, _ in model.named_parameters()}
    for name, p in model.named_parameters():
        assert torch.allclose(grads[name], p.grad, rtol=1e-4, atol=1e-7), (name, (grads[name] - p.grad).abs().max())

    record = next(r for r in log if r['kind'] == 'train' and r['step'] == CHECKED_STEP)
    assert abs(record['loss'] - token_mean.item()) < 1e-5  # the record: means over loss tokens, in either mode
    target_tokens = sum(int(w[1][1:].sum()) for w, tgt in zip(windows, is_target) if tgt)
    assert (record['loss_tokens_target'], record['loss_tokens_generic']) == (target_tokens, n_tokens - target_tokens)
    assert record['loss_tokens_generic'] == (~is_target).sum() * BLOCK
    evals = [r for r in log if r['kind'] == 'eval']
    assert evals and all(np.isfinite(r['val_loss_target']) for r in evals)


def test_chat_validation_is_over_val_loss_tokens(chat_runs, chat_data):
    """The final val loss of the chat source == plain torch over its val windows' loss tokens (val_tokens=200:
    the first 6 windows of 33 tokens), every example alone."""
    _, target_dir, _ = chat_data
    out = chat_runs['tokens']
    saved = torch.load(os.path.join(out, 'ckpt.pt'), map_location='cpu', weights_only=False)
    model = GPT(GPTConfig(**saved['model_config']))
    model.load_state_dict(saved['model'])
    val = read_chat_split(target_dir, 'val')
    with torch.no_grad():
        _, expected, _ = plain_step_loss(model, [tuple(a[w] for a in val) for w in range(200 // (BLOCK + 1))],
                                         'tokens')
    final = [r for r in read_log(out) if r['kind'] == 'eval'][-1]
    assert abs(final['val_loss_target'] - expected.item()) < 1e-5


# ---------------------------------------------------------------------------------------------------------------
# text-only runs: exactly what they computed before chat data existed
# ---------------------------------------------------------------------------------------------------------------

def test_text_runs_equal_their_pre_change_logs(tmp_path):
    """tests/data/text_logs_8f027de.json: the logs of pre_change_logs.RUNS recorded with commit 8f027de (one
    process; 2 processes x 2 micro-steps). Every record and field, bit for bit; the train records' new loss-token
    counts are the sequences' tokens."""
    with open(pre_change_logs.LOGS) as f:
        expected = json.load(f)
    logs = pre_change_logs.run_all(str(tmp_path))
    for name, old in expected.items():
        new = logs[name]
        assert len(new) == len(old), name
        for before, now in zip(old, new):
            assert {k: now.get(k) for k in before} == before, (name, before, now)
            if now['kind'] == 'train':
                assert set(now) - set(before) == {'loss_tokens_target', 'loss_tokens_generic'}
                assert now['loss_tokens_target'] + now['loss_tokens_generic'] == 8 * BLOCK * now['steps']
            else:
                assert set(now) == set(before)


# ---------------------------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------------------------

def test_bad_chat_input_is_one_line(chat_data, tmp_path):
    generic_dir, target_dir, _ = chat_data
    no_mask, short_starts = (write_chat_source(tmp_path / name, 8) for name in ('no_mask', 'short_starts'))
    os.remove(os.path.join(no_mask, 'val.mask.bin'))
    with open(os.path.join(short_starts, 'train.starts.bin'), 'r+b') as f:
        f.truncate(8 * (BLOCK + 1) - 1)
    base = ['config/tiny.py', f'--generic_dir={generic_dir}', f'--out_dir={tmp_path / "out"}']
    cases = [[*base, f'--target_dir={target_dir}', '--block_size=16'],
             [*base, f'--target_dir={no_mask}'],
             [*base, f'--target_dir={short_starts}'],
             [*base, f'--target_dir={target_dir}', "--loss_average=mean"],
             ['config/tiny.py', f'--generic_dir={target_dir}', f'--target_dir={generic_dir}', '--block_size=64']]
    expected = [('block_size differs', 'was packed for block_size=32 (its meta.json), but this run has block_size=16'),
                ('mask missing', 'val.mask.bin is missing'),
                ('starts too short', f'train.starts.bin has {8 * (BLOCK + 1) - 1} bytes'),
                ('loss_average', "loss_average='mean' must be 'tokens' or 'sequences'"),
                ('generic chat, block_size differs', 'generic_dir=')]
    failures, _ = one_line_failures(expected, cases, tmp_path)
    assert not failures, '\n'.join(failures)
    assert not os.path.exists(tmp_path / 'out')


# ---------------------------------------------------------------------------------------------------------------
# sample.py --chat
# ---------------------------------------------------------------------------------------------------------------

def test_sample_chat_prints_the_reply(tmp_path):
    """sample.py --chat renders the user message with the directory's chat template and its generation prompt,
    encodes it without adding special tokens, and prints the greedy reply up to the end-of-turn token: here
    recomputed from the prompt the template must give, written out by hand."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    words = ['<|user|>', '<|assistant|>', '<|end|>', *'hello world what is replay a b c d e f g'.split()]
    model_dir = tmp_path / 'tok'
    model_dir.mkdir()
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token='a'))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(words[:3])
    tok.save(str(model_dir / 'tokenizer.json'))
    template = ("{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }}{{ eos_token }}{% endfor %}"
                "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    (model_dir / 'tokenizer_config.json').write_text(json.dumps(dict(eos_token='<|end|>', chat_template=template)))
    torch.manual_seed(16)  # init_std 0.5, seed 16: a greedy reply of 5 tokens, then <|end|>, then more tokens
    model = GPT(GPTConfig(block_size=BLOCK, vocab_size=len(words), n_layer=1, n_head=2, n_embd=16, init_std=0.5))
    ckpt = str(tmp_path / 'ckpt.pt')
    torch.save(dict(model=model.state_dict(), optimizer={}, scaler={}, step=1, config={}, fingerprint={},
                    prefix_hash='', generic_cursor=0, rng_cpu=torch.get_rng_state(), log_sums=torch.zeros(5),
                    last_log_step=0, tokenizer=str(model_dir), vocab_size=len(words),
                    model_config=dict(block_size=BLOCK, vocab_size=len(words), n_layer=1, n_head=2, n_embd=16),
                    tokenizer_meta=dict(tokenizer_path=str(model_dir))), ckpt)
    result = subprocess.run([sys.executable, 'sample.py', f'--ckpt={ckpt}', '--chat', '--start=what is replay',
                             '--top_k=1', '--num_samples=1', '--max_new_tokens=12', '--device=cpu'],
                            cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    prompt = [words.index(w) for w in ['<|user|>', 'what', 'is', 'replay', '<|end|>', '<|assistant|>']]
    with torch.no_grad():
        out = generate(model.eval(), torch.tensor([prompt]), 12, top_k=1)[0, len(prompt):].tolist()
    reply = out[:out.index(2)]
    assert len(reply) >= 3 and len(out) > len(reply) + 1  # a reply, cut at its end of turn
    assert result.stdout.split('---------------')[0].strip() == tok.decode(reply, skip_special_tokens=False).strip()
