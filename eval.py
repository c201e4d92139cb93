"""
eval.py: task accuracy of a run, one of its checkpoints or a Hugging Face model directory, scored by tasks.py as
train.py scores it at its evals (and as lm-evaluation-harness 0.4.13 scores a zero-shot multiple-choice task).

    python eval.py out/my_run                                       # its newest checkpoint, the run's own `tasks`
    python eval.py out/my_run/ckpt_2000.pt --tasks=xcopa_eu=data/xcopa_eu.jsonl
    python eval.py models/Llama-3.1-8B --tasks=data/xcopa_eu.jsonl --block_size=2048
    torchrun --standalone --nproc_per_node=8 eval.py models/Llama-3.1-8B --tasks=...   # ranks split the examples

--tasks: NAME=FILE[,NAME=FILE...], a FILE alone (named by its file name without extension), or a dict as the config
key takes it (a task's value a file or a dict of its options, tasks.TASK_OPTIONS: e.g. --tasks="{'gsm8k':
{'file': 'data/gsm8k_test.jsonl', 'num_fewshot': 5, 'fewshot_file': 'data/gsm8k_train.jsonl', 'limit': 100}}");
default: the `tasks` of the run the checkpoint comes from. The model reads the last block_size tokens
(left truncation): a checkpoint's own block_size; for a model directory its context as config.json gives it (the
harness's max_length: n_positions, else max_position_embeddings, else n_ctx), or --block_size. The tokenizer: a
model directory's own; for a checkpoint the one export.py writes beside it (tokenizer.tokenizer_source).

--log_samples=FILE writes one JSON line per example: task, index (its line in the task file, from 0), prompt (the
string the model read), and for generation tasks generation (cut at the stop strings), extracted and exact_match
(dicts by filter), for multiple-choice tasks loglikelihoods (per choice), acc and acc_norm.

Prints one line per task and appends its record (kind='task', as train.py logs them, with `source` and the
checkpoint's `step`, None for a model directory) to --out: default eval.jsonl beside the checkpoint (in the run
directory). A model directory is never written into: without --out its records are only printed, and --out or
--log_samples inside it, or naming anything eval.py reads (the checkpoint, its run's log, summary and checkpoints, a
task or few-shot file, the tokenizer's directory), is refused before anything is evaluated.
Options: --key=value or --key value (--help lists them).
"""
import ast
import dataclasses
import json
import os

import torch.distributed as dist

import checkpoint
import hf
import layout
import runtime
import tasks
from configurator import UserError, is_inside, parse_options, run_main
from model import checkpoint_model_config
from tokenizer import checkpoint_tokenizer, load_tokenizer

OPTIONS = dict(
    tasks='',         # NAME=FILE[,NAME=FILE...], a FILE alone, or a dict ('' = the run's own tasks)
    out='',           # the JSON-lines file the records are appended to ('' = eval.jsonl in the run directory)
    block_size=0,     # tokens the model reads (0 = a checkpoint's own; a model directory's context)
    batch_size=16,    # a forward holds at most batch_size x block_size tokens, padding included
    device='auto',
    dtype='auto',     # autocast as in training: 'auto' = bfloat16 on GPUs that have it, float32 on the CPU
    tokenizer='',     # a checkpoint's tokenizer directory, if it is no longer where the run found it
    log_samples='',   # a JSON-lines file for each example's prompt, generation / log-likelihoods and scores
)
RULES = dict(out='an output file', block_size='0 or more', batch_size='at least 1', device='a torch device',
             dtype=runtime.DTYPES, tokenizer='an existing directory', source='a checkpoint or a model directory')
USAGE = "python eval.py RUN_DIR_OR_CHECKPOINT_OR_HF_DIR [--tasks=NAME=FILE,...] [--out=FILE] [--block_size=N]"


def parse_tasks(text):
    """--tasks text -> {name: file}."""
    if text.startswith('{'):
        try:
            tree = ast.parse(text, mode='eval').body
            names = [ast.literal_eval(key) for key in tree.keys] if isinstance(tree, ast.Dict) else []
            tasks = ast.literal_eval(tree)
        except (ValueError, SyntaxError, TypeError):
            raise UserError(f"--tasks={text} is not a Python dict of task names to files") from None
    else:
        names, tasks = [], {}
        for item in filter(None, text.split(',')):
            name, path = item.split('=', 1) if '=' in item else (os.path.splitext(os.path.basename(item))[0], item)
            names.append(name)
            tasks[name] = path
    twice = next((name for i, name in enumerate(names) if name in names[:i]), None)
    if twice is not None:  # the later one replaced the earlier, which was never scored
        raise UserError(f"--tasks names task {twice!r} twice: give each task its own name, NAME=FILE")
    return tasks


def context_length(hf_source):
    """The context the harness gives a model directory (its max_length), from config.json."""
    config = hf_source['config']
    return next((config[k] for k in ('n_positions', 'max_position_embeddings', 'n_ctx') if config.get(k)), 2048)


