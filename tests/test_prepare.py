"""prepare/: formats, the by-document val split, atomic output, tokenizers (gpt2 offline too), bad inputs, and the
Hub scripts up to their `datasets` call (a local stand-in replaces datasets.load_dataset: no network here).
Scripts run as subprocesses where the whole command is the point (exit status, one-line errors, offline gpt2);
the rest call them in-process, which is faster and shows the details."""
import gzip
import hashlib
import json
import os
import platform
import random
import re
import runpy
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PREPARE = os.path.join(ROOT, 'prepare')

import datasets  # noqa: E402

import common  # noqa: E402
import demo  # noqa: E402
import local  # noqa: E402
import tokenizer  # noqa: E402
from common import UserError  # noqa: E402
from tokenizer import EOT_TEXT  # noqa: E402


@pytest.fixture(autouse=True)
def isolated(tmp_path_factory, monkeypatch):
    """Every test: its own tiktoken cache (never the machine's), and datasets' config restored afterwards."""
    monkeypatch.setenv('TIKTOKEN_CACHE_DIR', str(tmp_path_factory.mktemp('tiktoken-cache')))
    for key in ('TORCH_AVAILABLE', 'HF_UPDATE_DOWNLOAD_COUNTS'):
        monkeypatch.setattr(datasets.config, key, getattr(datasets.config, key))


def run(script, *args, cwd=ROOT, env=None):
    return subprocess.run([sys.executable, os.path.join(PREPARE, script), *args], cwd=cwd, capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=120)


def load_tokens(out, split):
    """A split's tokens as a read-only memmap, dtype from meta.json (an empty split as an empty array)."""
    meta = common.read_meta(out)
    path = os.path.join(out, f'{split}.bin')
    if not os.path.getsize(path):
        return np.zeros(0, dtype=meta['dtype'])
    return np.memmap(path, dtype=meta['dtype'], mode='r')


def decoded(out, split):
    meta = common.read_meta(out)
    return tokenizer.get_tokenizer(meta['tokenizer'])['decode'](load_tokens(out, split))


def joined(docs):
    return ''.join(d + EOT_TEXT for d in docs)


def write_jsonl(path, records, opener=open):
    with opener(path, 'wt', encoding='utf-8') as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + '\n')
    return str(path)


def prepare(docs, out, **kwargs):
    kwargs = {'tokenizer': 'bytes', **kwargs}
    return common.prepare_source(iter(docs), str(out), dict(test=True), 'tests/test_prepare.py', [], **kwargs)


# ---- demo.py -------------------------------------------------------------------------------------------------

