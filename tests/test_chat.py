"""Chat data preparation: rendering and loss masks against transformers' own apply_chat_template (a tokenizer built
locally with the tokenizers package, no Hub), the prefix method, packing into windows with masks and example
starts, the input formats, the Hub path up to its datasets call (a local stand-in), and bad inputs."""
import datetime
import json
import os
import runpy
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import datasets  # noqa: E402
import transformers  # noqa: E402

import chat  # noqa: E402  (prepare/chat.py)
import local  # noqa: E402
import tiny_model  # noqa: E402
import chat_template as chat_templates  # noqa: E402
from configurator import UserError  # noqa: E402

CHATML_TOKENS = ('<|im_start|>', '<|im_end|>', '<|pad|>')
# ChatML with generation tags that end right after the end-of-turn token, and a few of the environment's features
# (tojson of non-ASCII and HTML characters, a namespace, loop controls, a None-valued key dropped, strftime_now)
TAGGED = (
    "{%- set ns = namespace(turns=0) %}"
    "{%- for message in messages %}"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] %}{{ raise_exception('no role ' + message['role']) }}"
    "{%- endif %}"
    "{%- set ns.turns = ns.turns + 1 %}"
    "{{- '<|im_start|>' + message['role'] }}{% if message.name is defined %}{{ ' ' + message.name }}{% endif %}"
    "{{- '\\n' }}"
    "{%- if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}"
    "{%- else %}"
    "{{ message['content'] }}{% if message.meta is defined %}{{ message.meta | tojson }}{% endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- if loop.index > 50 %}{% break %}{% endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}"
    "{%- if ns.turns > 40 %}{{ strftime_now('%d %b %Y') }}{% endif %}")


CONVERSATIONS = [
    [dict(role='system', content='Be brief.'), dict(role='user', content='Héllo ü 日本語 ✓'),
     dict(role='assistant', content='Grüße 👋 — fine'), dict(role='user', content='And?', name=None),
     dict(role='assistant', content='More: <b>&</b>'), dict(role='user', content='x', meta={'k': 'é<>&'}),
     dict(role='assistant', content='done.')],
    [dict(role='user', content=''), dict(role='assistant', content=''), dict(role='user', content='again'),
     dict(role='assistant', content=' spaced out \n')],
    [dict(role='user', content='one turn only', name='ann'), dict(role='assistant', content='ok')],
]


@pytest.fixture(scope='module')
def models(tmp_path_factory):
    """Model directories (tokenizer files only) sharing one small trained BPE: 'tagged' (ChatML with generation
    tags, in tokenizer_config.json, a pad token), 'llama' (tiny_model's Llama-3-style template, chat_template.jinja),
    'none' (no template)."""
    from tokenizers import AddedToken
    root = tmp_path_factory.mktemp('chat_models')
    tok, config = tiny_model.make_tokenizer('llama', vocab_size=300, texts=tiny_model.training_texts()[:12])
    tok.add_special_tokens([AddedToken(t, special=True) for t in CHATML_TOKENS])
    dirs = {}
    for name, extra in (('tagged', dict(chat_template=TAGGED, pad_token='<|pad|>')), ('llama', {}),
                        ('none', dict(chat_template=None))):
        dirs[name] = str(root / name)
        cfg = {k: v for k, v in {**config, **extra}.items() if v is not None}
        if name == 'tagged':  # in tokenizer_config.json, the older place transformers still reads
            os.makedirs(dirs[name])
            tok.save(os.path.join(dirs[name], 'tokenizer.json'))
            with open(os.path.join(dirs[name], 'tokenizer_config.json'), 'w') as f:
                json.dump(cfg, f)
        else:
            tiny_model.save_tokenizer(dirs[name], tok, cfg)
    return dirs


def hf_tokenizer(path):
    return transformers.PreTrainedTokenizerFast.from_pretrained(path)


def test_tagged_template_renders_and_masks_as_transformers(models):
    hf = hf_tokenizer(models['tagged'])
    ours = chat_templates.load_chat(models['tagged'])
    assert ours['generation_tags'] and ours['end_of_turn'] == '<|im_end|>'
    assert ours['pad_token_id'] == hf.pad_token_id and ours['special_tokens'] == hf.special_tokens_map
    for conversation in CONVERSATIONS:
        expected = hf.apply_chat_template(conversation, tokenize=True, return_dict=True,
                                          return_assistant_tokens_mask=True)
        text = hf.apply_chat_template(conversation, tokenize=False)
        assert chat_templates.render_chat(ours, chat_templates.chat_messages(conversation, 'test'))[0] == text
        ids, mask = chat_templates.encode_chat(ours, conversation)
        want = np.array(expected['assistant_masks'], dtype=np.uint8)
        want[0] = 0  # an example's first token never carries loss
        assert ids.tolist() == expected['input_ids'] and mask.tolist() == want.tolist() and want.any()
        # the prefix method, tags ignored: the same mask, as the tags end right after the end-of-turn token
        assert chat_templates.encode_chat(ours, conversation, use_tags=False)[1].tolist() == want.tolist()
        _, everything = chat_templates.encode_chat(ours, conversation, loss_on='all')
        assert everything.tolist() == [0] + [1] * (len(ids) - 1)
        _, last = chat_templates.encode_chat(ours, conversation, loss_on='last_assistant')
        last_turn = conversation[-1]['content'] + '<|im_end|>'
        assert last.sum() and ours['tokenizer'].decode(ids[last == 1].tolist(), skip_special_tokens=False) == \
            last_turn


