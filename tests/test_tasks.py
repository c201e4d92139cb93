"""Task accuracy (tasks.py, eval.py, train.py's `tasks`), proved against lm-evaluation-harness 0.4.13 itself:
- on tiny random transformers models (prepare/tiny_model.py, weights drawn with std 0.15) with a BOS-adding
  Llama-3-style tokenizer and a GPT-2-style one without BOS, and two local tasks given to lm_eval.simple_evaluate
  as custom task YAMLs over local JSON-lines files (offline): one {"context", "choices", "label"} file run through
  a plain multiple-choice YAML, and one XCOPA file run through the harness's own xcopa_eu.yaml (its prompt
  functions) with only the data files changed. Every choice's log-likelihood (log_samples) equals ours within 1e-4,
  acc and acc_norm per example are equal except where the top two choices are closer than that, and the data
  really exercises what can go wrong: trailing spaces, an empty context, a text starting with the prefix token,
  special-token text inside a text, multi-byte characters, 2 to 4 choices, left truncation;
- a training run with `tasks` logs task records at every eval (before the first step included) and at the end,
  summary.json holds the final ones, a resume keeps them, eval.py on the export (and on the run, and under torchrun
  with 2 processes) gives the final record's numbers;
- every rank runs the same number of forwards; sweep.gather's accuracy columns;
- bad task files: one `error:` line, exit status 2, before the model is built."""
import contextlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import hf
import runtime
import task_files
import tasks
from configurator import UserError
from helpers import ROOT, copy_for_resume, one_line_failures, read_log, without_timing, write_random_source
from model import GPT
from tokenizer import load_tokenizer

import tiny_model  # prepare/'s (conftest.py puts it on sys.path)

ENV = dict(os.environ, OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1', TOKENIZERS_PARALLELISM='false',
           HF_DATASETS_OFFLINE='1', HF_HUB_OFFLINE='1', TRANSFORMERS_OFFLINE='1')
TOLERANCE = 1e-4
BLOCK = 48  # the harness's max_length and our block_size: the long example is cut on the left
CPU = runtime.System(rank=0, local_rank=0, world=1, device='cpu', device_type='cpu', device_name='cpu')
LONG = ("In the beginning the wind came down from the mountains, and the villagers closed their shutters, "
        "waited by the fire and told the old stories about the sea, the boats and the long winter nights. ") * 2
CHOICES = [  # the cases that can go wrong; every choice is at most 30 bytes (the bytes-level training run's block)
    dict(context="The function returns a ", choices=["value", "list of values"], label=1),  # trailing space moves
    dict(context="Question: what is a tuple?\nAnswer:", choices=["an immutable sequence", "a loop", "a module"],
         label=0),
    dict(context="", choices=["alpha", "beta gamma", "delta"], label=2),  # the prefix token is the context
    dict(context="Euskal Herrian  \n", choices=["ñandú", "égalité", "Zer?", "ez"], label=3),  # whitespace, bytes
    dict(context=LONG + "So they", choices=["stayed home", "went out to sea"], label=0),  # left truncation
    dict(context="<|begin_of_text|>The class statement", choices=["defines a class", "imports"], label=0),
    dict(context="<|endoftext|>A module is", choices=["a file", "a number"], label=1),
    dict(context="Text with <|endoftext|> inside it and", choices=[" leading space", "none"], label=0),
    dict(context="Exceptions are raised with", choices=["raise", "throw", "yield", "pass"], label=0),
    dict(context="x = [1, 2, 3]; len(x) ==", choices=["3", "4"], label=0),
]
XCOPA = [  # the harness's Basque-bench xcopa_eu format; idx and changed are ignored, as the harness ignores them
    dict(premise="Gizona lurrera erori zen.", choice1="Irristatu egin zen.", choice2="Eguzkia atera zen.",
         question="cause", label=0, idx=0, changed=False),
    dict(premise="  Neskak sagarra jan zuen. ", choice1="Goseak zegoen.", choice2="Euria ari zuen.",
         question="cause", label=0, idx=1, changed=False),
    dict(premise="Haurrak negar egin zuen.", choice1="Amak besarkatu zuen.", choice2="Autoa garbitu zuten.",
         question="effect", label=0, idx=2, changed=True),
    dict(premise="Atea itxi nuen.", choice1="Etxea isildu zen.", choice2="Ürdina bihurtu zen.",
         question="effect", label=1, idx=3, changed=False),
    dict(premise="Ura irakiten zegoen.", choice1="Sua piztu nuen.", choice2="Liburua irakurri nuen.",
         question="cause", label=0, idx=4, changed=False),
]
PLAIN_YAML = """task: local_choices
dataset_path: json
dataset_kwargs:
  data_files:
    test: {path}
test_split: test
output_type: multiple_choice
doc_to_text: context
doc_to_choice: choices
doc_to_target: label
metric_list:
  - metric: acc
  - metric: acc_norm
"""
XCOPA_YAML = """include: {harness_yaml}
task: local_xcopa_eu
dataset_path: json
dataset_kwargs:
  data_files:
    test: {path}
validation_split: null
metric_list:
  - metric: acc
  - metric: acc_norm
"""


def write_jsonl(path, records):
    with open(path, 'w') as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + '\n' for r in records)
    return str(path)


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp('task_files')
    return dict(choices=write_jsonl(root / 'choices.jsonl', CHOICES), xcopa=write_jsonl(root / 'xcopa.jsonl', XCOPA),
                root=root)


