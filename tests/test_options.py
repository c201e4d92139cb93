"""Bad input at every script's command line (issue 20), and the one command-line convention (issue 19 item 4):
- every option of every script's option table (train.RULES and config/default.py, bench.BENCH_KEYS, bench_gpu's,
  schedule's, sweep's, plot's, efficiency's, sample's, eval's, export's, prepare's argparse parsers with their
  rules, hub_chat's free-text options) gets bad values generated from its type and rule: the wrong type, empty,
  out of range, a missing path, a file where a directory belongs and the reverse, garbage bytes where a
  checkpoint / JSON / safetensors file belongs. Each must exit 2 with one `error:` line naming the option or the
  file, no traceback, and leave everything beside it (one finished run with its checkpoint, log, summary.json and
  task results, its data, a model directory) byte for byte as it was;
- the four classes of issue 20's "Why", each as a test that fails on the code before it: a check after a change,
  options passed through unchecked, paths of the wrong kind, devices and files not validated;
- issue 21: a finished out_dir is refused in one line, --overwrite=True replaces it; eval.py writes into a run
  directory and never into a model directory unless asked; train.py says what it will run before it reads data.
Scripts run in this process (their main under configurator.run_main), so torch is imported once; every case but
the overwrite run fails before any data is read or model built."""
import ast
import contextlib
import hashlib
import io
import json
import os
import re
import runpy
import shutil
import subprocess
import sys

import pytest
import torch

import bench
import bench_gpu
import configurator
import efficiency
import eval as eval_script
import export
import plot
import sample
import schedule
import sweep
import train
from configurator import DEFAULTS, NUMBER_RULES, run_main
from helpers import ROOT, write_random_source

sys.path.insert(0, os.path.join(ROOT, 'prepare'))
import common  # noqa: E402
import demo  # noqa: E402
import demo_chat  # noqa: E402
import hub_chat  # noqa: E402
import local  # noqa: E402
import tiny_model  # noqa: E402

BLOCK = 32
HUB_SCRIPTS = ('basque', 'c4', 'finemath', 'flan', 'slimpajama', 'starcoder')  # each a run_hub_script call
BYTES = dict(tokenizer='bytes', vocab_size=257, eot_token=256)  # random ids < 256 read as bytes: tasks can encode


def call(main, argv):
    """(exit status, stdout, stderr) of run_main(main, argv) in this process; an exception that escapes is a
    traceback, status 1, as the interpreter would end."""
    out, err, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            run_main(main, list(argv))
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else int(e.code is not None)
        except Exception as e:  # noqa: BLE001: the traceback a user would see
            code = 1
            err.write(f"Traceback (most recent call last):\n{type(e).__name__}: {e}\n")
    return code, out.getvalue(), err.getvalue()


def scripts_with_a_command_line():
    """Every script at the root and in prepare/ that runs as `python X.py`: what the tables below must cover."""
    return {prefix + name[:-3] for folder, prefix in ((ROOT, ''), (os.path.join(ROOT, 'prepare'), 'prepare/'))
            for name in os.listdir(folder) if name.endswith('.py')
            and "if __name__ == '__main__':" in open(os.path.join(folder, name)).read()}


def hub_script(name):
    """A Hub script's main: the file run as `python prepare/NAME.py ARGV` (its pins live under __main__)."""
    def main(argv):
        saved = sys.argv
        sys.argv = [f'prepare/{name}.py', *argv]
        try:
            runpy.run_path(os.path.join(ROOT, 'prepare', f'{name}.py'), run_name='__main__')
        finally:
            sys.argv = saved
    return main