def test_tags_around_the_content_only_mask_what_transformers_masks(models, tmp_path):
    content_only = TAGGED.replace("{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}",
                                  "{% generation %}{{ message['content'] }}{% endgeneration %}{{ '<|im_end|>' }}")
    assert content_only != TAGGED
    (tmp_path / 'content_only.jinja').write_text(content_only)
    hf = hf_tokenizer(models['tagged'])
    ours = chat_templates.load_chat(models['tagged'], chat_template=str(tmp_path / 'content_only.jinja'))
    for conversation in CONVERSATIONS:
        expected = hf.apply_chat_template(conversation, chat_template=content_only, tokenize=True, return_dict=True,
                                          return_assistant_tokens_mask=True)
        ids, mask = chat_templates.encode_chat(ours, conversation)
        assert ids.tolist() == expected['input_ids'] and mask.tolist() == [0] + expected['assistant_masks'][1:]


def test_the_environment_matches_transformers_including_today_for_strftime_now(models):
    hf = hf_tokenizer(models['tagged'])
    many = [dict(role='user', content=str(i)) for i in range(120)]  # > 50 turns: loop controls; > 99: the date
    today = datetime.date.today().isoformat()
    for date in (today, '2020-02-29'):
        ours = chat_templates.load_chat(models['tagged'], date=date)
        rendered, _ = chat_templates.render_chat(ours, many, add_generation_prompt=True)
        assert 'user\n50<' in rendered and 'user\n51<' not in rendered  # {% break %}
        assert rendered.endswith(datetime.date.fromisoformat(date).strftime('%d %b %Y'))
        if date == today:  # transformers binds strftime_now to the current date
            assert rendered == hf.apply_chat_template(many, tokenize=False, add_generation_prompt=True)


def test_llama_style_template_renders_as_transformers_and_masks_each_turn_and_its_end_of_turn(models):
    hf = hf_tokenizer(models['llama'])
    ours = chat_templates.load_chat(models['llama'])
    assert not ours['generation_tags'] and ours['end_of_turn'] == '<|eot_id|>'
    assert ours['pad_token_id'] == ours['eot_token']  # no pad token: the end-of-sequence id
    decode = lambda ids: ours['tokenizer'].decode(ids.tolist(), skip_special_tokens=False)
    for conversation in CONVERSATIONS:
        ids, mask = chat_templates.encode_chat(ours, conversation)
        assert ids.tolist() == hf.apply_chat_template(conversation, tokenize=True, return_dict=True)['input_ids']
        starts = np.flatnonzero(np.diff(np.concatenate([[0], mask])) == 1)
        ends = np.flatnonzero(np.diff(np.concatenate([mask, [0]])) == -1) + 1
        turns = [decode(ids[a:b]) for a, b in zip(starts, ends)]
        assert turns == [m['content'].strip() + '<|eot_id|>' for m in conversation if m['role'] == 'assistant']


def write_jsonl(path, records):
    with open(path, 'w', encoding='utf-8') as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + '\n')
    return str(path)


def corpus(n=40, seed=0):
    """Conversations of varied lengths: short ones that pack several to a window, long ones that are truncated, and
    some with no assistant turn (dropped)."""
    rng = np.random.default_rng(seed)
    words = 'the of a is in to and ü 日本 ✓'.split()
    records = []
    for i in range(n):
        say = lambda k: ' '.join(rng.choice(words, k))
        turns = [dict(role='user', content=f'q{i} ' + say(int(rng.integers(1, 6))))]
        if i % 9 != 4:
            turns.append(dict(role='assistant', content=say(int(rng.integers(1, 40 if i % 7 == 3 else 8)))))
        records.append(dict(messages=turns))
    return records


def windows(out, split, meta):
    size = meta['window_stride']
    ids = np.fromfile(os.path.join(out, f'{split}.bin'), dtype=meta['dtype'])
    mask = np.fromfile(os.path.join(out, f'{split}.mask.bin'), dtype=np.uint8)
    starts = np.fromfile(os.path.join(out, f'{split}.starts.bin'), dtype=np.uint8)
    assert len(ids) == len(mask) == len(starts) and len(ids) % size == 0 and len(ids) == meta[split]['tokens']
    return ids.reshape(-1, size), mask.reshape(-1, size), starts.reshape(-1, size)