@pytest.fixture(scope='module')
def models(tmp_path_factory):
    """Tiny random Hugging Face directories: a Llama with a BOS-adding tokenizer, a GPT-2 without BOS."""
    root = tmp_path_factory.mktemp('models')
    texts = tiny_model.training_texts()[:40]
    made = {}
    for arch, seed in (('llama', 3), ('gpt2', 4)):
        tok, config = tiny_model.make_tokenizer(arch, vocab_size=384, texts=texts)
        tiny_model.make_model(arch, str(root / arch), tok, config, std=0.15, seed=seed)
        made[arch] = str(root / arch)
    return made


@contextlib.contextmanager
def offline():
    """The Hugging Face libraries offline: the environment variables, and the constants read from them when the
    libraries were imported (other test modules import them earlier)."""
    import datasets.config
    import huggingface_hub.constants
    names = ('HF_DATASETS_OFFLINE', 'HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE')
    saved_env = {k: os.environ.get(k) for k in names}
    constants = [(huggingface_hub.constants, 'HF_HUB_OFFLINE'), (datasets.config, 'HF_HUB_OFFLINE'),
                 (datasets.config, 'HF_DATASETS_OFFLINE')]
    saved = [getattr(module, name) for module, name in constants]
    os.environ.update({k: '1' for k in names})
    for module, name in constants:
        setattr(module, name, True)
    try:
        yield
    finally:
        for (module, name), value in zip(constants, saved):
            setattr(module, name, value)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k)
            else:
                os.environ[k] = v


@pytest.fixture(scope='module')
def harness(models, files):
    """lm_eval.simple_evaluate on both models, offline, with log_samples: per example the requests (context,
    continuation), each choice's log-likelihood, acc and acc_norm. In this process: transformers is already
    imported for the models, which is most of the harness's start-up."""
    import lm_eval
    from lm_eval.tasks import TaskManager
    assert lm_eval.__version__ == '0.4.13'
    yaml_dir = files['root'] / 'yaml'
    yaml_dir.mkdir()
    (yaml_dir / 'choices.yaml').write_text(PLAIN_YAML.format(path=files['choices']))
    harness_yaml = os.path.join(os.path.dirname(lm_eval.__file__), 'tasks', 'basque_bench', 'xcopa_eu.yaml')
    (yaml_dir / 'xcopa.yaml').write_text(XCOPA_YAML.format(harness_yaml=harness_yaml, path=files['xcopa']))
    out = {}
    threads = torch.get_num_threads()
    with offline():
        for arch, path in models.items():
            result = lm_eval.simple_evaluate(
                model='hf', model_args=dict(pretrained=path, dtype='float32', max_length=BLOCK), device='cpu',
                tasks=['local_choices', 'local_xcopa_eu'], log_samples=True, batch_size=4, bootstrap_iters=0,
                task_manager=TaskManager(include_path=str(yaml_dir), include_defaults=False))
            out[arch] = {task: [dict(arguments=[list(a) for a in s['arguments']], lls=[r[0][0] for r in s['resps']],
                                     acc=s['acc'], acc_norm=s['acc_norm'])
                                for s in sorted(samples, key=lambda s: s['doc_id'])]
                         for task, samples in result['samples'].items()}
    torch.set_num_threads(threads)
    return out


def our_model(path, block_size=BLOCK):
    config = hf.model_config(hf.open_model_dir(path), block_size)
    model = GPT(config)
    model.load_state_dict(hf.load_weights(path, config))
    return model.eval()


def ours(path, files, tokenizer=None, tokens_per_batch=3 * BLOCK):
    """Our evaluation of a model directory on both task files (several batches of mixed lengths)."""
    model, tokenizer = our_model(path), tokenizer or load_tokenizer(path)
    out = {}
    for name, kind in (('local_choices', 'choices'), ('local_xcopa_eu', 'xcopa')):
        task = tasks.encode_task(name, files[kind], task_files.read_task_file(files[kind]), tokenizer, BLOCK)
        out[name] = dict(task, **tasks.evaluate(dict(task, tokens_per_batch=tokens_per_batch), model,
                                                contextlib.nullcontext(), CPU))
    return out


def top_two_gap(values):
    top = np.sort(np.asarray(values))[::-1]
    return top[0] - top[1]


def first_row(examples, i):
    """The request (row) index of example i's first choice: requests are in example, then choice, order."""
    return sum(len(e['choices']) for e in examples[:i])