def test_demo_builds_both_sources_offline_and_reruns_as_a_no_op(tmp_path):
    r = run('demo.py', cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert '100%' in final_bar(r.stderr)  # the demo knows its size: the bar has a total, so an ETA
    generic, target = (common.read_meta(tmp_path / 'data' / d) for d in ('demo_generic', 'demo_target'))
    for meta in (generic, target):
        assert (meta['tokenizer'], meta['vocab_size'], meta['eot_token'], meta['dtype']) == \
            ('bytes', 257, 256, 'uint16')
        assert meta['source']['python'] == platform.python_version()
        assert meta['val']['tokens'] >= 65536 and meta['val']['documents'] >= 1
    assert generic['train']['tokens'] >= 3_000_000
    assert target['train']['documents'] + target['val']['documents'] == len(demo.target_documents()[0])
    # val and train are whole documents: the target's decode is its shuffled topics, each followed by EOT
    docs = demo.target_documents()[0]
    random.Random(demo.SEED).shuffle(docs)
    out = tmp_path / 'data' / 'demo_target'
    assert decoded(out, 'val') + decoded(out, 'train') == joined(t for _, t in docs)
    files = {p: p.read_bytes() for p in (tmp_path / 'data').glob('*/*.bin')}
    again = run('demo.py', cwd=tmp_path)
    assert again.returncode == 0 and again.stdout.count('nothing to do') == 2
    assert run('demo.py', '--force', cwd=tmp_path).returncode == 0  # rebuilt: the same bytes (deterministic)
    assert {p: p.read_bytes() for p in (tmp_path / 'data').glob('*/*.bin')} == files


def test_demo_takes_gpt2(tmp_path):
    r = run('demo.py', '--tokenizer', 'gpt2', '--max_tokens', '100K', '--generic_out', 'g', '--target_out', 't',
            '--workers', '1', cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    meta = common.read_meta(tmp_path / 'g')
    assert meta['vocab_size'] == 50257 and 100_000 <= meta['train']['tokens'] < 200_000
    assert meta['val']['tokens'] >= 16384 and common.read_meta(tmp_path / 't')['val']['tokens'] >= 16384


def test_demo_chat_writes_both_files_and_reruns_over_them(tmp_path):
    """Its outputs are files: a re-run replaces them (it was refused: '--target_out ... is a file, not a
    directory'), and a directory in their place is refused before anything is written."""
    for _ in range(2):
        r = run('demo_chat.py', cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    files = {name: (tmp_path / 'data' / f'demo_chat_{name}.jsonl').read_text().splitlines() for name in
             ('target', 'generic')}
    assert 'messages' in json.loads(files['target'][0]) and 'conversations' in json.loads(files['generic'][0])
    assert f"{len(files['target'])} conversations" in r.stdout and sorted(os.listdir(tmp_path / 'data')) == \
        ['demo_chat_generic.jsonl', 'demo_chat_target.jsonl']
    (tmp_path / 'dir').mkdir()
    r = run('demo_chat.py', '--target_out', 'dir', '--generic_out', 'g.jsonl', cwd=tmp_path)
    assert r.returncode == 2 and r.stderr == "error: --target_out='dir' is a directory, not a file\n", r.stderr
    assert sorted(os.listdir(tmp_path)) == ['data', 'dir'] and not os.listdir(tmp_path / 'dir')


def test_demo_target_text_is_not_in_the_generic_source():
    import sysconfig
    generic = {line.strip() for _, t in demo.generic_documents(sysconfig.get_paths()['stdlib'])[0]
               for line in t.splitlines()}
    prose = {line.strip() for _, t in demo.target_documents()[0] for line in t.splitlines()
             if len(line.strip()) >= 40 and re.search('[a-z]+ [a-z]+ [a-z]+', line)}
    assert len(prose) > 3000
    assert prose & generic == set()  # before pdb.py was left out, 10 of its docstring lines were here


# ---- local.py: formats and tokenizers --------------------------------------------------------------------------

def make_inputs(d):
    """One file per format; returns (paths in --input order, their documents in order)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    (d / 'a.txt').write_text('Alpha: the first file.\n\nIts second paragraph, same document.\n')
    docs = ['Alpha: the first file.\n\nIts second paragraph, same document.\n']
    jsonl = [{'text': 'JSON lines, café ☕ and 日本語.', 'id': 1},
             {'text': 'second line\nwith a newline', 'id': 2}]
    docs += [r['text'] for r in jsonl]
    array = [{'text': 'from a JSON array'}, {'text': 'its second element'}]
    (d / 'c.json').write_text(json.dumps(array))
    docs += [r['text'] for r in array]
    pq.write_table(pa.table({'text': ['parquet row one', 'parquet row two'], 'n': [1, 2]}), d / 'd.parquet')
    docs += ['parquet row one', 'parquet row two']
    gz = [{'text': 'gzipped JSON lines'}, {'text': 'the last document'}]
    docs += [r['text'] for r in gz]
    paths = [str(d / 'a.txt'), write_jsonl(d / 'b.jsonl', jsonl), str(d / 'c.json'), str(d / 'd.parquet'),
             write_jsonl(d / 'e.jsonl.gz', gz, gzip.open)]
    return paths, docs


def test_local_reads_every_format_in_order_and_round_trips(tmp_path):
    paths, docs = make_inputs(tmp_path)
    r = run('local.py', '--input', *paths, '--tokenizer', 'bytes', '--val_tokens', '70', '--out', 'data/x',
            '--workers', '2', cwd=tmp_path)  # 2: the input checks run in a process pool
    assert r.returncode == 0, r.stderr
    out = tmp_path / 'data' / 'x'
    meta = common.read_meta(out)
    assert meta['val']['documents'] == 2  # the 70th token is in the second document
    assert meta['train']['documents'] == len(docs) - 2
    assert decoded(out, 'val') == joined(docs[:2]) and decoded(out, 'train') == joined(docs[2:])
    assert 'local.py --input' in meta['command'] and meta['command'].endswith('--workers 2')
    assert sorted(os.listdir(out)) == ['meta.json', 'train.bin', 'val.bin']


def test_local_gpt2_example_from_the_readme_round_trips(tmp_path):
    docs = [f'Document {i}: some text, some numbers {i * 37}.' for i in range(40)]
    write_jsonl(tmp_path / 'some.jsonl', [{'text': t} for t in docs])
    r = run('local.py', '--input', 'some.jsonl', '--text_field', 'text', '--tokenizer', 'gpt2', '--out', 'data/x',
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert '100%' in final_bar(r.stderr)  # an uncompressed file's size is known: the bar has an ETA
    out = tmp_path / 'data' / 'x'
    meta = common.read_meta(out)
    assert (meta['vocab_size'], meta['eot_token'], meta['dtype']) == (50257, 50256, 'uint16')
    k = meta['val']['documents']  # small source: val is its first ~10% of tokens, said in notes
    assert 1 <= k < len(docs) and any('~10%' in n for n in meta['notes'])
    assert decoded(out, 'train') == joined(docs[k:]) and decoded(out, 'val') == joined(docs[:k])
    assert 'nothing to do' in run('local.py', '--input', 'some.jsonl', '--text_field', 'text', '--tokenizer', 'gpt2',
                                  '--out', 'data/x', cwd=tmp_path).stdout


def test_local_txt_paragraphs_directories_and_globs(tmp_path):
    (tmp_path / 'in').mkdir()
    (tmp_path / 'in' / 'b.txt').write_text('third\n\nfourth\n')
    (tmp_path / 'in' / 'a.txt').write_text('first block\nstill first\n\nsecond\n')
    for inputs in ([str(tmp_path / 'in')], [str(tmp_path / 'in' / '*.txt')]):
        out = tmp_path / f'out{len(inputs[0])}'
        local.main(['--input', *inputs, '--split_paragraphs', '--tokenizer', 'bytes', '--val_tokens', '1',
                    '--workers', '1', '--out', str(out)])
        assert decoded(out, 'val') + decoded(out, 'train') == joined(['first block\nstill first', 'second\n',
                                                                      'third', 'fourth\n'])


def test_tokenizers():
    b = tokenizer.get_tokenizer('bytes')
    ids, lengths = b['encode'](['héllo', '', '☕'])
    assert lengths.tolist() == [7, 1, 4] and ids[lengths.cumsum() - 1].tolist() == [256, 256, 256]
    assert b['decode'](ids) == joined(['héllo', '', '☕'])
    g = tokenizer.get_tokenizer('gpt2')
    ids, lengths = g['encode'](['hello world', 'x <|endoftext|> y'])  # special text in a document stays text
    assert ids[:3].tolist() == [31373, 995, 50256] and (ids == 50256).sum() == 2
    assert g['decode'](ids) == joined(['hello world', 'x <|endoftext|> y'])
    assert common.token_dtype(50257) == np.uint16 and common.token_dtype(128256) == np.uint32
    assert [common.parse_count(x) for x in ('65536', '1_000', '64M', '4.3B', '2e6')] == \
        [65536, 1000, 64_000_000, 4_300_000_000, 2_000_000]
    with pytest.raises(UserError, match='unknown tokenizer'):
        tokenizer.get_tokenizer('llama3')


def fake_tokenizer(vocab_size, offset, byte_tokenizer=tokenizer.get_tokenizer('bytes')):
    """A byte tokenizer shifted by `offset`: ids above 65535 like a Llama-3 sized vocabulary."""
    def encode(texts):
        ids, lengths = byte_tokenizer['encode'](texts)
        return ids + offset, lengths
    return dict(name='fake', vocab_size=vocab_size, eot_token=256 + offset, encode=encode, decode=None)


def final_bar(stderr):
    """The progress bar's last rendering (tqdm rewrites its line with carriage returns)."""
    return [line for line in re.split(r'[\r\n]', stderr) if 'tok' in line and '[' in line][-1]


def bar_rate(line):
    """Tokens per second as the bar shows them ('1.23Mtok/s')."""
    number, scale = re.search(r'([0-9.]+)([kMG]?)tok/s', line).groups()
    return float(number) * {'': 1, 'k': 1e3, 'M': 1e6, 'G': 1e9}[scale]


def test_progress_rate_counts_from_the_first_document_and_an_eta_needs_only_the_input_size(tmp_path, monkeypatch,
                                                                                          capsys):
    """The bar's rate is tokens over the time since the first document (it was timed from the first write, after
    the first batch had been encoded: hundreds of times too high), and a known input size gives it a total, so an
    ETA, without --max_tokens."""
    byte_tokenizer = tokenizer.get_tokenizer('bytes')

    def slow(texts):  # 0.4 s a batch: a rate the test can check
        time.sleep(0.4)
        return byte_tokenizer['encode'](texts)
    monkeypatch.setattr(common, 'get_tokenizer', lambda name: dict(byte_tokenizer, encode=slow))
    docs = [f'document {i} ' * 40 for i in range(300)]  # one batch
    size = sum(len(d) for d in docs)
    meta = prepare(docs, tmp_path / 'a', val_tokens=100, report=dict(input_bytes=size))
    tokens = meta['train']['tokens'] + meta['val']['tokens']
    line = final_bar(capsys.readouterr().err)
    assert bar_rate(line) <= tokens / 0.4 * 1.1  # at most what 0.4 s of encoding allows
    assert bar_rate(line) >= tokens / 5  # and not absurdly low either
    assert '100%' in line and f'{tokens / 1e3:.0f}k/{tokens / 1e3:.0f}k' in line and '<' in line  # total, ETA
    prepare(docs, tmp_path / 'b', val_tokens=100)  # no size, no budget: no total to count down to
    line = final_bar(capsys.readouterr().err)
    assert '%' not in line and '<' not in line


def test_large_vocabularies_use_uint32_and_ids_that_do_not_fit_are_an_error(tmp_path, monkeypatch):
    monkeypatch.setattr(common, 'get_tokenizer', lambda name: fake_tokenizer(128256, 70000))
    meta = prepare(['abc', 'de'], tmp_path / 'big', val_tokens=1)
    assert meta['dtype'] == 'uint32' and os.path.getsize(tmp_path / 'big' / 'train.bin') == 3 * 4
    assert load_tokens(tmp_path / 'big', 'train').tolist() == [ord('d') + 70000, ord('e') + 70000, 70256]
    monkeypatch.setattr(common, 'get_tokenizer', lambda name: fake_tokenizer(50000, 70000))  # lies about its size
    with pytest.raises(UserError, match='does not fit uint16'):
        prepare(['abc', 'de'], tmp_path / 'bad', val_tokens=1)
    assert not (tmp_path / 'bad').exists()


def test_gpt2_works_offline_from_an_empty_cache(tmp_path):
    cache = tmp_path / 'cache'
    code = ('import tiktoken.load, common\n'
            'def offline(url): raise ConnectionError("offline: " + url)\n'
            'tiktoken.load.read_file = offline\n'  # even where the test machine is online
            'tok = common.get_tokenizer("gpt2")\n'
            'print(tok["encode"](["hello world"])[0].tolist())\n')
    r = subprocess.run([sys.executable, '-c', code], cwd=PREPARE, capture_output=True, text=True,
                       env={**os.environ, 'TIKTOKEN_CACHE_DIR': str(cache)}, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == '[31373, 995, 50256]'
    assert sorted(os.listdir(cache)) == sorted(hashlib.sha1(url.encode()).hexdigest()
                                               for url, _, _ in tokenizer.GPT2_BPE_FILES)


def test_gpt2_cache_seeding_never_touches_a_cached_file(tmp_path, monkeypatch):
    url = tokenizer.GPT2_BPE_FILES[0][0]
    (tmp_path / hashlib.sha1(url.encode()).hexdigest()).write_bytes(b'downloaded earlier')
    monkeypatch.setenv('TIKTOKEN_CACHE_DIR', str(tmp_path))
    tokenizer.seed_gpt2_cache()
    assert (tmp_path / hashlib.sha1(url.encode()).hexdigest()).read_bytes() == b'downloaded earlier'
    assert len(os.listdir(tmp_path)) == 2
    # the same directory tiktoken picks: TIKTOKEN_CACHE_DIR, then DATA_GYM_CACHE_DIR, then $TMPDIR/data-gym-cache
    monkeypatch.delenv('TIKTOKEN_CACHE_DIR')
    monkeypatch.setenv('DATA_GYM_CACHE_DIR', '/x/gym')
    assert tokenizer.tiktoken_cache_dir() == '/x/gym'
    monkeypatch.delenv('DATA_GYM_CACHE_DIR')
    monkeypatch.setattr('tempfile.tempdir', '/x/tmp')
    assert tokenizer.tiktoken_cache_dir() == '/x/tmp/data-gym-cache'
    monkeypatch.setenv('TIKTOKEN_CACHE_DIR', '')
    assert tokenizer.tiktoken_cache_dir() is None  # caching disabled by the user: nothing to seed


# ---- the val split, budgets, atomic output ----------------------------------------------------------------------

def test_val_is_whole_documents_and_budgets_stop_after_the_crossing_document(tmp_path):
    docs = [c * n for c, n in zip('abcde', (10, 20, 30, 40, 50))]  # 11, 21, 31, 41, 51 tokens with EOT
    meta = prepare(docs, tmp_path / 'x', val_tokens=15, max_tokens=40)
    assert decoded(tmp_path / 'x', 'val') == joined(docs[:2])  # 15 falls inside b: b is in val, whole
    assert decoded(tmp_path / 'x', 'train') == joined(docs[2:4])  # 40 falls inside d: d is in, whole; e is not
    assert (meta['val'], meta['train']) == ({'tokens': 32, 'documents': 2}, {'tokens': 72, 'documents': 2})
    # a separate validation stream (a dataset's validation split) leaves train all the documents
    meta = prepare(docs, tmp_path / 'y', val_tokens=5, val_docs=iter(['val one', 'val two']))
    assert decoded(tmp_path / 'y', 'val') == joined(['val one']) and meta['train']['documents'] == 5


def test_budgets_larger_than_the_source_prepare_what_there_is(tmp_path, capsys):
    docs = ['x' * 100] * 5
    meta = prepare(docs, tmp_path / 'x', val_tokens=1000, max_tokens=10**6)
    assert meta['val']['documents'] == 1 and meta['train']['documents'] == 4  # ~10% of a too-small source
    assert any('ran out' in n for n in meta['notes']) and any('~10%' in n for n in meta['notes'])
    assert 'ran out' in capsys.readouterr().err
    with pytest.raises(UserError, match='at least 2 documents'):
        prepare(['only one'], tmp_path / 'y', val_tokens=100)
    with pytest.raises(UserError, match='no documents'):
        prepare(['', None, ''], tmp_path / 'z', val_tokens=0)
    assert not (tmp_path / 'y').exists() and not (tmp_path / 'z').exists()


def test_an_empty_validation_stream_is_an_error_and_a_failed_run_removes_the_parents_it_made(tmp_path):
    (tmp_path / 'kept').mkdir()
    for val_docs in ([], ['', None]):  # a validation split with no documents, or only empty ones
        with pytest.raises(UserError, match=r'^the validation split has no documents \(or only empty ones\): val.bin '
                                            r'would be empty, which train.py refuses; pass a --revision whose '
                                            r'validation split has text; nothing was written$'):
            prepare(['a document', 'another'], tmp_path / 'kept' / 'a' / 'b' / 'out', val_tokens=5,
                    val_docs=iter(val_docs))
        assert os.listdir(tmp_path / 'kept') == []  # a/b/out and the a/, a/b/ made for it are gone; kept/ stays
    prepare(['a document', 'another'], tmp_path / 'kept' / 'a' / 'out', val_tokens=5)
    assert sorted(os.listdir(tmp_path / 'kept' / 'a' / 'out')) == ['meta.json', 'train.bin', 'val.bin']


def test_one_file_under_two_spellings_is_one_input(tmp_path):
    data = write_jsonl(tmp_path / 'd.jsonl', [dict(text='x')])
    other = os.path.join(str(tmp_path), '..', tmp_path.name, 'd.jsonl')
    assert local.expand_inputs([data, other, str(tmp_path), str(tmp_path / '*.jsonl')], 'out') == [data]


def crashing(docs, after, error=RuntimeError):
    yield from docs[:after]
    raise error('the machine went down')


def test_an_interrupted_prepare_leaves_the_previous_output_untouched(tmp_path):
    out = tmp_path / 'x'
    prepare(['one', 'two', 'three'], out, val_tokens=1)
    before = {f: (out / f).read_bytes() for f in os.listdir(out)}
    with pytest.raises(RuntimeError):
        common.prepare_source(crashing(['four', 'five', 'six'], 2), str(out), dict(other=1), 's', [],
                              tokenizer='bytes', val_tokens=1)
    assert {f: (out / f).read_bytes() for f in os.listdir(out)} == before  # no .partial left, old files intact
    with pytest.raises(RuntimeError):
        common.prepare_source(crashing(['a', 'b'], 1), str(tmp_path / 'new'), {}, 's', [], tokenizer='bytes')
    assert not (tmp_path / 'new').exists()
    with pytest.raises(SystemExit) as e:  # Ctrl-C: exit 130, same guarantees
        common.run_main(lambda argv: common.prepare_source(crashing(['a', 'b'], 1, KeyboardInterrupt), str(out),
                                                           {}, 's', [], tokenizer='bytes'), [])
    assert e.value.code == 130
    assert {f: (out / f).read_bytes() for f in os.listdir(out)} == before


def test_outputs_are_renamed_into_place_with_meta_json_last(tmp_path, monkeypatch):
    out = tmp_path / 'x'
    prepare(['one', 'two'], out, val_tokens=1)
    events = []
    real_replace, real_remove = os.replace, os.remove
    monkeypatch.setattr(os, 'replace', lambda a, b: (events.append(('replace', os.path.basename(b))),
                                                     real_replace(a, b)))
    monkeypatch.setattr(os, 'remove', lambda p: (events.append(('remove', os.path.basename(p))), real_remove(p)))
    prepare(['three', 'four'], out, val_tokens=1, force=True)
    assert events == [('remove', 'meta.json'), ('replace', 'train.bin'), ('replace', 'val.bin'),
                      ('replace', 'meta.json')]


def test_a_rerun_with_the_same_settings_is_a_no_op(tmp_path, capsys):
    out = tmp_path / 'x'
    prepare(['one', 'two'], out, val_tokens=1)
    stamp = {f: os.stat(out / f).st_mtime_ns for f in os.listdir(out)}
    prepare(iter(()), out, val_tokens=1)  # not even read
    assert 'nothing to do' in capsys.readouterr().out
    assert {f: os.stat(out / f).st_mtime_ns for f in os.listdir(out)} == stamp
    assert prepare(['three', 'four'], out, val_tokens=2)['val']['documents'] == 1  # new settings: rebuilt
    assert decoded(out, 'train') == joined(['four'])


# ---- bad input ------------------------------------------------------------------------------------------------

def local_main(tmp_path, *args):
    local.main([*args, '--tokenizer', 'bytes', '--workers', '1', '--out', str(tmp_path / 'out')])
    return common.read_meta(tmp_path / 'out')


@pytest.mark.parametrize('setup, message', [
    (lambda d: [str(d / 'nope.jsonl')], 'no such file'),
    (lambda d: [str(d / '*.jsonl')], 'no file matches'),
    (lambda d: [(d / 'e.jsonl').write_text('') and '' or str(d / 'e.jsonl')], 'is empty'),
    (lambda d: [(d / 'e.csv').write_text('a,b') and str(d / 'e.csv')], 'unknown file type'),
    (lambda d: [write_jsonl(d / 'f.jsonl', [{'content': 'x'}])], "f.jsonl has no field 'text'.*content"),
    (lambda d: [write_jsonl(d / 'g.jsonl.gz', [], gzip.open)], 'is empty'),
])
def test_bad_inputs_are_one_clear_error_and_write_nothing(tmp_path, setup, message):
    with pytest.raises(UserError, match=message):
        local_main(tmp_path, '--input', *setup(tmp_path))
    assert not (tmp_path / 'out').exists()


def test_a_parquet_file_without_the_column_is_named(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    pq.write_table(pa.table({'body': ['x']}), tmp_path / 'p.parquet')
    with pytest.raises(UserError, match="p.parquet has no column 'text'.*body"):
        local_main(tmp_path, '--input', str(tmp_path / 'p.parquet'))


def test_user_errors_exit_2_with_one_line_and_no_traceback(tmp_path):
    r = run('local.py', '--input', str(tmp_path / 'missing.txt'), '--out', str(tmp_path / 'o'))
    assert r.returncode == 2 and r.stderr.strip().count('\n') == 0 and r.stderr.startswith('error: ')
    assert 'Traceback' not in r.stderr and not (tmp_path / 'o').exists()
    r = run('local.py', '--out', 'x')  # argparse's own mistakes look the same
    assert r.returncode == 2 and r.stderr.startswith('error: ') and r.stderr.strip().count('\n') == 0


def test_invalid_utf8_is_replaced_and_counted(tmp_path, capsys):
    (tmp_path / 'a.txt').write_bytes(b'caf\xe9 ok \xff\xfe end')
    (tmp_path / 'b.jsonl').write_bytes(b'{"text": "bad \xc3 byte"}\n{"text": "fine"}\n')
    meta = local_main(tmp_path, '--input', str(tmp_path / 'a.txt'), str(tmp_path / 'b.jsonl'), '--val_tokens', '1')
    assert meta['utf8_replaced'] == 4  # \xe9, \xff, \xfe, \xc3: one U+FFFD each, as errors='replace' does
    text = decoded(tmp_path / 'out', 'val') + decoded(tmp_path / 'out', 'train')
    assert text == joined(['caf\ufffd ok \ufffd\ufffd end', 'bad \ufffd byte', 'fine'])
    assert 'replaced 4 invalid UTF-8' in capsys.readouterr().err


# ---- the Hub scripts, up to their datasets.load_dataset call --------------------------------------------------

HUB = {  # script: (dataset, load_dataset kwargs it must pass, text field, validation split)
    'c4.py': ('allenai/c4', dict(name='en', revision='1588ec454efa1a09f29cd18ddd04fe05fc8653a2'), 'text',
              'validation'),
    'finemath.py': ('HuggingFaceTB/finemath', dict(name='finemath-3plus', revision='8f233cf'), 'text', None),
    'starcoder.py': ('bigcode/starcoderdata', dict(revision='9fc30b5', data_dir='python'), 'content', None),
    'flan.py': ('allenai/dolmino-mix-1124', dict(revision='a319f19eef1e257417b11ea8c30da266ae175557',
                                                 data_files={'train': 'data/flan/*.json.gz'}), 'text', None),
    'slimpajama.py': ('DKYoon/SlimPajama-6B', dict(revision='b5f90f4'), 'text', 'validation'),
    'basque.py': ('HiTZ/latxa-corpus-v1.1', dict(revision='02dc515', data_files={
        'train': '*/train.jsonl.gz', 'validation': '*/valid.jsonl.gz'}), 'text', 'validation'),
}


def run_script(script, monkeypatch, *argv):
    monkeypatch.setattr(sys, 'argv', [os.path.join(PREPARE, script), *argv])
    runpy.run_path(os.path.join(PREPARE, script), run_name='__main__')


@pytest.mark.parametrize('script', sorted(HUB))
def test_hub_scripts_stream_their_pinned_dataset(script, tmp_path, monkeypatch):
    dataset, pinned, field, val_split = HUB[script]
    calls = []

    def stand_in(path, **kwargs):
        calls.append((path, kwargs))
        texts = [f'{kwargs["split"]} document {i} ' * 3 for i in range(20)]
        return datasets.Dataset.from_dict({field: texts, 'other': list(range(20))}).to_iterable_dataset()

    monkeypatch.setattr(datasets, 'load_dataset', stand_in)
    out = tmp_path / 'out'
    run_script(script, monkeypatch, '--out', str(out), '--tokenizer', 'bytes', '--max_tokens', '500',
               '--val_tokens', '100', '--workers', '1')
    assert [c[1]['split'] for c in calls] == ([val_split] if val_split else []) + ['train']
    for path, kwargs in calls:
        assert path == dataset and kwargs.pop('streaming') is True and kwargs.pop('split')
        assert kwargs == pinned
    meta = common.read_meta(out)
    assert meta['source']['hub'] == dataset and meta['source']['revision'] == pinned['revision']
    assert meta['train']['tokens'] >= 500 and meta['val']['tokens'] >= 100
    assert decoded(out, 'val').startswith((val_split or 'train') + ' document 0')


def failing(error):
    def stand_in(path, **kwargs):
        raise error
    return stand_in


def test_an_unreachable_hub_says_offline_and_points_to_local_and_demo(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(datasets, 'load_dataset', failing(ConnectionError("Couldn't reach 'allenai/c4' on the Hub")))
    with pytest.raises(SystemExit) as e:
        run_script('c4.py', monkeypatch, '--out', str(tmp_path / 'c4'), '--tokenizer', 'bytes')
    err = capsys.readouterr().err
    assert e.value.code == 2 and 'offline' in err and 'prepare/local.py' in err and 'prepare/demo.py' in err
    assert err.count('\n') == 1 and not (tmp_path / 'c4').exists()


def test_a_gated_dataset_explains_the_token_and_the_open_fallback(tmp_path, monkeypatch, capsys):
    from datasets.exceptions import DatasetNotFoundError
    gated = DatasetNotFoundError("Dataset 'bigcode/starcoderdata' is a gated dataset on the Hub. You must be "
                                 'authenticated to access it.')
    monkeypatch.setattr(datasets, 'load_dataset', failing(gated))
    with pytest.raises(SystemExit):
        run_script('starcoder.py', monkeypatch, '--out', str(tmp_path / 's'), '--tokenizer', 'bytes')
    err = capsys.readouterr().err
    assert 'gated' in err and 'HF_TOKEN' in err and 'codeparrot/codeparrot-clean' in err


def test_hub_overrides_and_a_missing_text_field(tmp_path, monkeypatch, capsys):
    calls = []

    def stand_in(path, **kwargs):
        calls.append((path, kwargs))
        return datasets.Dataset.from_dict({'content': ['x' * 50] * 4}).to_iterable_dataset()

    monkeypatch.setattr(datasets, 'load_dataset', stand_in)
    run_script('starcoder.py', monkeypatch, '--dataset', 'codeparrot/codeparrot-clean', '--out', str(tmp_path / 'o'),
               '--tokenizer', 'bytes', '--val_tokens', '10', '--workers', '1')
    assert calls == [('codeparrot/codeparrot-clean', dict(split='train', streaming=True, revision='main'))]
    with pytest.raises(SystemExit):
        run_script('finemath.py', monkeypatch, '--out', str(tmp_path / 'f'), '--tokenizer', 'bytes')
    assert "has no field 'text' (fields: content)" in capsys.readouterr().err


# ---- command lines and outputs a prober got wrong --------------------------------------------------------------

def one_error(capsys, main, argv):
    """main(argv) through run_main: exit status 2 and exactly one stderr line, `error: ...`; returns that line."""
    with pytest.raises(SystemExit) as e:
        common.run_main(main, argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.startswith('error: ') and '\n' not in err and 'Traceback' not in err, err
    return err


def test_bad_command_lines_are_one_error_line_before_anything_is_written(tmp_path, capsys, monkeypatch):
    import demo_chat
    import hub
    import tiny_model
    monkeypatch.chdir(tmp_path)
    good = write_jsonl(tmp_path / 'good.jsonl', [{'text': 'x'}])
    c4 = lambda argv: hub.hub_main('c4', 'allenai/c4', 'main', argv=argv)  # noqa: E731
    for main, argv, message in [
            (local.main, ['--input', good, '--out', ''], '--out is empty'),
            (c4, ['--out', ''], '--out is empty'),
            (tiny_model.main, ['--out', ''], '--out is empty'),
            (demo.main, ['--generic_out', ''], '--generic_out is empty'),
            (demo_chat.main, ['--target_out', ''], '--target_out is empty'),
            (local.main, ['--input', good, '--out', 'o', '--max_tokens', '1e400'], "'1e400' is more tokens"),
            (local.main, ['--input', good, '--out', 'o', '--val_tokens', '1e400'], "'1e400' is more tokens"),
            (local.main, ['--input', good, '--out', 'o', '--max_tokens', '0.4'], "'0.4' is not a whole number"),
            (local.main, ['--input', good, '--out', 'o', '--val_tokens', '0'], '--val_tokens=0 must be at least 1'),
            (demo.main, ['--generic_out', 'X', '--target_out', 'X/'], 'are the same directory'),
            (demo.main, ['--generic_out', 'X', '--target_out', 'X/t'], '--target_out=X/t lies inside --generic_out=X'),
            (demo.main, ['--generic_out', 'T/g', '--target_out', 'T'], '--generic_out=T/g lies inside --target_out=T'),
            (c4, ['--dataset', ''], '--dataset is empty'),
            (tiny_model.main, ['--arch', 'gpt2', '--tied', '--out', 'm'], '--tied only applies to --arch llama')]:
        assert message in one_error(capsys, main, argv)
    assert os.listdir(tmp_path) == ['good.jsonl']
    assert common.parse_count('4.3B') == 4_300_000_000 and common.parse_count('1e15') == 10**15


def test_an_unwritable_output_is_refused_before_any_output_is_written(tmp_path, capsys, monkeypatch):
    import demo_chat
    import tiny_model
    locked = tmp_path / 'locked'
    locked.mkdir()
    if os.geteuid() == 0:  # chmod does not stop root; an immutable directory does
        if subprocess.run(['chattr', '+i', str(locked)], capture_output=True).returncode:
            pytest.skip('chattr +i is not available here')
    else:
        locked.chmod(0o555)
    try:
        monkeypatch.chdir(tmp_path)
        good = write_jsonl(tmp_path / 'good.jsonl', [{'text': 'x'}])
        for main, argv in [(local.main, ['--input', good, '--out', 'locked/x']),
                           (demo.main, ['--generic_out', 'ok', '--target_out', 'locked/t']),
                           (demo_chat.main, ['--target_out', 'locked/t.jsonl']),
                           (tiny_model.main, ['--out', 'locked/m'])]:
            assert 'cannot be written' in one_error(capsys, main, argv)
        assert sorted(os.listdir(tmp_path)) == ['good.jsonl', 'locked'] and not os.listdir(locked)
    finally:
        subprocess.run(['chattr', '-i', str(locked)], capture_output=True) if os.geteuid() == 0 else \
            locked.chmod(0o755)


def test_inputs_broken_links_repeats_and_an_output_inside_an_input(tmp_path):
    corp = tmp_path / 'corp'
    corp.mkdir()
    a, b = write_jsonl(corp / 'a.jsonl', [{'text': 'alpha'}]), write_jsonl(tmp_path / 'b.jsonl', [{'text': 'beta'}])
    os.symlink(tmp_path / 'nowhere', corp / 'dangling.jsonl')
    with pytest.raises(UserError, match='dangling.jsonl is a broken symbolic link'):
        local_main(tmp_path, '--input', str(corp))
    os.remove(corp / 'dangling.jsonl')
    meta = local_main(tmp_path, '--input', a, '--input', b, '--val_tokens', '1')  # repeated: both are read
    assert [os.path.basename(f['path']) for f in meta['source']['files']] == ['a.jsonl', 'b.jsonl']
    for out in (corp, corp / 'data'):
        with pytest.raises(UserError, match='is inside --input'):
            local.main(['--input', str(corp), '--tokenizer', 'bytes', '--out', str(out)])
    with pytest.raises(UserError, match='a.jsonl is inside --out'):
        local.main(['--input', a, '--tokenizer', 'bytes', '--out', str(corp)])
    assert sorted(os.listdir(corp)) == ['a.jsonl']


def test_an_output_that_is_not_a_source_of_ours_is_kept_unless_forced(tmp_path):
    out = tmp_path / 'out'
    out.mkdir()
    for bad in ('{bad', '[1]', '{"dtype": "bogus"}'):
        (out / 'meta.json').write_text(bad)
        with pytest.raises(UserError, match='holds no source prepared here'):
            prepare(['one', 'two'], out, val_tokens=1)
        assert os.listdir(out) == ['meta.json'] and (out / 'meta.json').read_text() == bad
    prepare(['one', 'two'], out, val_tokens=1, force=True)
    meta = json.loads((out / 'meta.json').read_text())
    meta['dtype'] = 'bogus'  # ours, but edited: rebuilt, not a crash
    (out / 'meta.json').write_text(json.dumps(meta))
    assert prepare(['one', 'two'], out, val_tokens=1)['dtype'] == 'uint16'
    os.remove(out / 'meta.json')
    os.mkdir(out / 'meta.json')
    with pytest.raises(UserError, match='meta.json is a directory'):
        prepare(['one', 'two'], out, val_tokens=1, force=True)
    assert sorted(os.listdir(out)) == ['meta.json', 'train.bin', 'val.bin']


def test_max_tokens_holds_in_a_source_smaller_than_val_tokens(tmp_path, capsys):
    meta = prepare([f'doc {i:02d} ' * 5 for i in range(40)], tmp_path / 'x', val_tokens=10**6, max_tokens=2)
    assert (meta['val']['documents'], meta['train']['documents'], meta['train']['tokens']) == (4, 1, 36)
    assert 'train the next 1 (' in capsys.readouterr().err


def test_a_bad_json_line_is_one_error_line_without_the_datasets_log(tmp_path):
    for name, text in (('numbers.jsonl', '1\n2\n'), ('string.jsonl', '"a"\n'), ('cut.jsonl', '{"text": "x"\n')):
        (tmp_path / name).write_text(text)
        r = run('local.py', '--input', str(tmp_path / name), '--tokenizer', 'bytes', '--out', str(tmp_path / 'o'))
        lines = [line for line in r.stderr.replace('\r', '\n').splitlines() if line and 'checking' not in line]
        assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith('error: could not read'), lines
        assert f'{name} with the datasets' in lines[0]
    (tmp_path / 'int.jsonl').write_text('{"text": "ok"}\n{"text": 5}\n')
    with pytest.raises(UserError, match=r"int.jsonl: record 1 \(from 0\) has an int \(5\), not text in 'text'"):
        local_main(tmp_path, '--input', str(tmp_path / 'int.jsonl'))