def test_packing_into_windows_with_masks_and_starts(models, tmp_path):
    block_size = 63
    records = corpus()
    data = write_jsonl(tmp_path / 'chats.jsonl', records)
    out = str(tmp_path / 'out')
    argv = ['--format=chat', '--input', data, '--tokenizer', models['llama'], f'--block_size={block_size}',
            '--val_tokens=120', '--out', out]
    local.main(argv)
    meta = json.load(open(os.path.join(out, 'meta.json')))
    assert meta['format'] == 'chat' and meta['block_size'] == block_size and meta['window_stride'] == block_size + 1
    assert meta['loss_on'] == 'assistant' and meta['end_of_turn'] == '<|eot_id|>' and meta['date'] == '2024-07-26'
    ours = chat_templates.load_chat(models['llama'])
    assert meta['pad_token_id'] == ours['pad_token_id'] and meta['chat_template_sha256'] == ours['template_sha256']
    expected = [chat_templates.encode_chat(ours, r['messages']) for r in records]
    kept = [(ids[:block_size + 1], mask[:block_size + 1]) for ids, mask in expected if mask[:block_size + 1].any()]
    found = []
    for split in ('val', 'train'):  # val is the first conversations, train the rest
        ids, mask, starts = windows(out, split, meta)
        counts = meta['counts'][split]
        assert counts['windows'] == len(ids) and counts['loss_tokens'] == int(mask.sum())
        assert (starts[:, 0] == 1).all()
        examples = []
        for w in range(len(ids)):  # segments: kept examples have a loss token; padding (last, if any) has none
            bounds = list(np.flatnonzero(starts[w])) + [block_size + 1]
            segments = [(ids[w, a:b], mask[w, a:b]) for a, b in zip(bounds, bounds[1:])]
            if not segments[-1][1].any():
                assert len(segments) > 1 and (segments[-1][0] == meta['pad_token_id']).all()
                segments = segments[:-1]
            assert all(m.any() for _, m in segments)
            examples += segments
        assert not mask[starts == 1].any()  # no loss on an example's first token, nor on padding
        assert len(examples) == counts['examples']
        found += examples
    # every kept example is in some window, whole (or truncated to a window); packing moved none of them across
    key = lambda e: (e[0].tolist(), e[1].tolist())
    assert sorted(map(key, found)) == sorted(map(key, kept))
    total = meta['counts']['train']['dropped'] + meta['counts']['val']['dropped']
    assert total == sum(1 for r in records if len(r['messages']) == 1) == 4
    assert meta['counts']['train']['truncated'] + meta['counts']['val']['truncated'] == \
        sum(1 for ids, mask in expected if len(ids) > block_size + 1 and mask[:block_size + 1].any()) > 0
    assert meta['counts']['train']['windows'] < meta['counts']['train']['examples']  # short ones share windows
    before = {f: open(os.path.join(out, f), 'rb').read() for f in os.listdir(out) if f.endswith('.bin')}
    local.main(argv + ['--force'])  # deterministic
    assert before == {f: open(os.path.join(out, f), 'rb').read() for f in os.listdir(out) if f.endswith('.bin')}