@pytest.mark.parametrize('arch', ['llama', 'gpt2'])
def test_equal_to_the_harness(models, files, harness, arch):
    mine, theirs = ours(models[arch], files), harness[arch]
    for name, examples in (('local_choices', CHOICES), ('local_xcopa_eu', XCOPA)):
        assert len(theirs[name]) == len(examples) == mine[name]['n']
        near_ties = 0
        for i, (sample, lls) in enumerate(zip(theirs[name], mine[name]['loglikelihoods'])):
            # the same requests: our context and " " + choice are the harness's (its xcopa_eu prompt functions)
            example = mine[name]['examples'][i]
            assert sample['arguments'] == [[example['context'], ' ' + c] for c in example['choices']], (name, i)
            assert np.abs(np.array(lls) - sample['lls']).max() <= TOLERANCE, (name, i, lls, sample['lls'])
            lengths = np.array([len(c) for c in example['choices']], dtype=float)
            for metric, divide_by in (('acc', 1.0), ('acc_norm', lengths)):
                if top_two_gap(np.array(sample['lls']) / divide_by) > TOLERANCE:
                    assert float(np.argmax(np.array(lls) / divide_by) == example['label']) == sample[metric]
                else:
                    near_ties += 1
        assert near_ties == 0  # on these weights no two top choices are that close: every example was compared
        for metric in ('acc', 'acc_norm'):
            assert mine[name][metric] == pytest.approx(np.mean([s[metric] for s in theirs[name]]))

    # the data covers the cases: BOS in front (llama) or not (gpt2), the prefix token as an empty context, a text
    # starting with the prefix token's text (no second one added), left truncation
    rows = mine['local_choices']['rows']
    tokenizer = load_tokenizer(models[arch])
    prefix = tokenizer['prefix']
    assert tokenizer['prefix_text'] == ('<|begin_of_text|>' if arch == 'llama' else '<|endoftext|>')
    assert (rows[0][0] == prefix) == (arch == 'llama')
    empty = rows[first_row(CHOICES, 2)]  # example 2: the empty context
    assert empty[0] == prefix and empty[1] != prefix
    spelled = rows[first_row(CHOICES, 5 if arch == 'llama' else 6)]  # starts with the prefix token's text
    assert spelled[0] == prefix and spelled[1] != prefix
    truncated = rows[first_row(CHOICES, 4)]  # the model reads BLOCK tokens, plus the last one's label
    assert len(truncated) == BLOCK + 1 and truncated[0] != prefix


def test_the_comparison_catches_a_missing_bos(models, files, harness):
    """Negative control: the Llama's requests encoded without its BOS miss the harness's numbers by far."""
    tokenizer = load_tokenizer(models['llama'])
    from tokenizers import processors
    tokenizer['tok'].post_processor = processors.ByteLevel(trim_offsets=False)
    mine = ours(models['llama'], files, tokenizer)
    diffs = [np.abs(np.array(lls) - s['lls']).max() for lls, s in zip(mine['local_choices']['loglikelihoods'],
                                                                         harness['llama']['local_choices'])]
    assert max(diffs) > 100 * TOLERANCE


def test_batches_and_ranks():
    """Every rank runs the same number of forwards, whatever the sizes; the real batches cover every request once,
    within the token budget; results do not depend on the batching."""
    rng = np.random.default_rng(0)
    for n, budget, world in [(1, 64, 4), (7, 64, 2), (40, 100, 3), (41, 20, 8), (100, 1000, 5)]:
        lengths = rng.integers(1, 40, n)
        plan = tasks.batch_plan(lengths, budget, world)
        assert len({len(batches) for batches in plan}) == 1
        real = np.concatenate([b for batches in plan for b, is_real in batches if is_real])
        assert sorted(real.tolist()) == list(range(n))
        assert all(len(b) == 1 or len(b) * lengths[b].max() <= budget for batches in plan for b, _ in batches)


def test_batching_does_not_change_the_numbers(models, files):
    a = ours(models['gpt2'], files, tokens_per_batch=1)  # one request a forward
    b = ours(models['gpt2'], files, tokens_per_batch=100 * BLOCK)  # everything in one forward
    for name in a:
        assert np.abs(np.concatenate(a[name]['loglikelihoods']) - np.concatenate(b[name]['loglikelihoods'])).max() \
            < 1e-4


# ---- in training, resumed, and eval.py ----------------------------------------------------------------------------

def script(*args, nproc=1):
    cmd = [sys.executable, *args] if nproc == 1 else \
        [sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={nproc}', *args]
    result = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope='module')
def run(files, tmp_path_factory):
    """A from-scratch run on bytes-tokenizer data with both tasks: 6 steps, evals after 0, 3 and 6, checkpoint at 3."""
    root = tmp_path_factory.mktemp('run')
    meta = dict(tokenizer='bytes', vocab_size=257, eot_token=256)
    data = [f"--generic_dir={write_random_source(root / 'generic', 32 * 200, seed=0, **meta)}",
            f"--target_dir={write_random_source(root / 'target', 32 * 40, seed=1, **meta)}"]
    gen = dict(file=write_jsonl(root / 'gen.jsonl', GENERATE), max_gen_toks=8, limit=4, num_fewshot=1)
    task_arg = f"--tasks={dict(choices=files['choices'], xcopa_eu=files['xcopa'], gen=gen)!r}"
    args = ['config/tiny.py', '--max_iters=6', '--target_epochs=1', '--eval_interval=3', '--spike_eval_steps=0', '--log_interval=1',
            '--checkpoint_steps=[3]', *data, task_arg]
    out = str(root / 'out')
    script('train.py', *args, f'--out_dir={out}')
    import export
    export.main([out, f"--to={root / 'export'}"])
    return dict(root=root, args=args, out=out, export=str(root / 'export'), task_arg=task_arg, files=files)


def test_training_logs_task_records_and_summary(run):
    log = read_log(run['out'])
    evals = [r['step'] for r in log if r['kind'] == 'eval']
    records = [r for r in log if r['kind'] == 'task']
    assert evals == [0, 3, 6]
    assert [(r['step'], r['task']) for r in records] == [(s, t) for s in evals for t in ('choices', 'xcopa_eu', 'gen')]
    assert all(set(r) == {'kind', 'task', 'step', 'acc', 'acc_norm', 'n', 'eval_s'} for r in records
               if r['task'] != 'gen')
    assert all(set(r) == {'kind', 'task', 'step', 'exact_match', 'n', 'eval_s'} and set(r['exact_match']) == {'none'}
               and r['n'] == 4 for r in records if r['task'] == 'gen')
    assert {r['n'] for r in records if r['task'] == 'choices'} == {len(CHOICES)}
    # the task records of step 0 come before the first train record: before the first step
    assert log.index(records[0]) < min(i for i, r in enumerate(log) if r['kind'] == 'train')
    with open(os.path.join(run['out'], 'summary.json')) as f:
        final = json.load(f)['final']
    assert final['tasks'] == {r['task']: {k: r[k] for k in ('acc', 'acc_norm', 'exact_match', 'n') if k in r}
                              for r in records[-3:]}