def snapshot(root):
    """Every file under root and its bytes' hash: what a refused command must leave as it was."""
    state = {}
    for directory, _, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            with open(path, 'rb') as f:
                state[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return state


@pytest.fixture(scope='session')
def world(tmp_path_factory):
    """One finished run (trained once per session, with a task), its data, an export of it as a model directory,
    a chat tokenizer's model directory (tiny_model's tokenizer and template, no weights), and the wrong things to
    pass: a file, a missing path, an empty directory, garbage where a checkpoint, JSON or safetensors file
    belongs."""
    root = tmp_path_factory.mktemp('options')
    w = dict(root=str(root),
             generic=write_random_source(root / 'generic', BLOCK * 200, seed=0, **BYTES),
             target=write_random_source(root / 'target', BLOCK * 40, seed=1, **BYTES),
             run=str(root / 'run'), file=str(root / 'a_file.txt'), missing=str(root / 'missing'),
             empty_dir=str(root / 'empty_dir'), garbage=str(root / 'garbage.pt'), new=str(root / 'never_made'),
             task=str(root / 'task.jsonl'), model=str(root / 'model'), garbage_model=str(root / 'garbage_model'),
             bad_weights_model=str(root / 'bad_weights_model'), chat_model=str(root / 'chat_model'))
    tiny_model.save_tokenizer(w['chat_model'], *tiny_model.make_tokenizer('llama', vocab_size=300,
                                                                          texts=tiny_model.training_texts()[:12]))
    with open(w['task'], 'w') as f:
        f.writelines(json.dumps(dict(context=f"ab{i}", choices=["cd", "efg"], label=i % 2)) + '\n' for i in range(4))
    with open(w['file'], 'w') as f:
        f.write("a file, not a directory\n")
    os.makedirs(w['empty_dir'])
    garbage = bytes(range(256)) * 8
    with open(w['garbage'], 'wb') as f:
        f.write(garbage)
    data = [f"--generic_dir={w['generic']}", f"--target_dir={w['target']}"]
    w['data'] = data
    result = subprocess.run([sys.executable, 'train.py', 'config/tiny.py', *data, f"--out_dir={w['run']}",
                             '--max_iters=6', '--target_tokens=64', '--target_epochs=2', '--eval_interval=3',
                             '--spike_eval_steps=0', '--log_interval=2',
                             f"--tasks={{'t': {w['task']!r}}}"], cwd=ROOT, capture_output=True, text=True,
                            timeout=300, env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    w['train_stdout'] = result.stdout
    code, out, err = call(eval_script.main, [w['run'], '--device=cpu'])  # the run's task results: eval.jsonl
    assert code == 0 and os.path.isfile(os.path.join(w['run'], 'eval.jsonl')), err
    code, _, err = call(export.main, [w['run'], f"--to={w['model']}"])
    assert code == 0, err
    for name, broken in (('garbage_model', 'config.json'), ('bad_weights_model', 'model.safetensors')):
        shutil.copytree(w['model'], w[name])
        with open(os.path.join(w[name], broken), 'wb') as f:
            f.write(garbage)
    w['sweep_file'] = str(root / 'sweep_file.py')
    with open(w['sweep_file'], 'w') as f:
        f.write(f"base = ['config/tiny.py']\noverrides = {{'generic_dir': {w['generic']!r}, "
                f"'target_dir': {w['target']!r}}}\ngrid = {{'replay_fraction': [0.5]}}\n"
                f"sweep_dir = {str(root / 'sweep')!r}\n")
    w['garbage_sweep'] = str(root / 'garbage_sweep')
    os.makedirs(w['garbage_sweep'])
    for name in ('results.csv', 'results.jsonl'):
        with open(os.path.join(w['garbage_sweep'], name), 'wb') as f:
            f.write(garbage)
    return w


# ---- bad values from the tables ----------------------------------------------------------------------------------

def bad_values(default, rule, w):
    """The generic bad values of an option with this default and rule."""
    values = []
    if isinstance(default, bool):
        values += ['maybe', '2']
    elif isinstance(default, (int, float)):
        values += ['abc', '', '[1]']  # wrong type, empty
    elif isinstance(default, (list, dict)):
        values += ['5']
    if rule in NUMBER_RULES:
        numbers = [-2, -1, 0, 1, 2, 10**9] + ([-0.5, 0.5, 1.0, 1.5, 1e999, -1e999] if isinstance(default, float) else [])
        values += [repr(v) for v in numbers if not NUMBER_RULES[rule](v)]
    elif isinstance(rule, tuple):
        values += ['nonsense', ''] if any(isinstance(c, str) for c in rule) else ['5']
    elif rule == 'a torch device':
        values += ['tpu', 'meta', 'cuda:99' if torch.cuda.is_available() else 'cuda']
    elif rule == 'GPU indices':
        values += ['a,b', '0,-1']
    elif rule == 'an output directory':
        values += [w['file'], os.path.join(w['file'], 'sub')]
    elif rule == 'an output file':
        values += [w['empty_dir'], os.path.join(w['file'], 'sub')]
    elif rule == 'an existing directory':
        values += [w['missing'], w['file']]
    elif rule == 'an existing file':
        values += [w['missing'], w['empty_dir']]
    elif rule == 'a checkpoint':
        values += [w['missing'], w['empty_dir'], w['garbage']]
    elif rule == 'a checkpoint or a model directory':
        values += [w['missing'], w['empty_dir'], w['garbage'], w['garbage_model'], w['bad_weights_model']]
    elif rule is not None:
        raise AssertionError(f"no bad values for rule {rule!r}: add them here")
    return values


def script_tables(w):
    """Per script: (main, its option table, its rules, the positional arguments its rules name, argv before the
    bad option given an option's name). Each table is the script's own."""
    data, run = w['data'], w['run']
    train_base = ['config/tiny.py', *data, f'--out_dir={run}']  # the finished run itself: nothing may touch it
    slurm_only = set(sweep.SLURM_OPTIONS)
    sweep_dir = dict(sweep_dir='an existing directory')  # plot's and efficiency's positional: load_sweep checks it
    return dict(
        train=(train.main, DEFAULTS, train.RULES, (), lambda key: train_base),
        bench=(bench.main, bench.BENCH_KEYS, bench.BENCH_RULES, (), lambda key: train_base),
        bench_gpu=(bench_gpu.main, bench_gpu.OPTIONS, bench_gpu.RULES, (),
                   lambda key: [f"--data_dir={w['new']}_data", f"--out={w['new']}_out", '--device=cpu']),
        schedule=(schedule.main, schedule.OPTIONS, schedule.RULES, (), lambda key: ['config/tiny.py', *data]),
        sweep=(sweep.main, sweep.OPTIONS, sweep.RULES, (),
               lambda key: [w['sweep_file'], '--dry_run'] + (['--launcher=slurm'] if key in slurm_only else [])),
        plot=(plot.main, plot.OPTIONS, sweep_dir, ('sweep_dir',),
              lambda key: [w['garbage_sweep']]),
        efficiency=(efficiency.main, {}, sweep_dir, ('sweep_dir',), lambda key: []),
        sample=(sample.main, sample.OPTIONS, sample.RULES, ('source',), lambda key: [run]),
        eval=(eval_script.main, eval_script.OPTIONS, eval_script.RULES, ('source',), lambda key: [run]),
        export=(export.main, export.OPTIONS, export.RULES, ('source',), lambda key: [run, f"--to={w['new']}"]),
    )


def option_cases(w):
    """(script, option, value, main, argv) for every option of every script's table and each of its bad values."""
    cases = []
    for script, (main, table, rules, positional, base) in script_tables(w).items():
        for key in sorted(set(table) | set(rules)):
            for value in bad_values(table.get(key, ''), rules.get(key), w):
                if key in positional:  # the bad value in the positional's place (base's first argument)
                    argv = [value, *base(key)[1:]]
                else:
                    argv = [*base(key), f'--{key}={value}']
                cases.append((script, key, value, main, argv))
    return cases


def prepare_parsers(w):
    """Each prepare/ script's argparse parser (its option table), caught as its main builds it; with the argv
    that makes a valid command of it (a bad option then goes last)."""
    class Caught(Exception):
        pass
    scripts = dict(demo=(demo.main, [f"--generic_out={w['new']}_g", f"--target_out={w['new']}_t"]),
                   demo_chat=(demo_chat.main, [f"--generic_out={w['new']}_g.jsonl",
                                               f"--target_out={w['new']}_t.jsonl"]),
                   local=(local.main, [f"--input={w['task']}", f"--out={w['new']}"]),
                   tiny_model=(tiny_model.main, [f"--out={w['new']}"]),
                   hub_chat=(hub_chat.main, hub_chat_argv(w)),
                   **{name: (hub_script(name), [f"--out={w['new']}"]) for name in HUB_SCRIPTS})
    parsers, original = {}, common.Parser.parse_args

    def catch(self, args=None, namespace=None):
        parsers[name] = self
        raise Caught
    common.Parser.parse_args = catch
    try:
        for name, (main, argv) in scripts.items():
            with pytest.raises(Caught):
                main(argv)
    finally:
        common.Parser.parse_args = original
    return {name: (main, argv, parsers[name]) for name, (main, argv) in scripts.items()}


def hub_chat_argv(w):
    """hub_chat.py's valid command but for the network: the chat model directory, a block_size, a new --out."""
    return [f"--tokenizer={w['chat_model']}", '--block_size=32', f"--out={w['new']}"]


def prepare_cases(w):
    cases = []
    for script, (main, base, parser) in prepare_parsers(w).items():
        for action in parser._actions:
            option = next((o for o in action.option_strings if o.startswith('--')), None)
            if option is None or option == '--help':
                continue
            values = bad_values(action.default, action.rule, w) if action.rule else []  # --out's: an output dir
            if action.choices:
                values += ['nonsense']
            elif action.type is common.parse_count:
                values += ['abc', '', '-5']
            elif action.type is common.at_least_1:
                values += ['0', '-1', 'abc', '']
            elif action.type is common.parse_bool:
                values += ['maybe', '2']
            elif action.type in (int, float):
                values += ['abc', '']
            # free text (a dataset id, a field name) has no bad values
            cases += [(f'prepare/{script}', option[2:], value, main, [*base, f'{option}={value}']) for value in values]
    # what the tables cannot say: free text a chat script checks, and a range prepare/chat.py checks
    tokenizer_file = os.path.join(w['chat_model'], 'tokenizer.json')
    for key, values in (('block_size', ['0', '-1']), ('tokenizer', [w['missing'], tokenizer_file, w['empty_dir']]),
                        ('date', ['2024-13-45', 'today']), ('end_of_turn', ['<|no_such_token|>'])):
        cases += [('prepare/hub_chat', key, value, hub_chat.main, [*hub_chat_argv(w), f'--{key}={value}'])
                  for value in values]
    return cases


def test_every_option_of_every_script_refuses_bad_values(world):
    before = snapshot(world['root'])
    cases = option_cases(world) + prepare_cases(world)
    scripts = {c[0] for c in cases}
    assert {'train', 'bench', 'bench_gpu', 'schedule', 'sweep', 'plot', 'efficiency', 'sample', 'eval', 'export',
            'prepare/demo', 'prepare/demo_chat', 'prepare/local', 'prepare/tiny_model', 'prepare/c4',
            'prepare/hub_chat'} <= scripts
    assert scripts_with_a_command_line() <= scripts, scripts_with_a_command_line() - scripts
    assert len(cases) > 300
    failures = []
    for script, key, value, main, argv in cases:
        code, _, stderr = call(main, argv)
        lines = stderr.strip().splitlines()
        named = key in stderr or (value and value in stderr) or (value and os.path.basename(value) in stderr)
        if not (code == 2 and len(lines) == 1 and lines[0].startswith('error: ') and named
                and 'Traceback' not in stderr):
            failures.append(f"{script} --{key}={value!r}: exit {code}, stderr {stderr[-600:]!r}")
        elif snapshot(world['root']) != before:
            failures.append(f"{script} --{key}={value!r} changed files beside it")
            before = snapshot(world['root'])
    assert not failures, f"{len(failures)} of {len(cases)} cases:\n" + '\n'.join(failures)


def test_every_number_option_declares_its_range():
    """A number option without a rule could take any value: every int/float option of a script's table has one."""
    tables = dict(bench=(bench.BENCH_KEYS, bench.BENCH_RULES), bench_gpu=(bench_gpu.OPTIONS, bench_gpu.RULES),
                  schedule=(schedule.OPTIONS, schedule.RULES),
                  sweep=(sweep.OPTIONS, sweep.RULES), sample=(sample.OPTIONS, sample.RULES),
                  eval=(eval_script.OPTIONS, eval_script.RULES), export=(export.OPTIONS, export.RULES))
    missing = [f"{script}: {key}" for script, (table, rules) in tables.items() for key, default in table.items()
               if isinstance(default, (int, float)) and not isinstance(default, bool) and key not in rules]
    assert not missing


def test_the_plan_refuses_what_train_refuses(world):
    """schedule.py's command line and sweep.py plan without train.py's own checks: a value train.RULES refuses for
    a key the plan reads is refused by schedule.py too, in train.py's words; and --key=None is refused for every
    key that does not default to None (it used to pass the type check and end in a TypeError)."""
    shared = sorted(set(schedule.CONFIG_RULES) & set(train.RULES))
    assert {'learning_rate', 'min_lr', 'eval_interval', 'data_seed'} <= set(shared)
    failures = []
    for key in shared:
        for value in bad_values(DEFAULTS[key], train.RULES[key], world):
            option = f'--{key}={value}'
            code, _, stderr = call(schedule.main, ['config/tiny.py', *world['data'], option])
            _, _, train_stderr = call(train.main, ['config/tiny.py', *world['data'], f"--out_dir={world['new']}",
                                                   option])
            if code != 2 or stderr != train_stderr or len(stderr.splitlines()) != 1:
                failures.append(f"{option}: schedule.py {code} {stderr!r}, train.py {train_stderr!r}")
    for key in [k for k, default in DEFAULTS.items() if default is not None]:
        code, _, stderr = call(schedule.main, ['config/tiny.py', f'--{key}=None'])
        if not (code == 2 and stderr.startswith(f"error: config key '{key}'") and len(stderr.splitlines()) == 1):
            failures.append(f"--{key}=None: {code} {stderr!r}")
    assert not failures, '\n'.join(failures)
    assert not os.path.exists(world['new'])


def test_a_choice_is_exact():
    """A tuple rule takes only its own values: True is not 1 and 1 is not True (`1 in (True, False)` is True)."""
    configurator.check_rule('tie_embeddings', True, (None, True, False))
    for name, value, rule in (('tie_embeddings', 1, (None, True, False)), ('spike_evals', 0, (True, False)),
                              ('stages[0] reset_optimizer', 1, schedule.STAGE_RULES['reset_optimizer'])):
        with pytest.raises(configurator.UserError, match=rf"^{re.escape(name)}={value} must be "):
            configurator.check_rule(name, value, rule)


# ---- the convention -------------------------------------------------------------------------------------------------

def test_help_prints_each_scripts_usage_and_exits_0(world):
    mains = dict(train=train.main, bench=bench.main, bench_gpu=bench_gpu.main, schedule=schedule.main,
                 sweep=sweep.main, plot=plot.main, efficiency=efficiency.main, sample=sample.main,
                 eval=eval_script.main, export=export.main, demo=demo.main, demo_chat=demo_chat.main,
                 local=local.main, tiny_model=tiny_model.main, hub_chat=hub_chat.main,
                 **{name: hub_script(name) for name in HUB_SCRIPTS})
    docs = dict(train=train, bench=bench, bench_gpu=bench_gpu, schedule=schedule, sweep=sweep, plot=plot,
                efficiency=efficiency, sample=sample, eval=eval_script, export=export, demo=demo, demo_chat=demo_chat,
                local=local, tiny_model=tiny_model, hub_chat=hub_chat)
    assert {name.split('/')[-1] for name in scripts_with_a_command_line()} <= set(mains)
    for name, main in mains.items():
        for flag in ('--help', '-h'):
            code, stdout, stderr = call(main, [flag])
            doc = docs[name].__doc__ if name in docs else \
                ast.get_docstring(ast.parse(open(os.path.join(ROOT, 'prepare', f'{name}.py')).read()))
            first = doc.strip().splitlines()[0]
            assert code == 0 and first.split()[0] in stdout and not stderr, (name, flag, code, stderr)


def test_key_value_forms_and_bare_booleans():
    c = configurator.load_config(['config/tiny.py', '--max_iters', '7', '--wandb_log', '--compile', 'False',
                                  '--learning_rate=0.01', '--log_batch_ids', 'True'])
    assert (c['max_iters'], c['wandb_log'], c['compile'], c['learning_rate'], c['log_batch_ids']) == \
        (7, True, False, 0.01, True)
    options = configurator.parse_options(['run', '--pdf', '--fit', 'False', '--n', '3'],
                                         dict(pdf=False, fit=True, n=1), positional=['dir'])
    assert options == dict(pdf=True, fit=False, n=3, dir='run')
    with pytest.raises(configurator.UserError, match=r"unknown option --pfd \(did you mean --pdf\?\)"):
        configurator.parse_options(['run', '--pfd'], dict(pdf=False), positional=['dir'])
    with pytest.raises(configurator.UserError, match=r"unknown config key 'max_iter' .*did you mean 'max_iters'"):
        configurator.load_config(['--max_iter', '5'])
    # sample.py: the run as a positional, --out_dir as nanoGPT's alias
    assert configurator.parse_options(['out/x'], sample.OPTIONS, positional=['source?'])['source'] == 'out/x'


def test_output_piped_into_head_ends_quietly():
    """`python schedule.py CONFIG --format=json | head -c 100`: the reader stops early, the script ends without a
    BrokenPipeError traceback (its output here, ~1 MB of eval steps, is far more than a pipe holds)."""
    process = subprocess.Popen([sys.executable, 'schedule.py', 'config/tiny.py', '--max_iters=100000',
                                '--eval_interval=1', '--format=json'], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    assert process.stdout.read(100).startswith(b'{')
    process.stdout.close()
    assert process.wait(timeout=60) == 1 and process.stderr.read() == b''


def test_sweep_options_in_both_forms(world):
    _, options, overrides = sweep.parse_args([world['sweep_file'], '--jobs', '2', '--dry_run', '--max_iters', '5',
                                              '--share=False'])
    assert (options['jobs'], options['dry_run'], options['share'], overrides) == (2, True, False, {'max_iters': 5})
    code, _, stderr = call(sweep.main, [world['sweep_file'], '--jbos=2'])
    assert code == 2 and "did you mean 'jobs'" in stderr, stderr


def test_prepare_follows_the_convention(world):
    code, _, stderr = call(tiny_model.main, [f"--out={world['new']}", '--tide'])
    assert code == 2 and 'did you mean --tied?' in stderr and len(stderr.splitlines()) == 1, stderr
    code, _, stderr = call(tiny_model.main, [f"--out={world['new']}", '--arch', 'nonsense'])
    assert code == 2 and '--arch' in stderr, stderr
    assert not os.path.exists(world['new'])


# ---- issue 20's four classes, each failing on the code before it --------------------------------------------------

def test_a_refused_run_loses_nothing(world, tmp_path):
    """A finished out_dir with a task file whose choice is longer than block_size: the task error, and
    summary.json still there (prepare_out_dir used to run first and delete it)."""
    long_task = tmp_path / 'long.jsonl'
    long_task.write_text(json.dumps(dict(context="ab", choices=["c" * 40, "d"], label=0)) + '\n')
    before = snapshot(world['root'])
    for extra in ([f"--tasks={{'long': {str(long_task)!r}}}"],
                  [f"--tasks={{'long': {str(long_task)!r}}}", '--overwrite=True'], []):
        code, _, stderr = call(train.main, ['config/tiny.py', *world['data'], f"--out_dir={world['run']}", *extra])
        assert code == 2 and len(stderr.splitlines()) == 1, stderr
        assert ('more than block_size' in stderr) if extra else ('holds a finished run (summary.json)' in stderr)
        assert snapshot(world['root']) == before


def test_a_new_start_never_saves_over_an_unfinished_runs_checkpoint(world, tmp_path):
    """A run stopped before its end (a checkpoint, no summary.json): the same command without --init_from=resume
    used to start from scratch and save over its checkpoint and log; it is refused, and everything stays."""
    run = str(tmp_path / 'unfinished')
    shutil.copytree(world['run'], run)
    os.remove(os.path.join(run, 'summary.json'))
    before = snapshot(run)
    for extra in ([], [f"--init_from={world['run']}"]):  # from scratch, and from another run's weights
        code, _, stderr = call(train.main, ['config/tiny.py', *world['data'], f'--out_dir={run}', *extra])
        assert code == 2 and stderr.startswith(f"error: out_dir={run!r} holds the checkpoint of an unfinished run: "
                                               "continue it with --init_from=resume"), stderr
    assert snapshot(run) == before
    # its resume keeps what the updates compute with (dropout, weight decay, clipping, dtype were not checked)
    for key, value in (('dropout', 0.1), ('weight_decay', 0.0), ('grad_clip', 0.5), ('dtype', 'bfloat16')):
        code, _, stderr = call(train.main, ['config/tiny.py', *world['data'], f'--out_dir={run}', '--init_from=resume',
                                            f'--{key}={value}'])
        assert code == 2 and "changed since it was saved: " in stderr and f"{key} " in stderr, stderr
    assert snapshot(run) == before


def test_config_files_that_exit_or_are_directories(tmp_path):
    """A config file that calls exit() ended train.py silently (`raise SystemExit`: status 0, nothing trained); a
    directory given as a config file was "not found"."""
    (tmp_path / 'exits.py').write_text("import sys\nsys.exit(3)\n")
    for path, message in ((tmp_path / 'exits.py', 'failed to run: SystemExit: 3'),
                          (tmp_path, 'is a directory, not a file')):
        code, _, stderr = call(train.main, ['config/tiny.py', str(path)])
        assert code == 2 and stderr == f"error: config file {path} {message}\n", stderr


def test_an_output_that_cannot_be_written_is_refused_first(world, tmp_path):
    """An out_dir on a read-only place was a PermissionError/OSError traceback once training had begun (and
    bench.py's --bench_json one after the whole benchmark): the output rules check it can be written."""
    locked = tmp_path / 'locked'
    locked.mkdir()
    if subprocess.run(['chattr', '+i', str(locked)], capture_output=True).returncode != 0:
        pytest.skip('chattr +i is not available here (it makes a directory unwritable even for root)')
    try:
        for main, argv, key in ((train.main, ['config/tiny.py', *world['data'], f'--out_dir={locked}/run'], 'out_dir'),
                                (bench.main, ['config/tiny.py', *world['data'], f'--bench_json={locked}/b.json'],
                                 'bench_json')):
            code, _, stderr = call(main, argv)
            assert code == 2 and stderr.startswith(f"error: {key}=") and f"cannot be written: {locked} is not " \
                "writable" in stderr, stderr
        assert os.listdir(locked) == []
    finally:
        subprocess.run(['chattr', '-i', str(locked)])


def test_overwrite_replaces_a_finished_run_and_train_says_what_it_runs(world, tmp_path):
    run = str(tmp_path / 'run')
    shutil.copytree(world['run'], run)
    old = json.load(open(os.path.join(run, 'summary.json')))
    code, stdout, stderr = call(train.main, ['config/tiny.py', *world['data'], f'--out_dir={run}', '--max_iters=6',
                                             '--target_tokens=64', '--target_epochs=2', '--seed=7', '--overwrite'])
    assert code == 0, stderr
    new = json.load(open(os.path.join(run, 'summary.json')))
    assert new['config']['seed'] == 7 and old['config']['seed'] == 1337
    lines = world['train_stdout'].splitlines()
    # before anything else: the config file, the model's size, the steps and the device
    assert lines[0].startswith('train.py: config/tiny.py -> ') and 'non-embedding params' in lines[0] \
        and '6 steps' in lines[0] and 'device cpu' in lines[0]
    assert any(' elapsed, ETA ' in line for line in lines if line.startswith('step '))
    assert any(line.startswith('estimated total: ') for line in lines)
    # printed before the data is read: a missing data directory still shows what would have run
    code, stdout, stderr = call(train.main, ['config/tiny.py', f"--generic_dir={world['missing']}"])
    assert code == 2 and stdout.startswith('train.py: config/tiny.py -> out/tiny: gpt2 2 layers'), stdout


def test_sweep_resources_are_range_checked(world):
    """Options that used to pass through: negative SLURM resources submitted, GPU slots that can never exist."""
    before = snapshot(world['root'])
    for extra, piece in ((['--launcher=slurm', '--time=-5'], '--time=-5 must be at least 1'),
                         (['--launcher=slurm', '--mem_gb=-4'], '--mem_gb=-4 must be 0 or more'),
                         (['--launcher=slurm', '--cpus_per_task=-1'], '--cpus_per_task=-1 must be 0 or more'),
                         (['--gpus=0,1', '--gpus_per_run=4'], '--gpus_per_run=4 must be between 1 and the 2 GPU(s)'),
                         (['--jobs=0'], '--jobs=0 must be at least 1')):
        code, _, stderr = call(sweep.main, [world['sweep_file'], '--dry_run=True', *extra])
        assert code == 2 and len(stderr.splitlines()) == 1 and piece in stderr, (extra, stderr)
    assert snapshot(world['root']) == before


def test_sweep_file_shapes_are_checked(tmp_path):
    """A sweep file whose keys have the wrong shape is one line naming the key, before any run is planned (an empty
    grid list was an IndexError, a grid value or `runs` that is not a list a TypeError, `base = 'x.py'` read as the
    files 'x', '.', 'p', 'y'); a run name that is not a plain directory (given, or made of values with a '/') and an
    out_dir, which the sweep sets itself, wherever it is given, are refused."""
    cases = (("base = 'config/tiny.py'", "base must be a list of config files"),
             ("base = [5]", "base must be a list of config files"),
             ("overrides = 3", "overrides must be a dict of config keys"),
             ("grid = [0.5]", "grid must be a dict of lists"),
             ("grid = {'replay_fraction': []}", "grid['replay_fraction'] = [] must be a non-empty list of values"),
             ("grid = {'replay_fraction': 0.5}", "grid['replay_fraction'] = 0.5 must be a non-empty list of values"),
             ("runs = 5", "runs must be a list of dicts"),
             ("runs = [dict(name='a'), 5]", "runs must be a list of dicts"),
             ("runs = [dict(name='a/b')]", "run name 'a/b' is not a plain directory name"),
             ("runs = [dict(name='..')]", "run name '..' is not a plain directory name"),
             ("grid = {'target_dir': ['data/a', 'data/b']}", "run name 'target_dirdata/a' is not a plain directory"),
             ("grid = {'out_dir': ['x', 'y']}", "sweep run out_dirx sets out_dir='x', but a run writes to sweep_dir/"),
             ("runs = [dict(name='a', out_dir='x')]", "sweep run a sets out_dir='x'"),
             ("runs = [dict(protocol=3)]", "runs[0] protocol=3 must be a string"),  # were TypeErrors in expand
             ("runs = [{}, dict(reference='yes')]", "runs[1] reference='yes' must be 0 or 1"))
    for i, (line, piece) in enumerate(cases):
        path = tmp_path / f'sweep{i}.py'
        path.write_text(f"{line}\nsweep_dir = {str(tmp_path / 'out')!r}\n" +
                        ("" if line.startswith('base') else "base = ['config/tiny.py']\n"))
        code, _, stderr = call(sweep.main, [str(path), '--dry_run'])
        assert code == 2 and len(stderr.splitlines()) == 1 and piece in stderr, (line, stderr)
    path.write_text(f"base = ['config/tiny.py']\nsweep_dir = {str(tmp_path / 'out')!r}\n")
    code, _, stderr = call(sweep.main, [str(path), '--dry_run', '--out_dir=x'])
    assert code == 2 and "sweep run run sets out_dir='x'" in stderr, stderr
    for value in ("''", "5"):  # '' passed the dry run, then os.makedirs('') failed; 5 was a TypeError
        path.write_text(f"base = ['config/tiny.py']\nsweep_dir = {value}\n")
        code, _, stderr = call(sweep.main, [str(path), '--dry_run'])
        assert code == 2 and f"sweep_dir={eval(value)!r} must name the directory the runs go to" in stderr, stderr
    assert not (tmp_path / 'out').exists()


def test_paths_of_the_wrong_kind(world):
    before = snapshot(world['root'])
    for main, argv, piece in (
            (tiny_model.main, ['--out', world['file']], 'is a file, not a directory'),
            (local.main, ['--input', world['task'], '--out', world['file']], 'is a file, not a directory'),
            (export.main, [world['run'], f"--to={world['file']}/sub"], 'a_file.txt is a file, not a directory'),
            (export.main, [world['empty_dir'], f"--to={world['new']}"], 'no checkpoint in'),
            (sample.main, [world['empty_dir']], 'no checkpoint in'),
            (sample.main, [f"--out_dir={world['empty_dir']}"], 'no checkpoint in'),
            (eval_script.main, [world['empty_dir']], 'no checkpoint in')):
        code, _, stderr = call(main, argv)
        assert code == 2 and len(stderr.splitlines()) == 1 and piece in stderr, (argv, stderr)
        assert 'no checkpoint in' not in piece or f"{world['empty_dir']} (no ckpt.pt or ckpt.dcp/)" in stderr
    assert snapshot(world['root']) == before


def test_sample_refuses_a_prompt_it_cannot_use(world, tmp_path):
    """A prompt file that is not text, and a prompt of no tokens (the bytes tokenizer adds no BOS): one line each,
    not a UnicodeDecodeError or an IndexError from an empty batch."""
    binary, empty = tmp_path / 'binary.txt', tmp_path / 'empty.txt'
    binary.write_bytes(b'\xff\xfe')
    empty.write_bytes(b'')
    for argv, piece in (([f'--start=FILE:{binary}'], f"cannot read the prompt file {binary}: not UTF-8 text"),
                        (['--start='], "--start='' is no tokens in the bytes tokenizer"),
                        ([f'--start=FILE:{empty}'], "--start='' is no tokens in the bytes tokenizer")):
        code, _, stderr = call(sample.main, [world['run'], *argv, '--tokenizer=bytes', '--num_samples=1',
                                             '--max_new_tokens=2'])
        assert code == 2 and len(stderr.splitlines()) == 1 and piece in stderr, (argv, stderr)


def test_devices_and_registries_are_validated(world, tmp_path):
    cases = [(eval_script.main, [world['run'], '--device=tpu'], "--device='tpu' is not a torch device"),
             (sample.main, [world['run'], '--device=tpu'], "--device='tpu' is not a torch device")]
    if not torch.cuda.is_available():
        cases.append((sample.main, [world['run'], '--device=cuda'], "--device='cuda' but no CUDA GPU is visible"))
        cases.append((bench_gpu.main, [f"--data_dir={tmp_path / 'data'}", f"--out={tmp_path / 'out'}"],
                      "--device='cuda' but no CUDA GPU is visible"))  # before its rows fail one by one
    for main, argv, piece in cases:
        code, _, stderr = call(main, argv)
        assert code == 2 and len(stderr.splitlines()) == 1 and piece in stderr, (argv, stderr)
    assert not os.listdir(tmp_path)
    sweep_dir = tmp_path / 'sweep'
    sweep_dir.mkdir()
    for text in ('[1, 2]', '{"jobs": 3}', '{"jobs": [1]}'):
        (sweep_dir / 'jobs.json').write_text(text)
        code, _, stderr = call(sweep.main, [world['sweep_file'], f'--sweep_dir={sweep_dir}', '--status'])
        assert code == 2 and len(stderr.splitlines()) == 1 and "is JSON but not a sweep's job registry" in stderr, \
            stderr
    for text, field in (('{"jobs": [{}]}', 'job_id'), ('{"jobs": [{"job_id": "1", "run": "r"}]}', 'start'),
                        ('{"jobs": [{"job_id": "1", "run": "r", "start": 0, "stop": true, "after": []}]}', 'stop')):
        (sweep_dir / 'jobs.json').write_text(text)  # hand-edited: each was a KeyError traceback in --status
        code, _, stderr = call(sweep.main, [world['sweep_file'], f'--sweep_dir={sweep_dir}', '--status'])
        assert code == 2 and len(stderr.splitlines()) == 1 and f"jobs[0] has no {field} of the kind" in stderr, stderr


def test_hub_chat_checks_everything_before_it_reaches_the_hub(world, monkeypatch):
    """A valid hub_chat.py command gets as far as the Hub (here: offline) and no further: one line, and --out is
    not left behind."""
    import datasets
    calls = []

    def offline(path, **kwargs):
        calls.append(path)
        raise ConnectionError('no network here')
    monkeypatch.setattr(datasets, 'load_dataset', offline)
    monkeypatch.setattr(datasets.config, 'HF_UPDATE_DOWNLOAD_COUNTS', datasets.config.HF_UPDATE_DOWNLOAD_COUNTS)
    before = snapshot(world['root'])
    code, _, stderr = call(hub_chat.main, hub_chat_argv(world))
    assert code == 2 and len(stderr.splitlines()) == 1 and 'cannot reach the Hugging Face Hub' in stderr, stderr
    assert calls == ['teknium/OpenHermes-2.5'] and snapshot(world['root']) == before
    assert not os.path.exists(world['new'])


def test_eval_writes_into_the_run_never_into_a_model_directory(world):
    before = snapshot(world['model'])
    code, stdout, stderr = call(eval_script.main, [world['model'], f"--tasks={world['task']}", '--device=cpu'])
    assert code == 0 and 'pass --out=FILE to keep the records' in stdout, stderr
    assert snapshot(world['model']) == before
    assert sum(1 for _ in open(os.path.join(world['run'], 'eval.jsonl'))) == 1  # the fixture's, in the run