def test_sharegpt_json_array_and_parquet_inputs_give_the_same_source(models, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    records = corpus(12, seed=1)
    roles = {v: k for k, v in chat.SHAREGPT_ROLES.items()}
    sharegpt = [dict(conversations=[{'from': roles[m['role']], 'value': m['content'], 'weight': None}
                                    for m in r['messages']]) for r in records]
    inputs = dict(jsonl=write_jsonl(tmp_path / 'a.jsonl', records), sharegpt=write_jsonl(tmp_path / 'b.jsonl',
                                                                                          sharegpt))
    inputs['json'] = str(tmp_path / 'c.json')
    with open(inputs['json'], 'w') as f:
        json.dump([dict(turns=r['messages']) for r in records], f)
    inputs['parquet'] = str(tmp_path / 'd.parquet')
    pq.write_table(pa.Table.from_pylist(records), inputs['parquet'])
    made = {}
    for name, path in inputs.items():
        out = str(tmp_path / name)
        local.main(['--format=chat', '--input', path, '--tokenizer', models['tagged'], '--block_size=40',
                    '--val_tokens=60', '--out', out, '--loss_on=last_assistant',
                    *(['--messages_field=turns'] if name == 'json' else [])])
        made[name] = {f: open(os.path.join(out, f), 'rb').read() for f in sorted(os.listdir(out)) if 'bin' in f}
    assert made['jsonl'] == made['sharegpt'] == made['json'] == made['parquet']


def test_hub_chat_streams_openhermes_with_a_stand_in(models, tmp_path, monkeypatch):
    records = corpus(10, seed=2)
    roles = {v: k for k, v in chat.SHAREGPT_ROLES.items()}
    rows = [[{'from': roles[m['role']], 'value': m['content'], 'weight': None} for m in r['messages']]
            for r in records]
    calls = []

    def stand_in(path, **kwargs):
        calls.append((path, kwargs))
        return datasets.Dataset.from_dict({'conversations': rows, 'source': ['x'] * len(rows)}).to_iterable_dataset()

    monkeypatch.setattr(datasets, 'load_dataset', stand_in)
    monkeypatch.setattr(datasets.config, 'TORCH_AVAILABLE', datasets.config.TORCH_AVAILABLE)
    monkeypatch.setattr(datasets.config, 'HF_UPDATE_DOWNLOAD_COUNTS', datasets.config.HF_UPDATE_DOWNLOAD_COUNTS)
    out, reference = str(tmp_path / 'hub'), str(tmp_path / 'local')
    monkeypatch.setattr(sys, 'argv', ['prepare/hub_chat.py', '--tokenizer', models['llama'], '--block_size=40',
                                      '--val_tokens=60', '--out', out])
    runpy.run_path(os.path.join(ROOT, 'prepare', 'hub_chat.py'), run_name='__main__')
    assert calls == [('teknium/OpenHermes-2.5', dict(split='train', streaming=True, revision='main'))]
    local.main(['--format=chat', '--input', write_jsonl(tmp_path / 'r.jsonl', records), '--tokenizer',
                models['llama'], '--block_size=40', '--val_tokens=60', '--out', reference])
    for f in ('train.bin', 'val.bin', 'train.mask.bin', 'train.starts.bin'):
        assert open(os.path.join(out, f), 'rb').read() == open(os.path.join(reference, f), 'rb').read()
    meta = json.load(open(os.path.join(out, 'meta.json')))
    assert meta['source']['hub'] == 'teknium/OpenHermes-2.5' and meta['source']['revision'] == 'main'


def test_hub_chat_takes_another_dataset_with_a_validation_split(models, tmp_path, monkeypatch):
    calls = []

    def stand_in(path, split, **kwargs):
        calls.append((path, split, kwargs))
        rows = [[dict(role='user', content=f'{split} {i}'), dict(role='assistant', content=f'answer {i}')]
                for i in range(6)]
        return datasets.Dataset.from_dict({'messages': rows}).to_iterable_dataset()

    monkeypatch.setattr(datasets, 'load_dataset', stand_in)
    monkeypatch.setattr(datasets.config, 'TORCH_AVAILABLE', datasets.config.TORCH_AVAILABLE)
    monkeypatch.setattr(datasets.config, 'HF_UPDATE_DOWNLOAD_COUNTS', datasets.config.HF_UPDATE_DOWNLOAD_COUNTS)
    out = str(tmp_path / 'uc')
    monkeypatch.setattr(sys, 'argv', ['prepare/hub_chat.py', '--dataset', 'HuggingFaceH4/ultrachat_200k', '--split',
                                      'train_sft', '--val_split', 'test_sft', '--tokenizer', models['llama'],
                                      '--block_size=40', '--val_tokens=30', '--out', out])
    runpy.run_path(os.path.join(ROOT, 'prepare', 'hub_chat.py'), run_name='__main__')
    assert [c[:2] for c in calls] == [('HuggingFaceH4/ultrachat_200k', 'test_sft'),
                                      ('HuggingFaceH4/ultrachat_200k', 'train_sft')]
    meta = json.load(open(os.path.join(out, 'meta.json')))
    decode = chat_templates.load_chat(models['llama'])['tokenizer'].decode
    val = np.fromfile(os.path.join(out, 'val.bin'), dtype=meta['dtype']).tolist()
    assert 'test_sft 0' in decode(val) and 'train_sft' not in decode(val)
    assert meta['counts']['train']['examples'] == 6 and 0 < meta['counts']['val']['examples'] < 6


NOT_PREFIX_STABLE = "{{ messages | length }}{% for m in messages %}|{{ m['role'] }}:{{ m['content'] }}<|eot_id|>{% endfor %}"


@pytest.mark.parametrize('records, model, extra, message', [
    ([dict(messages='hello')], 'llama', [], 'chats.jsonl:1: a conversation must be a list of turns'),
    ([dict(messages=[dict(role='user', content='a'), dict(content='b')])], 'llama', [], 'turn 1 has no role'),
    ([dict(messages=[dict(role='user')])], 'llama', [], 'turn 0 has no content'),
    ([dict(messages=[dict(role='user', content='a')]), dict(messages=[dict(role='tool', content='b')])], 'llama', [],
     "chats.jsonl:2: the chat template refused it (TemplateError: Unknown role: tool)"),
    ([dict(messages=[dict(role='user', content='a'), dict(role='assistant', content='b')])], 'none', [],
     'has no chat template'),
    ([dict(messages=[dict(role='user', content='a'), dict(role='assistant', content='b')])], 'llama',
     ['--chat_template=NOT_PREFIX_STABLE'], 'chats.jsonl:1: the chat template is not prefix-stable'),
    ([dict(messages=[dict(role='user', content='a')])] * 3, 'llama', [],
     'no example to train on: all 3 example(s) have no loss token under --loss_on=assistant'),
    ([dict(conversations=[{'from': 'bot', 'value': 'x'}])], 'llama', [], "ShareGPT turn 0 is from 'bot'"),
    ([dict(text='x')], 'llama', [], "has neither 'messages' nor 'conversations'"),
    ([dict(text='x')], 'llama', ['--messages_field=conversations'], "chats.jsonl:1 has no 'conversations'"),
    ([dict(messages=[dict(role='user', content=[dict(type='text', text='hi')])])], 'llama', [],
     'chats.jsonl:1: turn 0 has a content that is a list, not text (content parts: join their text'),
    ([dict(messages=[dict(role='user', content={'a': 1})])], 'llama', [], 'turn 0 has a content that is a dict'),
    ([dict(messages=[dict(role='user', content=5)])], 'llama', [], 'turn 0 has a content that is an int, not text'),
    ([dict(conversations=[{'from': 'human', 'value': 5}])], 'llama', [], 'turn 0 has a content that is an int'),
    ([dict(messages=[dict(role=5, content='a')])], 'llama', [], 'turn 0 has a role that is an int, not text'),
    ([dict(messages=[dict(role='user', content='a')])], 'llama', ['--block_size=100000000000'],
     '--block_size 100,000,000,000 is beyond the 1,048,576 (2**20) tokens'),
    ([dict(messages=[dict(role='user', content='a')])], 'llama', ['--chat_template=NOT_UTF8'],
     'latin1.jinja is not UTF-8 text (invalid continuation byte at byte 4)'),
])
def test_bad_inputs_are_one_line_and_write_nothing(models, tmp_path, records, model, extra, message):
    template = tmp_path / 'unstable.jinja'
    template.write_text(NOT_PREFIX_STABLE)
    (tmp_path / 'latin1.jinja').write_bytes('{{ "é" }}'.encode('latin-1'))
    extra = [e.replace('NOT_PREFIX_STABLE', str(template)).replace('NOT_UTF8', str(tmp_path / 'latin1.jinja'))
             for e in extra]
    out = tmp_path / 'out'
    argv = ['--format=chat', '--input', write_jsonl(tmp_path / 'chats.jsonl', records), '--tokenizer',
            models[model], '--block_size=32', '--out', str(out), *extra]
    with pytest.raises(UserError) as e:
        local.main(argv)
    assert message in str(e.value) and '\n' not in str(e.value)
    assert not out.exists()


def test_errors_exit_2_with_one_line_and_keep_an_earlier_output(models, tmp_path):
    out = str(tmp_path / 'out')
    good = write_jsonl(tmp_path / 'good.jsonl', corpus(8))
    local.main(['--format=chat', '--input', good, '--tokenizer', models['llama'], '--block_size=32', '--out', out])
    before = {f: open(os.path.join(out, f), 'rb').read() for f in os.listdir(out)}
    bad = write_jsonl(tmp_path / 'bad.jsonl', corpus(8)[:5] + [dict(messages=[dict(role='user')])])
    for args in (['--input', good, '--tokenizer', models['llama']],
                 ['--input', good, '--tokenizer', models['llama'], '--block_size=0']):
        with pytest.raises(UserError):
            local.main(['--format=chat', *args, '--out', out, '--force'])
    r = subprocess.run([sys.executable, 'prepare/local.py', '--format=chat', '--input', bad, '--tokenizer',
                        models['llama'], '--block_size=32', '--out', out, '--force'],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith(f'error: {bad}:6: turn 0 has no content') and \
        r.stderr.count('\n') == 1, r.stderr
    assert before == {f: open(os.path.join(out, f), 'rb').read() for f in os.listdir(out)}
    with pytest.raises(UserError, match='--block_size only apply with --format=chat'):
        local.main(['--input', good, '--out', str(tmp_path / 't'), '--block_size=32'])


def test_tiny_model_has_a_chat_template_transformers_uses(tmp_path):
    out = str(tmp_path / 'tiny')
    tok, config = tiny_model.make_tokenizer('llama', vocab_size=280, texts=tiny_model.training_texts()[:8])
    tiny_model.save_tokenizer(out, tok, config)
    assert os.path.isfile(os.path.join(out, 'chat_template.jinja'))
    conversation = [dict(role='user', content='Hi'), dict(role='assistant', content='Hello')]
    hf = hf_tokenizer(out)
    text = hf.apply_chat_template(conversation, tokenize=False, add_generation_prompt=False)
    assert text == ('<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>'
                    '<|start_header_id|>assistant<|end_header_id|>\n\nHello<|eot_id|>')
    assert hf.convert_tokens_to_ids('<|eot_id|>') != hf.eos_token_id


def test_chat_template_jinja_comes_before_tokenizer_config_and_an_override_before_both(models, tmp_path):
    import shutil
    both = str(tmp_path / 'both')
    shutil.copytree(models['tagged'], both)  # TAGGED in tokenizer_config.json
    shutil.copy(os.path.join(models['llama'], 'chat_template.jinja'), both)
    assert chat_templates.load_chat(both)['template_text'] == tiny_model.CHAT_TEMPLATE
    override = tmp_path / 'override.jinja'
    override.write_text(TAGGED)
    chosen = chat_templates.load_chat(both, chat_template=str(override))
    assert chosen['template_text'] == TAGGED and chosen['template_source'] == str(override)


@pytest.mark.parametrize('file, text, message', [
    ('tokenizer_config.json', '[1, 2]', 'tokenizer_config.json is not a JSON object'),
    ('tokenizer_config.json', '{"eos_token": 5}', 'tokenizer_config.json: eos_token is 5, not a token'),
    ('config.json', '[1]', 'config.json is not a JSON object'),  # no eos_token: config.json is read for it
])
def test_a_bad_model_directory_file_is_one_line_naming_it(models, tmp_path, file, text, message):
    import shutil
    import tokenizer
    model = str(tmp_path / 'model')
    shutil.copytree(models['llama'], model)
    if file == 'config.json':
        with open(os.path.join(model, 'tokenizer_config.json'), 'w') as f:
            json.dump({}, f)
    with open(os.path.join(model, file), 'w') as f:
        f.write(text)
    with pytest.raises(UserError, match=message) as e:
        tokenizer.get_tokenizer(model)
    assert os.path.join(model, file) in str(e.value) and '\n' not in str(e.value)
    with pytest.raises(UserError, match='is a file, not a directory'):
        tokenizer.get_tokenizer(os.path.join(models['llama'], 'tokenizer.json'))


def test_a_text_rebuild_of_a_chat_source_removes_its_masks_and_invalid_utf8_is_reported(models, tmp_path, capsys):
    out, chats = str(tmp_path / 'out'), tmp_path / 'chats.jsonl'
    records = [json.dumps(r) for r in corpus(8)]
    bad = '\n'.join(records).replace('"content": "', '"content": "\udcff', 1)  # one invalid byte, 0xff
    chats.write_bytes(bad.encode('utf-8', 'surrogateescape'))
    local.main(['--format=chat', '--input', str(chats), '--tokenizer', models['llama'], '--block_size=32',
                '--out', out])
    assert json.load(open(os.path.join(out, 'meta.json')))['utf8_replaced'] == 1
    assert 'warning: replaced 1 invalid UTF-8 sequence(s) with U+FFFD' in capsys.readouterr().err
    assert 'train.mask.bin' in os.listdir(out)
    text = write_jsonl(tmp_path / 'text.jsonl', [dict(text=f'document {i}') for i in range(4)])
    local.main(['--input', text, '--tokenizer', 'bytes', '--val_tokens=1', '--workers=1', '--out', out])
    assert sorted(os.listdir(out)) == ['meta.json', 'train.bin', 'val.bin']


def test_tiny_model_interrupted_leaves_nothing_and_a_rerun_works(tmp_path, monkeypatch):
    real = tiny_model.make_tokenizer
    monkeypatch.setattr(tiny_model, 'make_tokenizer', lambda arch: real(arch, 280, tiny_model.training_texts()[:4]))

    def interrupted(*args):
        raise KeyboardInterrupt
    out = tmp_path / 'models' / 'tiny'
    monkeypatch.setattr(tiny_model, 'save_tokenizer', interrupted)  # after the weights are written
    with pytest.raises(KeyboardInterrupt):
        tiny_model.main(['--out', str(out)])
    assert os.listdir(tmp_path / 'models') == []
    monkeypatch.undo()
    monkeypatch.setattr(tiny_model, 'make_tokenizer', lambda arch: real(arch, 280, tiny_model.training_texts()[:4]))
    out.mkdir()  # an empty --out is fine, and replaced whole
    tiny_model.main(['--out', str(out)])
    assert {'config.json', 'model.safetensors', 'tokenizer.json'} <= set(os.listdir(out))
    assert os.listdir(tmp_path / 'models') == ['tiny'] and oct(out.stat().st_mode & 0o777) != '0o700'


# ---- inputs and templates that used to slip through: one line each, and nothing on disk ----------------------

CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
MACRO_TAGS = ("{% macro turn(m) %}<|im_start|>{{ m.role }}\n{% if m.role == 'assistant' %}{% generation %}"
              "{{ m.content }}<|im_end|>{% endgeneration %}{% else %}{{ m.content }}<|im_end|>{% endif %}\n"
              "{% endmacro %}{% for m in messages %}{{ turn(m) }}{% endfor %}")
SET_BLOCK_TAGS = ("{% for m in messages %}{% if m.role == 'assistant' %}{% set body %}{% generation %}{{ m.content }}"
                  "<|im_end|>{% endgeneration %}{% endset %}<|im_start|>assistant\n{{ body }}\n{% else %}"
                  "<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endif %}{% endfor %}")


def chat_argv(model, out, *inputs, extra=()):
    return ['--format=chat', '--input', *map(str, inputs), '--tokenizer', model, '--block_size=32',
            '--val_tokens=60', '--out', str(out), *extra]


def binaries(out):
    return {f: open(os.path.join(out, f), 'rb').read() for f in sorted(os.listdir(out)) if 'bin' in f}


def refused(argv, tmp_path):
    """The UserError of local.main(argv), whose --out is under tmp_path/nest/ (not there before): checks that the
    message is one line and that the failed run left nothing, not even the parents it made."""
    assert not (tmp_path / 'nest').exists()
    with pytest.raises(UserError) as e:
        local.main(argv)
    assert '\n' not in str(e.value) and not (tmp_path / 'nest').exists()
    return str(e.value)


def test_one_file_under_two_spellings_is_read_once(models, tmp_path, capsys):
    data = write_jsonl(tmp_path / 'chats.jsonl', corpus(12))
    other = os.path.join(str(tmp_path), '..', tmp_path.name, 'chats.jsonl')
    os.symlink(data, tmp_path / 'link.jsonl')
    local.main(chat_argv(models['llama'], tmp_path / 'once', data))
    local.main(chat_argv(models['llama'], tmp_path / 'thrice', data, other, tmp_path / 'link.jsonl'))
    err = capsys.readouterr().err
    assert f'warning: --input {other} is the same file as {data}: read once' in err
    assert binaries(tmp_path / 'once') == binaries(tmp_path / 'thrice')  # no val conversation in train too
    assert [f['path'] for f in json.load(open(tmp_path / 'thrice' / 'meta.json'))['source']['files']] == [data]


@pytest.mark.parametrize('val_split, message', [
    ('train', '--val_split train is --split itself: its conversations would be in val and in train'),
    ('empty', 'the validation split has no examples (--val_split empty of x/y is empty): val.bin would be empty, '
              'which train.py refuses; pass another --val_split'),
    ('prompts', 'the validation split has no example with a loss token under --loss_on=assistant (none of the 3 of '
                '--val_split prompts has one)'),
])
def test_hub_chat_refuses_a_val_split_that_is_train_or_gives_no_example(models, tmp_path, monkeypatch, val_split,
                                                                        message):
    import hub_chat

    def stand_in(path, split, **kwargs):
        rows = dict(empty=0, prompts=3).get(split, 6)
        reply = [] if split == 'prompts' else [dict(role='assistant', content='an answer')]
        return iter([dict(messages=[dict(role='user', content=f'{split} {i}')] + reply) for i in range(rows)])

    monkeypatch.setattr(datasets, 'load_dataset', stand_in)
    monkeypatch.setattr(datasets.config, 'TORCH_AVAILABLE', datasets.config.TORCH_AVAILABLE)
    monkeypatch.setattr(datasets.config, 'HF_UPDATE_DOWNLOAD_COUNTS', datasets.config.HF_UPDATE_DOWNLOAD_COUNTS)
    out = tmp_path / 'nest' / 'out'
    with pytest.raises(UserError) as e:
        hub_chat.main(['--dataset', 'x/y', '--split', 'train', '--val_split', val_split, '--tokenizer',
                       models['llama'], '--block_size=40', '--val_tokens=30', '--out', str(out)])
    assert message in str(e.value) and not (tmp_path / 'nest').exists()


def test_a_template_that_ignores_add_generation_prompt_warns_once_and_keeps_the_mask(models, tmp_path, capsys):
    template = tmp_path / 'no_prompt.jinja'
    template.write_text(CHATML[:CHATML.index('{% if add_generation_prompt')])
    data = write_jsonl(tmp_path / 'chats.jsonl', corpus(12))
    local.main(chat_argv(models['tagged'], tmp_path / 'out', data, extra=['--chat_template', str(template)]))
    warnings = [line for line in capsys.readouterr().err.splitlines() if 'add_generation_prompt' in line]
    assert warnings == [f'warning: {template} ignores add_generation_prompt (it renders a conversation the same with '
                        f"and without it), so each assistant turn's role header is trained on as part of the reply; "
                        f'to avoid it, use a template that writes a generation prompt, or one with '
                        f'{{% generation %}} tags (--chat_template=FILE)']
    ours = chat_templates.load_chat(models['tagged'], chat_template=str(template))
    ids, mask = chat_templates.encode_chat(ours, [dict(role='user', content='Hi'), dict(role='assistant',
                                                                                        content='Hello')])
    # the mask stays what the prefix method gives: the header in it
    assert ours['tokenizer'].decode(ids[mask == 1].tolist(), skip_special_tokens=False) == \
        '<|im_start|>assistant\nHello<|im_end|>'
    local.main(chat_argv(models['llama'], tmp_path / 'llama', data))  # a template with a generation prompt
    assert 'add_generation_prompt' not in capsys.readouterr().err


@pytest.mark.parametrize('template', [MACRO_TAGS, SET_BLOCK_TAGS], ids=['macro', 'set_block'])
def test_generation_tags_transformers_counts_from_the_wrong_place_are_refused(models, tmp_path, template):
    path = tmp_path / 'tags.jinja'
    path.write_text(template)
    conversation = [dict(role='user', content='Hi'), dict(role='assistant', content='Hello there')]
    hf = hf_tokenizer(models['tagged'])
    expected = hf.apply_chat_template(conversation, chat_template=template, tokenize=True, return_dict=True,
                                      return_assistant_tokens_mask=True)
    masked = [i for i, m in zip(expected['input_ids'], expected['assistant_masks']) if m]
    assert 'Hello there' not in hf.decode(masked)  # transformers' mask misses the reply: why it is refused
    ours = chat_templates.load_chat(models['tagged'], chat_template=str(path))
    with pytest.raises(UserError, match=r'^x:1: the \{% generation %\} tags of .*tags.jinja do not mark the reply: '
                                        r"they wrap 'Hello there<\|im_end\|>'"):
        chat_templates.encode_chat(ours, conversation, where='x:1')
    ids, _ = chat_templates.encode_chat(ours, conversation, loss_on='all')  # tags play no part there
    assert ids.tolist() == expected['input_ids']


@pytest.mark.parametrize('eos', [600, 70000, -1])
def test_an_eos_token_id_outside_the_vocabulary_is_one_line_before_anything_is_written(models, tmp_path, eos):
    import shutil
    model = str(tmp_path / 'model')
    shutil.copytree(models['llama'], model)
    with open(os.path.join(model, 'tokenizer_config.json')) as f:
        config = {k: v for k, v in json.load(f).items() if k != 'eos_token'}  # config.json's id is read instead
    with open(os.path.join(model, 'tokenizer_config.json'), 'w') as f:
        json.dump(config, f)
    with open(os.path.join(model, 'config.json'), 'w') as f:
        json.dump(dict(eos_token_id=eos), f)
    message = f'{model}/config.json: eos_token_id {eos} is not a token of {model}/tokenizer.json (its ids are 0 to '
    chats = write_jsonl(tmp_path / 'chats.jsonl', corpus(8))
    assert message in refused(chat_argv(model, tmp_path / 'nest' / 'out', chats), tmp_path)
    text = write_jsonl(tmp_path / 'text.jsonl', [dict(text='a document')] * 4)
    assert message in refused(['--input', text, '--tokenizer', model, '--val_tokens=1', '--workers=1', '--out',
                               str(tmp_path / 'nest' / 'out')], tmp_path)


def test_a_lone_surrogate_is_one_line_naming_its_line(models, tmp_path):
    data = tmp_path / 'chats.jsonl'
    data.write_text(json.dumps(corpus(1)[0]) + '\n' +
                    '{"messages": [{"role": "user", "content": "a\\ud800b"}, {"role": "assistant", "content": "x"}]}\n')
    assert refused(chat_argv(models['llama'], tmp_path / 'nest' / 'out', data), tmp_path).startswith(
        f'{data}:2: the conversation holds a lone surrogate (U+D800, a JSON \\u escape that is half of a pair)')


def test_corrupt_compressed_inputs_give_the_text_modes_line_in_chat_mode(models, tmp_path):
    import bz2
    import gzip
    import lzma
    good = ''.join(json.dumps(r) + '\n' for r in corpus(40)).encode()
    inputs = {'fake.jsonl.gz': b'no gzip here'}
    for ext, module in (('gz', gzip), ('xz', lzma), ('bz2', bz2)):
        inputs[f'trunc.jsonl.{ext}'] = module.compress(good)[:-40]
    for name, data in inputs.items():
        (tmp_path / name).write_bytes(data)
        out = tmp_path / 'nest' / 'out'
        text = refused(['--input', str(tmp_path / name), '--tokenizer', 'bytes', '--workers=1', '--out', str(out)],
                       tmp_path)
        assert text.startswith(f'{tmp_path / name} cannot be read (')
        assert refused(chat_argv(models['llama'], out, tmp_path / name), tmp_path) == text


def test_json_nested_too_deeply_is_invalid_json(models, tmp_path):
    deep = '{"messages": ' + '[' * 100000 + ']' * 100000 + '}\n'
    lines = tmp_path / 'deep.jsonl'
    lines.write_text(json.dumps(corpus(1)[0]) + '\n' + deep)
    out = tmp_path / 'nest' / 'out'
    assert refused(chat_argv(models['llama'], out, lines), tmp_path) == \
        f'{lines}:2 is not valid JSON (nested too deeply)'
    array = tmp_path / 'deep.json'
    array.write_text('[' + deep + ']')
    assert refused(chat_argv(models['llama'], out, array), tmp_path) == f'{array} is not valid JSON (nested too deeply)'
    lines.write_text(deep.replace('messages', 'text'))  # text mode: its first record is checked before pyarrow reads
    assert refused(['--input', str(lines), '--tokenizer', 'bytes', '--workers=1', '--out', str(out)], tmp_path) == \
        f'{lines} is not valid JSON (its first record is nested too deeply)'


SYSTEM_FIRST = "{% if messages[0]['role'] != 'system' %}{{ raise_exception('need system first') }}{% endif %}" + CHATML


@pytest.mark.parametrize('template, message', [
    ('{{ messages[0].content.foo() }}' + CHATML,
     "the chat template refused it (UndefinedError: 'str object' has no attribute 'foo')"),
    ('{{ 1 / 0 }}' + CHATML, 'the chat template failed on it (ZeroDivisionError: division by zero)'),
    (SYSTEM_FIRST, 'the chat template refused it (TemplateError: need system first)'),
    ('{% if false %}x{% endif %}', 'the chat template renders nothing for it'),
])
def test_a_template_that_fails_the_end_of_turn_probe_says_how(models, tmp_path, template, message):
    path = tmp_path / 'probe.jinja'
    path.write_text(template)
    data = write_jsonl(tmp_path / 'chats.jsonl', corpus(8))
    assert refused(chat_argv(models['tagged'], tmp_path / 'nest' / 'out', data, extra=['--chat_template', str(path)]),
                   tmp_path) == (f"cannot tell the chat template's end-of-turn token: {path} failed on the "
                                 f"end-of-turn probe (a user 'Hi' and an assistant 'Hello'): {message}; pass "
                                 f"--end_of_turn=TOKEN, or fix the template")
    if template == SYSTEM_FIRST:  # data the template takes, with the token named: the hint works
        system = [dict(messages=[dict(role='system', content='Be brief.')] + r['messages']) for r in corpus(8)]
        local.main(chat_argv(models['tagged'], tmp_path / 'out', write_jsonl(tmp_path / 's.jsonl', system),
                             extra=['--chat_template', str(path), '--end_of_turn=<|im_end|>', '--block_size=256']))


def test_a_template_ending_in_no_special_token_and_empty_templates(models, tmp_path):
    import shutil
    data = write_jsonl(tmp_path / 'chats.jsonl', corpus(8))
    plain = tmp_path / 'plain.jinja'
    plain.write_text('{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}')
    assert refused(chat_argv(models['tagged'], tmp_path / 'nest' / 'out', data, extra=['--chat_template', str(plain)]),
                   tmp_path) == ("cannot tell the chat template's end-of-turn token (its rendering of a user 'Hi' and "
                                 "an assistant 'Hello' ends in no special token): pass --end_of_turn=TOKEN")
    empty = tmp_path / 'empty.jinja'
    empty.write_text(' \n')
    model = str(tmp_path / 'model')
    shutil.copytree(models['llama'], model)
    open(os.path.join(model, 'chat_template.jinja'), 'w').close()
    for argv, path in ((chat_argv(models['tagged'], tmp_path / 'nest' / 'out', data,
                                  extra=['--chat_template', str(empty)]), str(empty)),
                       (chat_argv(model, tmp_path / 'nest' / 'out', data), f'{model}/chat_template.jinja')):
        assert refused(argv, tmp_path) == (f'{path} is empty (a chat template file holds a jinja template): fill it '
                                           f'in or pass another --chat_template=FILE, or use --format=text')


def test_a_byte_order_mark_is_dropped_and_a_pretty_printed_object_asks_for_json_lines(models, tmp_path):
    import codecs
    records = corpus(12)
    plain = write_jsonl(tmp_path / 'plain.jsonl', records)
    (tmp_path / 'bom.jsonl').write_bytes(codecs.BOM_UTF8 + open(plain, 'rb').read())
    (tmp_path / 'bom.json').write_bytes(codecs.BOM_UTF8 + json.dumps(records).encode())
    made = []
    for name in ('plain.jsonl', 'bom.jsonl', 'bom.json'):
        local.main(chat_argv(models['llama'], tmp_path / name.replace('.', '_'), tmp_path / name))
        made.append(binaries(tmp_path / name.replace('.', '_')))
    assert made[0] == made[1] == made[2]
    pretty = tmp_path / 'pretty.json'
    pretty.write_text(json.dumps(records[0], indent=2))
    assert refused(chat_argv(models['llama'], tmp_path / 'nest' / 'out', pretty), tmp_path) == (
        f'{pretty}:1 is not valid JSON (Expecting property name enclosed in double quotes: line 2 column 1 (char 2)): '
        f'the file looks like one JSON document spread over several lines, but a JSON input must have one JSON object '
        f'per line (JSON Lines), or be a JSON array')