def test_resume_keeps_task_records(run):
    resumed = copy_for_resume(run['out'], 3, str(run['root'] / 'resumed'))
    script('train.py', *run['args'], '--init_from=resume', f'--out_dir={resumed}')
    assert without_timing(read_log(resumed)) == without_timing(read_log(run['out']))
    with open(os.path.join(resumed, 'summary.json')) as f, open(os.path.join(run['out'], 'summary.json')) as g:
        assert json.load(f)['final'] == json.load(g)['final']


def in_process(main, argv):
    """A script's main(argv) in this process, on one thread as the training subprocess ran."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        main(argv)
    finally:
        torch.set_num_threads(threads)


def test_eval_py_gives_the_final_record(run, capsys):
    import eval as eval_script
    final = [r for r in read_log(run['out']) if r['kind'] == 'task'][-3:]
    numbers = lambda records: [(r['task'], r.get('acc'), r.get('acc_norm'), r.get('exact_match'), r['n'])
                               for r in records]
    # the export (a Hugging Face directory with the bytes tokenizer), with the run's forward budget
    out = str(run['root'] / 'export_eval.jsonl')
    samples = str(run['root'] / 'samples.jsonl')
    in_process(eval_script.main, [run['export'], run['task_arg'], f'--out={out}', '--batch_size=4',
                                  f'--log_samples={samples}'])
    exported = [json.loads(line) for line in open(out)]
    logged = [json.loads(line) for line in open(samples)]
    assert [s['task'] for s in logged] == ['choices'] * len(CHOICES) + ['xcopa_eu'] * len(XCOPA) + ['gen'] * 4
    assert [s['index'] for s in logged if s['task'] == 'gen'] == [0, 1, 2, 3]
    assert all(set(s) >= {'prompt', 'generation', 'extracted', 'exact_match'} for s in logged if s['task'] == 'gen')
    assert all(set(s) >= {'prompt', 'loglikelihoods', 'acc', 'acc_norm'} for s in logged if s['task'] != 'gen')
    assert np.mean([s['exact_match']['none'] for s in logged if s['task'] == 'gen']) == final[2]['exact_match']['none']
    assert numbers(exported) == numbers(final) and 'task xcopa_eu: acc' in capsys.readouterr().out
    assert all(r['step'] is None and r['source'] == run['export'] for r in exported)
    # the run directory itself, with its own tasks, written beside its checkpoint
    in_process(eval_script.main, [run['out'], '--batch_size=4'])
    beside = [json.loads(line) for line in open(os.path.join(run['out'], 'eval.jsonl'))]
    assert numbers(beside) == numbers(final) and all(r['step'] == 6 for r in beside)
    # two processes split the batches (an odd number of them: one rank repeats one) and gather every number
    assert uneven_batches(run['files']['choices'], tokens_per_batch=32)
    out = str(run['root'] / 'two_ranks.jsonl')
    script('eval.py', run['export'], run['task_arg'], f'--out={out}', '--batch_size=1', '--device=cpu', nproc=2)
    assert numbers(json.loads(line) for line in open(out)) == numbers(final)


def uneven_batches(path, tokens_per_batch, world=2):
    """Whether a task file of the run (bytes tokenizer, block 32) makes a rank repeat a batch."""
    task = tasks.encode_task('t', path, task_files.read_task_file(path), load_tokenizer(builtin='bytes'), 32)
    plan = tasks.batch_plan([len(row) - 1 for row in task['rows']], tokens_per_batch, world)
    return any(not real for batches in plan for _, real in batches)


def test_ddp_training_splits_and_gathers(run):
    """train.py under torchrun (DDP, 2 ranks, XCOPA in 3 forwards of 4 x 32 tokens: one rank repeats one): the task
    records before the first step equal one process's, and every eval has them."""
    assert uneven_batches(run['files']['xcopa'], tokens_per_batch=4 * 32)
    out = str(run['root'] / 'ddp')
    script('train.py', *run['args'], f'--out_dir={out}', nproc=2)
    ddp, single = ([r for r in read_log(d) if r['kind'] == 'task'] for d in (out, run['out']))
    assert [(r['step'], r['task']) for r in ddp] == [(r['step'], r['task']) for r in single]
    assert without_timing(ddp[:3]) == without_timing(single[:3])


# ---- sweep.gather -------------------------------------------------------------------------------------------------