def open_model(source, options):
    """(model_config, state_dict or a loader of it, tokenizer, step, default tasks, default out file)."""
    path = layout.checkpoint_at(source)
    if os.path.isfile(path) or checkpoint.is_sharded(path) and checkpoint.is_ours(path):
        saved = checkpoint.load_checkpoint(path, weights=True)  # a corrupt one is one error line; runs no code
        config = checkpoint_model_config(saved)
        if options['block_size']:
            if options['block_size'] > config.block_size:
                raise UserError(f"--block_size={options['block_size']} is more than the {config.block_size} tokens "
                                f"{path} was trained with")
            config = dataclasses.replace(config, block_size=options['block_size'], n_positions=config.position_rows)
        return (config, lambda: saved['model'], checkpoint_tokenizer(saved, options['tokenizer']),
                saved['step'], saved['config'].get('tasks', {}), os.path.join(os.path.dirname(path), 'eval.jsonl'))
    if not os.path.isdir(source):
        hf.check_not_hub_id('the model', source)
        raise UserError(f"{source} not found: pass a run directory, a checkpoint (file or ckpt*.dcp) or a Hugging "
                        f"Face model directory")
    hf_source = hf.open_model_dir(source)
    config = hf.model_config(hf_source, options['block_size'] or context_length(hf_source))
    hf.check_weights(source, config)
    if hf_source['tokenizer'] is None:
        raise UserError(f"{source} has no tokenizer.json: tasks are encoded with the model's own tokenizer")
    return config, lambda: hf.load_weights(source, config), load_tokenizer(source), None, {}, ''  # no file


def read_paths(source, task_files, tokenizer):
    """(path, what, is_dir) of everything eval.py reads: the model directory, or the checkpoint (a sharded one a
    directory) and its run's own records and other checkpoints, the tokenizer's directory (its chat template too),
    every task and few-shot file."""
    model = layout.checkpoint_at(source)
    if os.path.isdir(model) and not checkpoint.is_ours(model):
        return [(model, 'the model directory', True)] + input_files(task_files)
    run = os.path.dirname(model) or '.'
    read = [(model, 'the checkpoint being evaluated', os.path.isdir(model))]
    read += [(os.path.join(run, f), "a file of the run", os.path.isdir(os.path.join(run, f))) for f in os.listdir(run)
             if f in ('log.jsonl', 'summary.json', 'config.py', layout.START_RECORD) or f.startswith('ckpt')]
    if tokenizer.get('path'):
        read.append((tokenizer['path'], "the tokenizer's model directory", True))
    return read + input_files(task_files)


def input_files(task_files):
    return [(options[k], f"task {name}'s {k}", False) for name, options, _ in task_files
            for k in ('file', 'fewshot_file') if options[k]]


def check_outputs(options, out, task_files, tokenizer):
    """Before anything is computed or written: an output is none of the inputs and lies in no directory read (a
    model directory is never written into, not even by --out), and the two outputs differ (the samples would
    write over the records). Paths compared as the file system resolves them (./x, links)."""
    outputs = [(path, flag) for path, flag in ((out, 'out'), (options['log_samples'], 'log_samples')) if path]
    if len(outputs) == 2 and os.path.realpath(outputs[0][0]) == os.path.realpath(outputs[1][0]):
        raise UserError(f"--log_samples={options['log_samples']} is also the file the records go to ({out}): "
                        f"pass another --log_samples=FILE")
    reads = read_paths(options['source'], task_files, tokenizer)
    for path, flag in outputs:
        real = os.path.realpath(path)
        for read, what, is_dir in reads:
            inside = is_dir and is_inside(path, read)
            if inside or real == os.path.realpath(read):
                where = f"inside {what} {read}" if inside else what + (f" ({read})" if read != path else '')
                raise UserError(f"--{flag}={path} is {where}, which eval.py reads and never writes: pass "
                                f"--{flag}=FILE elsewhere")


def main(argv):
    options = parse_options(argv, OPTIONS, positional=['source'], usage=USAGE, rules=RULES, doc=__doc__)
    model_config, weights, tokenizer, step, run_tasks, default_out = open_model(options['source'], options)
    task_files = tasks.read_tasks(parse_tasks(options['tasks']) if options['tasks'] else run_tasks,
                                  model_config.block_size)
    if not task_files:
        raise UserError(f"no tasks: pass --tasks=NAME=FILE (the run's config has none). usage: {USAGE}")
    task_set = tasks.encode_task_set(task_files, tokenizer, model_config.block_size, options['batch_size'])
    out = options['out'] or default_out
    check_outputs(options, out, task_files, tokenizer)
    for path, flag in ((out, 'out'), (options['log_samples'], 'log_samples')):
        try:
            if path:
                open(path, 'a').close()  # before any compute: an unwritable place is one error line, not lost work
        except OSError as e:
            raise UserError(f"cannot write {path} ({e.strerror}): pass --{flag}=FILE") from None

    system = runtime.init_system(dict(device=options['device'], backend='auto'))
    model = runtime.build_model(model_config, system.device, 0, weights())
    _, ctx, _ = runtime.precision(options['dtype'], system.device_type)
    records = []

    def log(record, line):
        if system.rank == 0:  # every rank has every number; one writes them
            records.append(dict(record, source=os.path.abspath(options['source'])))
            print(line, flush=True)

    samples = [] if options['log_samples'] else None
    tasks.evaluate_and_log(task_set, model, step, ctx, system, log, samples)
    if system.rank == 0 and out:
        with open(out, 'a') as f:
            f.writelines(json.dumps(r) + '\n' for r in records)
        print(f"appended {len(records)} task record(s) to {out}")
    elif system.rank == 0:
        print(f"not written to {options['source']} (a model directory): pass --out=FILE to keep the records")
    if system.rank == 0 and samples is not None:
        with open(options['log_samples'], 'w') as f:
            f.writelines(json.dumps(s, ensure_ascii=False) + '\n' for s in samples)
        print(f"wrote {len(samples)} example(s) to {options['log_samples']}")
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == '__main__':
    run_main(main)