def test_gather_adds_accuracy_columns(run, tmp_path):
    """results.csv gets acc_<task>, acc_norm_<task>; results.jsonl the task curves (plot.py: tests/test_plot.py)."""
    import analysis
    import sweep
    from efficiency import load_sweep
    runs = []
    for seed in (1, 2):
        out = str(tmp_path / f'run{seed}')
        shutil.copytree(run['out'], out, ignore=shutil.ignore_patterns('*.pt'))
        config = dict(json.load(open(os.path.join(run['out'], 'summary.json')))['config'], out_dir=out)
        runs.append(dict(name=f'seed{seed}', labels=dict(protocol='', reference=0), config=config, swept=set(),
                         steps_computed=6, forked_from='', fork_step=0))
    assert sweep.gather(runs, str(tmp_path)) == 2
    rows = load_sweep(str(tmp_path))
    final = [r for r in read_log(run['out']) if r['kind'] == 'task'][-3:]
    assert rows[0]['exact_match_gen_none'] == final[2]['exact_match']['none']
    for name, record in zip(('choices', 'xcopa_eu'), final):
        assert rows[0][f'acc_{name}'] == record['acc'] and rows[0][f'acc_norm_{name}'] == record['acc_norm']
        assert rows[0]['task_evals'][name][-1] == [6, record['acc'], record['acc_norm']]
    assert analysis.task_names(rows) == ['choices', 'xcopa_eu']


# ---- bad input ----------------------------------------------------------------------------------------------------

def test_bad_task_files_fail_before_the_model(run, files, tmp_path):
    def task_file(name, *lines):
        path = tmp_path / name
        path.write_text(''.join(line + '\n' for line in lines))
        return str(path)
    good = json.dumps(CHOICES[0])
    synthetic = write_random_source(tmp_path / 'synthetic', 32 * 40, seed=1)  # a tokenizer with no HF form
    long_choice = task_file('long.jsonl', json.dumps(dict(context='a', choices=['x' * 40, 'y'], label=0)))
    gen = task_file('gen.jsonl', *[json.dumps(e) for e in GENERATE[:2]])
    cases = [
        ('few-shot file missing', {'t': dict(file=gen, num_fewshot=1, fewshot_file=str(tmp_path / 'no.jsonl'), max_gen_toks=8)}, [],
         f"task t: {tmp_path}/no.jsonl not found"),
        ('few-shot file too short', {'t': dict(file=gen, num_fewshot=2, max_gen_toks=8)}, [],
         "task t: num_fewshot=2 needs 3 examples in"),
        ('bad regex', {'t': dict(file=gen, regex='(unclosed')}, [], "task t: the regular expression '(unclosed' does "
                                                                     "not compile"),
        ('max_gen_toks 0', {'t': dict(file=gen, max_gen_toks=0)}, [], "task t: max_gen_toks=0 must be at least 1"),
        ('max_gen_toks at the context', {'t': dict(file=gen, max_gen_toks=32)}, [],
         "task t: max_gen_toks=32 must be less than the model's context of 32 tokens"),
        ('unknown option', {'t': dict(file=gen, num_fewshots=1)}, [],
         "task t: unknown option 'num_fewshots': did you mean 'num_fewshot'?"),
        ('missing file', {'t': str(tmp_path / 'none.jsonl')}, [], f"task t: {tmp_path}/none.jsonl not found"),
        ('malformed line', {'t': task_file('bad.jsonl', good, '{"context": "a", ')}, [],
         f"task t: {tmp_path}/bad.jsonl line 2 is not JSON"),
        ('label out of range', {'t': task_file('label.jsonl', good, json.dumps(dict(CHOICES[0], label=2)))}, [],
         "label.jsonl line 2: label 2 is out of range for 2 choices"),
        ('one choice', {'t': task_file('one.jsonl', json.dumps(dict(context='a', choices=['b'], label=0)))}, [],
         "one.jsonl line 1: 1 choice(s); an example needs at least two"),
        ('unknown format', {'t': task_file('other.jsonl', json.dumps(dict(prompt='a', target='b')))}, [],
         "other.jsonl line 1: unknown task format (keys ['prompt', 'target'])"),
        ('unknown file type', {'t': task_file('data.csv', 'context,choices,label')}, [],
         "data.csv: unknown task format '.csv'"),
        ('bad xcopa question', {'t': task_file('x.jsonl', json.dumps(dict(XCOPA[0], question='why')))}, [],
         "x.jsonl line 1: question 'why' must be 'cause' or 'effect'"),
        ('not a dict of files', {'t': 3}, [], "tasks={'t': 3} must map task names to task files"),
        ('a tokenizer without a Hugging Face form', {'t': files['choices']}, [f'--target_dir={synthetic}',
                                                                               f'--generic_dir={synthetic}'],
         "tasks need the model's tokenizer in Hugging Face form"),
        ('a choice longer than block_size', {'t': long_choice}, [],
         "long.jsonl line 1, choice 0: the choice is 41 tokens, more than block_size=32"),
        ('an empty stop string', {'t': dict(file=gen, until=['\n', ''])}, [],
         "task t: until=['\\n', ''] holds an empty stop string"),
        ('a directory', {'t': str(tmp_path)}, [], f"task t: {tmp_path} is a directory, not a task file"),
    ]
    argv = [[*run['args'], f'--tasks={spec!r}', *extra, f'--out_dir={tmp_path}/case{i}']
            for i, (_, spec, extra, _) in enumerate(cases)]
    failures, _ = one_line_failures([(name, expected) for name, _, _, expected in cases], argv, tmp_path)
    assert not failures, '\n'.join(failures)


def test_fewshot_file_spelled_otherwise_is_still_the_task_file(files, tmp_path):
    """fewshot_file naming the task file by another path (./, a symbolic link) is the task file: each example is
    left out of its own shots, as with fewshot_file=None, and the pool-size check counts it out."""
    path = files['choices']
    os.symlink(path, tmp_path / 'link.jsonl')
    spellings = [os.path.join(os.path.dirname(path), '.', os.path.basename(path)), str(tmp_path / 'link.jsonl')]
    drawn = lambda fewshot_file, n=3: tasks.read_tasks({'t': dict(file=path, num_fewshot=n,
                                                                  fewshot_file=fewshot_file)})[0][2]
    alone = drawn(None)
    assert all(e['record'] not in [s['record'] for s in e['shots']] for e in alone)
    for spelled in spellings:
        records = lambda examples: [[shot['record'] for shot in e['shots']] for e in examples]
        assert records(drawn(spelled)) == records(alone)
        with pytest.raises(UserError, match=f"num_fewshot={len(CHOICES)} needs {len(CHOICES) + 1} examples in "
                                            f".*the task file itself"):
            drawn(spelled, n=len(CHOICES))


def test_eval_never_writes_over_what_it_reads(run, tmp_path):
    """--out / --log_samples naming the checkpoint, a file of its run, a task or few-shot file (under any
    spelling), anything inside the model directory, or each other: one line before anything is evaluated, and
    every file is as it was."""
    import eval as eval_script
    task = shutil.copy(run['files']['choices'], tmp_path / 'task.jsonl')
    shots = shutil.copy(run['files']['choices'], tmp_path / 'shots.jsonl')
    os.symlink(task, tmp_path / 'link.jsonl')
    tasks_arg = f"--tasks={dict(t=dict(file=str(task), num_fewshot=1, fewshot_file=str(shots)))!r}"
    model, out = run['export'], run['out']
    cases = [
        ([model, f'--log_samples={model}/config.json'], 'inside the model directory'),
        ([model, f'--out={model}/eval.jsonl'], 'inside the model directory'),
        ([model, f'--log_samples={tmp_path}/link.jsonl'], "is task t's file"),
        ([model, f'--out={tmp_path}/./shots.jsonl'], "is task t's fewshot_file"),
        ([out, f'--out={out}/./ckpt.pt'], 'is the checkpoint being evaluated'),
        ([f'{out}/ckpt_3.pt', f'--log_samples={out}/log.jsonl'], 'is a file of the run'),
        ([out, f'--log_samples={out}/ckpt_3.pt'], 'is a file of the run'),
        ([model, f'--out={tmp_path}/e.jsonl', f'--log_samples={tmp_path}/./e.jsonl'], 'is also the file the records'),
    ]
    digest = lambda: {os.path.join(d, f): open(os.path.join(d, f), 'rb').read()
                      for top in (model, out, str(tmp_path)) for d, _, names in os.walk(top) for f in names}
    before = digest()
    for argv, expected in cases:
        with pytest.raises(UserError, match=expected):
            eval_script.main([*argv, tasks_arg, '--device=cpu'])
    assert digest() == before


# ---- generation tasks and few-shot, against the harness ---------------------------------------------------------

GEN_BLOCK = 160  # the harness's max_length and our block_size for generation and few-shot prompts
MAX_GEN = 12
GENERATE = [dict(context="Q: what is 2+2?\nA:", answer="4"), dict(context="The class statement ", answer="x"),
            dict(context="Euskal Herrian ñandú", answer="y"), dict(context=LONG * 3 + "So they", answer="z"),
            dict(context="<|begin_of_text|>A module is", answer="w"), dict(context="Lists are", answer=7)]
GSM_TEST = [dict(question=q, answer="It is so.\n#### 0") for q in (
    "Tom has 3 apples and buys 4 more. How many apples does he have?", "What is 12 times 3?",
    "A train travels 60 km in 1.5 hours. What is its speed?", "Sara had $25 and spent $7. How much is left?",
    "How many legs do 3 cats have?")]
GSM_TRAIN = [dict(question=f"Ana has {i} pens and gets {i + 2} more. How many pens?",
                  answer=f"She has {i} + {i + 2} = {2 * i + 2} pens.\n#### {2 * i + 2}") for i in range(6)]
GEN_OPTIONS = dict(until=['\n\n', 'ue'], max_gen_toks=MAX_GEN, ignore_case=True)
GEN_YAML = """task: local_generate
dataset_path: json
dataset_kwargs:
  data_files:
    test: {path}
test_split: test
output_type: generate_until
doc_to_text: context
doc_to_target: answer
generation_kwargs:
  until: ["\\n\\n", "ue"]
  max_gen_toks: {max_gen}
  do_sample: false
metric_list:
  - metric: exact_match
    ignore_case: true
"""
GSM_YAML = """include: {harness_yaml}
task: {task}
dataset_path: json
dataset_name: null
dataset_kwargs:
  data_files:
    train: {train}
    test: {test}
num_fewshot: {shots}
generation_kwargs:
  until: ["Question:", "</s>", "<|im_end|>"]
  do_sample: false
  temperature: 0.0
  max_gen_toks: {max_gen}
"""
CHOICES_FEWSHOT_YAML = PLAIN_YAML.replace('local_choices', 'local_choices_fewshot') + "fewshot_split: test\nnum_fewshot: 2\n"


def our_generation_tasks(path, files, tokenizer=None):
    model, tokenizer = our_model(path, GEN_BLOCK), tokenizer or load_tokenizer(path)
    spec = dict(local_generate=dict(file=files['generate'], **GEN_OPTIONS),
                local_gsm8k=dict(file=files['gsm_test'], max_gen_toks=MAX_GEN),
                local_gsm8k_fewshot=dict(file=files['gsm_test'], max_gen_toks=MAX_GEN, num_fewshot=3,
                                         fewshot_file=files['gsm_train']),
                local_choices_fewshot=dict(file=files['choices'], num_fewshot=2))
    task_set = tasks.encode_task_set(tasks.read_tasks(spec, GEN_BLOCK), tokenizer, GEN_BLOCK, 2)
    return model, {t['name']: dict(t, **tasks.evaluate(t, model, contextlib.nullcontext(), CPU)) for t in task_set}


@pytest.fixture(scope='module')
def generation(models, files):
    """Per model: our results and the harness's (batch size 1, log_samples) on a generation task, the harness's
    gsm8k.yaml 0-shot and 3-shot with its data files changed, and a 2-shot multiple-choice task drawing from its
    own file. The answers of every other example are set to what our model generates (first pass), so that exact
    match is 1 on some examples and 0 on others; the harness then generates on its own."""
    import lm_eval
    from lm_eval.tasks import TaskManager
    harness_yaml = os.path.join(os.path.dirname(lm_eval.__file__), 'tasks', 'gsm8k', 'gsm8k.yaml')
    out = {}
    threads = torch.get_num_threads()
    for arch, path in models.items():
        root = files['root'] / f'generation_{arch}'
        (root / 'yaml').mkdir(parents=True)
        data = dict(generate=write_jsonl(root / 'generate.jsonl', GENERATE), choices=files['choices'],
                    gsm_test=write_jsonl(root / 'gsm_test.jsonl', GSM_TEST),
                    gsm_train=write_jsonl(root / 'gsm_train.jsonl', GSM_TRAIN))
        _, first = our_generation_tasks(path, data)
        generate = [dict(e, answer=s['generation'].upper()) if i % 2 == 0 else e
                    for i, (e, s) in enumerate(zip(GENERATE, first['local_generate']['samples']))]
        gsm = [dict(e, answer=f"So.\n#### {s['extracted']['flexible-extract']}") if i % 2 == 0 else e
               for i, (e, s) in enumerate(zip(GSM_TEST, first['local_gsm8k']['samples']))]
        write_jsonl(data['generate'], generate)
        write_jsonl(data['gsm_test'], gsm)
        (root / 'yaml' / 'generate.yaml').write_text(GEN_YAML.format(path=data['generate'], max_gen=MAX_GEN))
        for task, shots in (('local_gsm8k', 0), ('local_gsm8k_fewshot', 3)):
            (root / 'yaml' / f'{task}.yaml').write_text(GSM_YAML.format(
                harness_yaml=harness_yaml, task=task, train=data['gsm_train'], test=data['gsm_test'], shots=shots,
                max_gen=MAX_GEN))
        (root / 'yaml' / 'choices.yaml').write_text(CHOICES_FEWSHOT_YAML.format(path=files['choices']))
        with offline():
            result = lm_eval.simple_evaluate(
                model='hf', model_args=dict(pretrained=path, dtype='float32', max_length=GEN_BLOCK), device='cpu',
                tasks=['local_generate', 'local_gsm8k', 'local_gsm8k_fewshot', 'local_choices_fewshot'],
                log_samples=True, batch_size=1, bootstrap_iters=0,
                task_manager=TaskManager(include_path=str(root / 'yaml'), include_defaults=False))
        torch.set_num_threads(threads)
        model, mine = our_generation_tasks(path, data)
        out[arch] = dict(model=model, mine=mine, theirs=result['samples'], data=data)
    return out


@pytest.mark.parametrize('arch', ['llama', 'gpt2'])
def test_generation_equal_to_the_harness(generation, arch):
    run = generation[arch]
    compared = scored = 0
    for name in ('local_generate', 'local_gsm8k', 'local_gsm8k_fewshot'):
        mine = run['mine'][name]
        theirs = sorted(run['theirs'][name], key=lambda s: (s['doc_id'], s['filter']))
        filters = sorted(mine['options']['filters'])
        assert len(theirs) == len(mine['samples']) * len(filters)
        for i, sample in enumerate(mine['samples']):
            # the same generated text: no step of ours is a near-tie, so the texts must be equal
            ids = tasks.generate(dict(mine, rows=mine['rows'][i:i + 1]), run['model'], contextlib.nullcontext(), CPU)[0]
            with torch.no_grad():
                row = mine['rows'][i]
                logits, _ = run['model'](torch.tensor([row + ids[:-1]]), all_logits=True)
            top = logits[0, len(row) - 1:].topk(2, dim=-1).values
            assert (top[:, 0] - top[:, 1]).min() > TOLERANCE, (name, i)
            for j, name_of_filter in enumerate(filters):
                their = theirs[i * len(filters) + j]
                assert their['filter'] == name_of_filter and their['doc_id'] == i
                assert their['arguments'][0][0] == sample['prompt'], (name, i)  # the same prompt string
                assert their['resps'][0][0] == sample['generation'], (name, i)
                assert their['filtered_resps'][0] == sample['extracted'][name_of_filter]
                assert float(their['exact_match']) == sample['exact_match'][name_of_filter], (name, i)
                compared += 1
                scored += sample['exact_match'][name_of_filter]
        assert mine['n'] == len(mine['samples'])
    assert compared == len(GENERATE) + 2 * 2 * len(GSM_TEST)  # gsm8k: two filters, 0-shot and 3-shot
    assert 0 < scored < compared  # exact match is 1 on some examples, 0 on others
    truncated = run['mine']['local_generate']['rows'][3]  # the long context: cut on the left
    assert len(truncated) == GEN_BLOCK - MAX_GEN


@pytest.mark.parametrize('arch', ['llama', 'gpt2'])
def test_fewshot_choices_equal_to_the_harness(generation, arch):
    run = generation[arch]
    mine, theirs = run['mine']['local_choices_fewshot'], sorted(run['theirs']['local_choices_fewshot'],
                                                                key=lambda s: s['doc_id'])
    for i, (sample, their) in enumerate(zip(mine['samples'], theirs)):
        assert [list(a) for a in their['arguments']] == [[sample['prompt'], ' ' + c]
                                                         for c in mine['examples'][i]['choices']]
        assert np.abs(np.array(sample['loglikelihoods']) - [r[0][0] for r in their['resps']]).max() <= TOLERANCE
    assert all(s['prompt'].count('\n\n') >= 2 for s in mine['samples'])  # two few-shot examples in each


CHAT_TEMPLATE = ("{{ bos_token }}{% for message in messages %}{{ '<|start|>' + message['role'] + '\\n' + "
                 "message['content'] | trim + '<|end|>\\n' }}{% endfor %}{% if add_generation_prompt %}"
                 "{{ '<|start|>assistant\\n' }}{% endif %}")


def test_chat_template_equal_to_the_harness(models, generation, tmp_path):
    """apply_chat_template (the harness's --apply_chat_template, few-shot examples as turns by default): the same
    prompt strings (BOS from the template, none added again) and the same generations on the Llama given a chat
    template; a 2-shot multiple-choice task in one user turn (fewshot_as_multiturn=False) scores the same."""
    import lm_eval
    from lm_eval.tasks import TaskManager
    path = str(tmp_path / 'chat_llama')
    shutil.copytree(models['llama'], path)
    os.remove(os.path.join(path, 'chat_template.jinja'))  # the tiny model's own template: this test's instead
    config_file = os.path.join(path, 'tokenizer_config.json')
    config = dict(json.load(open(config_file)), chat_template=CHAT_TEMPLATE)
    json.dump(config, open(config_file, 'w'))
    data = generation['llama']['data']
    yaml_dir = os.path.join(os.path.dirname(data['generate']), 'yaml')  # the generation fixture's task YAMLs
    results = {}
    for multiturn in (True, False):
        with offline():
            result = lm_eval.simple_evaluate(
                model='hf', model_args=dict(pretrained=path, dtype='float32', max_length=GEN_BLOCK), device='cpu',
                tasks=['local_generate', 'local_gsm8k_fewshot'] if multiturn else ['local_choices_fewshot'],
                log_samples=True, batch_size=1, bootstrap_iters=0, apply_chat_template=True,
                fewshot_as_multiturn=multiturn, task_manager=TaskManager(include_path=yaml_dir,
                                                                        include_defaults=False))
        results.update(result['samples'])
    model, tokenizer = our_model(path, GEN_BLOCK), load_tokenizer(path)
    spec = dict(local_generate=dict(file=data['generate'], apply_chat_template=True, **GEN_OPTIONS),
                local_gsm8k_fewshot=dict(file=data['gsm_test'], max_gen_toks=MAX_GEN, num_fewshot=3,
                                         fewshot_file=data['gsm_train'], apply_chat_template=True),
                local_choices_fewshot=dict(file=data['choices'], num_fewshot=2, apply_chat_template=True,
                                           fewshot_as_multiturn=False))
    for task in tasks.encode_task_set(tasks.read_tasks(spec, GEN_BLOCK), tokenizer, GEN_BLOCK, 2):
        mine = tasks.evaluate(task, model, contextlib.nullcontext(), CPU)
        theirs = {s['doc_id']: s for s in results[task['name']]}  # one filter per doc is enough for the texts
        for i, sample in enumerate(mine['samples']):
            their = theirs[i]
            assert sample['prompt'].startswith('<|begin_of_text|><|start|>user\n')
            if task['kind'] == 'generate':
                assert their['arguments'][0][0] == sample['prompt'], (task['name'], i)
                assert task['rows'][i][1] != task['rows'][i][0]  # one BOS
                assert their['resps'][0][0] == sample['generation'], (task['name'], i)
            else:
                assert [list(a) for a in their['arguments']] == [[sample['prompt'], c]
                                                                 for c in task['examples'][i]['choices']]
                assert np.abs(np.array(sample['loglikelihoods']) - [r[0][0] for r in their['resps']]).max() \
                    <= TOLERANCE
        if task['name'] == 'local_gsm8k_fewshot':
            assert mine['samples'][0]['prompt'].count('<|start|>assistant') == 4  # 3 answers, then the prompt


@pytest.fixture(scope='module', autouse=True)
def one_thread():
    """One thread in this process (the scripts' subprocesses run with one too): the tiny models' many small
    forwards and generation steps only wait on each other with two threads on a shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize('text', ['a/mc.jsonl,b/mc.jsonl', 'x=a.jsonl,x=b.jsonl', "{'x': 'a.jsonl', 'x': 'b.jsonl'}"])
def test_a_task_name_given_twice_is_refused(text):
    """Two tasks of one name: the later replaced the earlier in the dict, which was never scored, without a word."""
    import eval as eval_script
    from configurator import UserError
    with pytest.raises(UserError, match="--tasks names task '(mc|x)' twice"):
        eval_script.parse_tasks(text)
    assert eval_script.parse_tasks('a/mc.jsonl,b/other.jsonl') == {'mc': 'a/mc.jsonl', 'other': 'b/other.jsonl'}
