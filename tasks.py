"""
tasks.py: multiple-choice task accuracy, scored as lm-evaluation-harness 0.4.13 scores a zero-shot
`multiple_choice` task with its Hugging Face model class (lm_eval/models/huggingface.py, HFLM). train.py evaluates
the config's `tasks` at every eval; eval.py evaluates a run, a checkpoint or a Hugging Face model directory.

Task files are JSON lines, one example a line, in one of two formats (told by the keys of the first example):
    {"context": "...", "choices": ["...", "...", ...], "label": 0}      two or more choices; label indexes them
    XCOPA: {"premise", "choice1", "choice2", "question": "cause" | "effect", "label": 0 | 1} (other keys ignored),
        read with the prompt of the harness's Basque-bench task `xcopa_eu`: context = premise.strip() + " Izan
        ere," (cause) or " Beraz," (effect); choices choice1, choice2 with their first letter lower-cased.

What is scored, as the harness does it (zero-shot, no description, no chat template):
  - a choice's continuation is the target delimiter " " + the choice; trailing whitespace of the context moves to
    the front of the continuation;
  - context + continuation are encoded together, with the special tokens the tokenizer adds by default (a Llama 3
    text starts with <|begin_of_text|>, a GPT-2 one with nothing; none when the text already starts with the prefix
    token's text), the context alone likewise, and the continuation's tokens are those past the context's length;
  - an empty context is the prefix token (the tokenizer's BOS token, or its EOS where it has none), unless the
    continuation, encoded without special tokens, already starts with it (then that first token is the context);
  - left truncation: the model reads the last block_size + 1 tokens of context + continuation, minus the last;
  - a choice's log-likelihood is the sum, over its continuation tokens, of the log-softmax of the logits (in
    float32 whatever the autocast dtype; the harness uses the logits' own dtype);
  - acc: the choice with the largest sum is the label; acc_norm: the largest sum / len(choice) in characters (ties:
    the first choice, as np.argmax).
Batched by length (longest first, padded on the right to the batch's longest row), at most `tokens_per_batch`
padded tokens a forward. Under several ranks, batch i runs on rank i % world and every rank runs the same number of
forwards (a rank short of one repeats the last batch and drops its result: FSDP's collectives hang when ranks run
different numbers of forwards); the sums are all-reduced, so every rank returns every number.
"""
import json
import os
import re
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from configurator import UserError
from tokenizer import checkpoint_tokenizer, tokenizer_meta

TARGET_DELIMITER = ' '  # the harness's default target_delimiter, between context and choice
XCOPA_CONNECTORS = {'cause': ' Izan ere,', 'effect': ' Beraz,'}  # lm_eval/tasks/basque_bench/utils.py
FORMATS = {'choices': ('context', 'choices', 'label'),
           'xcopa': ('premise', 'choice1', 'choice2', 'question', 'label')}
TASK_NAME = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.-]*')  # it names results.csv columns acc_<name>, acc_norm_<name>
TASK_FILE_HELP = ('task files are JSON lines of {"context", "choices", "label"} or XCOPA\'s {"premise", "choice1", '
                  '"choice2", "question", "label"} (README "Task accuracy")')


# ---------------------------------------------------------------------------------------------------------------
# task files
# ---------------------------------------------------------------------------------------------------------------

def read_tasks(tasks):
    """The config's `tasks` ({name: task file}), every file read and checked: [(name, path, examples)], examples
    as dicts {'context', 'choices', 'label', 'line'}. A bad input is one UserError line naming the file (and line)."""
    if not isinstance(tasks, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in tasks.items()):
        raise UserError(f"tasks={tasks!r} must map task names to task files, e.g. "
                        f"{{'xcopa_eu': 'data/xcopa_eu.jsonl'}}")
    for name in tasks:
        if not TASK_NAME.fullmatch(name) or name.startswith('norm_'):  # acc_norm_x must not be acc_<norm_x>
            raise UserError(f"tasks: the name {name!r} must be letters, digits, '_', '.' or '-' (not starting with "
                            f"'norm_'): it names the columns acc_<name> and acc_norm_<name>")
    return [(name, path, read_task_file(path, name)) for name, path in tasks.items()]


def read_task_file(path, name='task'):
    if not os.path.isfile(path):
        raise UserError(f"task {name}: {path} not found: tasks maps each task name to a task file ({TASK_FILE_HELP})")
    extension = os.path.splitext(path)[1]
    if extension not in ('.jsonl', '.json'):
        raise UserError(f"task {name}: {path}: unknown task format {extension or '(no extension)'!r}: "
                        f"{TASK_FILE_HELP}; convert it, e.g. datasets' Dataset.to_json(PATH.jsonl)")
    examples, kind = [], None
    try:
        with open(path, encoding='utf-8') as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                where = f"task {name}: {path} line {number}"
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise UserError(f"{where} is not JSON ({e.msg} at column {e.colno}): {TASK_FILE_HELP}") from None
                if not isinstance(record, dict):
                    raise UserError(f"{where} is not a JSON object: {TASK_FILE_HELP}")
                kind = kind or task_format(record, where)
                examples.append(dict(parse_example(record, kind, where), line=number))
    except UnicodeDecodeError:
        raise UserError(f"task {name}: {path} is not UTF-8 text: {TASK_FILE_HELP}") from None
    if not examples:
        raise UserError(f"task {name}: {path} has no examples: {TASK_FILE_HELP}")
    return examples


def task_format(record, where):
    """'choices' or 'xcopa', from the keys of a file's first example."""
    for kind, keys in FORMATS.items():
        if all(k in record for k in keys):
            return kind
    raise UserError(f"{where}: unknown task format (keys {sorted(record)}): {TASK_FILE_HELP}")


def parse_example(record, kind, where):
    """One example as {'context', 'choices', 'label'}; XCOPA through the harness's xcopa_eu prompt."""
    missing = [k for k in FORMATS[kind] if k not in record]
    if missing:
        raise UserError(f"{where} has no {', '.join(missing)} (the file's first example is in the {kind} format)")
    if kind == 'xcopa':
        if record['question'] not in XCOPA_CONNECTORS:
            raise UserError(f"{where}: question {record['question']!r} must be 'cause' or 'effect'")
        for key in ('premise', 'choice1', 'choice2'):
            if not isinstance(record[key], str) or not record[key]:
                raise UserError(f"{where}: {key} must be a non-empty string, got {record[key]!r}")
        context = record['premise'].strip() + XCOPA_CONNECTORS[record['question']]
        choices = [c[0].lower() + c[1:] for c in (record['choice1'], record['choice2'])]
    else:
        context, choices = record['context'], record['choices']
        if not isinstance(context, str):
            raise UserError(f"{where}: context must be a string, got {context!r}")
        if not isinstance(choices, list) or not all(isinstance(c, str) and c for c in choices):
            raise UserError(f"{where}: choices must be a list of non-empty strings, got {choices!r}")
        if len(choices) < 2:
            raise UserError(f"{where}: {len(choices)} choice(s); an example needs at least two")
    label = record['label']
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(choices):
        raise UserError(f"{where}: label {label!r} is out of range for {len(choices)} choices (an index "
                        f"0..{len(choices) - 1})")
    return dict(context=context, choices=choices, label=label)


# ---------------------------------------------------------------------------------------------------------------
# encoding, as the harness's HFLM encodes a loglikelihood request (the tokenizer: tokenizer.load_tokenizer)
# ---------------------------------------------------------------------------------------------------------------

def encode(tokenizer, text, special=True):
    """Token ids of text: with the default special tokens unless special=False or the text starts with the prefix
    token's text (the harness's has_bos_prefix)."""
    if special and tokenizer['prefix_text'] and text.startswith(tokenizer['prefix_text']):
        special = False
    return tokenizer['tok'].encode(text, add_special_tokens=special).ids


def encode_pair(tokenizer, context, continuation):
    """(context ids, continuation ids) of one request, as HFLM.loglikelihood and TemplateLM._encode_pair make them."""
    if context == '':
        continuation_ids = encode(tokenizer, continuation, special=False)
        prefix = tokenizer['prefix']
        if prefix is None:
            raise UserError("an example has an empty context, which is scored after the tokenizer's BOS or EOS token, "
                            "but the tokenizer names neither")
        if continuation_ids and continuation_ids[0] == prefix:
            return continuation_ids[:1], continuation_ids[1:]
        return [prefix], continuation_ids
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole, context_ids = encode(tokenizer, context + continuation), encode(tokenizer, context)
    return context_ids, whole[len(context_ids):]


def encode_task(name, path, examples, tokenizer, block_size):
    """A task ready to score: every (example, choice) request as the token row the model reads plus its label
    token (the last block_size + 1 tokens of context + continuation) and its continuation length."""
    rows, continuation_lengths, choice_lengths = [], [], []
    for example in examples:
        for j, choice in enumerate(example['choices']):
            context_ids, continuation_ids = encode_pair(tokenizer, example['context'], TARGET_DELIMITER + choice)
            where = f"task {name}: {path} line {example['line']}, choice {j}"
            if not context_ids or not continuation_ids:
                raise UserError(f"{where}: its {'context' if not context_ids else 'continuation'} encodes to no "
                                f"tokens, which cannot be scored")
            if len(continuation_ids) > block_size:
                raise UserError(f"{where}: the choice is {len(continuation_ids)} tokens, more than block_size="
                                f"{block_size}")
            rows.append(np.array((context_ids + continuation_ids)[-(block_size + 1):], dtype=np.int64))
            continuation_lengths.append(len(continuation_ids))
            choice_lengths.append(len(choice))
    return dict(name=name, path=path, examples=examples, rows=rows, continuation_lengths=np.array(continuation_lengths),
                choice_lengths=np.array(choice_lengths, dtype=np.float64))


def encode_task_set(task_files, tokenizer, block_size, batch_size):
    """The tasks read by read_tasks, encoded, each with a forward budget of batch_size x block_size tokens."""
    return [dict(encode_task(name, path, examples, tokenizer, block_size), tokens_per_batch=batch_size * block_size)
            for name, path, examples in task_files]


def encode_tasks(task_files, config, hf_source, meta):
    """train.py: the tasks read by read_tasks, encoded with the tokenizer of the run's model (that of the Hugging
    Face model it comes from, hf_source, else of its data, meta: the generic source's meta.json), each with the
    run's block_size and a forward budget of batch_size x block_size tokens (what a training micro-step holds).
    [] without tasks."""
    if not task_files:
        return []
    tokenizer = checkpoint_tokenizer(dict(hf_source=hf_source, tokenizer_meta=tokenizer_meta(meta)))
    return encode_task_set(task_files, tokenizer, config['block_size'], config['batch_size'])


# ---------------------------------------------------------------------------------------------------------------
# scoring
# ---------------------------------------------------------------------------------------------------------------

def batch_plan(input_lengths, tokens_per_batch, world):
    """Per rank, the batches it runs: [(request indices, real)]. Requests longest first; a batch holds as many as fit
    tokens_per_batch once padded to its first (longest) row, at least one. Batch i goes to rank i % world; every rank
    gets the same number of entries, the missing ones filled with the last batch marked real=False."""
    order = np.argsort(-np.asarray(input_lengths), kind='stable')
    batches, i = [], 0
    while i < len(order):
        rows = max(1, tokens_per_batch // int(input_lengths[order[i]]))
        batches.append(order[i:i + rows])
        i += rows
    count = -(-len(batches) // world)
    return [[(b, True) for b in batches[rank::world]] + [(batches[-1], False)] * (count - len(batches[rank::world]))
            for rank in range(world)]


@torch.no_grad()
def loglikelihoods(task, model, ctx, system):
    """Every request's summed continuation log-likelihood (float64 numpy, request order), on every rank."""
    rows, continuation_lengths = task['rows'], task['continuation_lengths']
    input_lengths = np.array([len(row) - 1 for row in rows])
    sums = torch.zeros(len(rows), dtype=torch.float64, device=system.device)
    was_training = model.training
    model.eval()
    for batch, real in batch_plan(input_lengths, task['tokens_per_batch'], system.world)[system.rank]:
        lengths = input_lengths[batch]
        tokens = np.zeros((len(batch), lengths.max() + 1), dtype=np.int64)  # right padding: causal, never read
        for j, i in enumerate(batch):
            tokens[j, :len(rows[i])] = rows[i]
        tokens = torch.from_numpy(tokens).to(system.device)
        ends = torch.from_numpy(lengths).to(system.device)
        starts = ends - torch.from_numpy(continuation_lengths[batch]).to(system.device)
        positions = torch.arange(tokens.shape[1] - 1, device=system.device)
        scored = (positions >= starts[:, None]) & (positions < ends[:, None])  # logits that predict continuation
        with ctx:
            logits, _ = model(tokens[:, :-1], all_logits=True)
        token_ll = F.log_softmax(logits[scored].float(), dim=-1).gather(1, tokens[:, 1:][scored][:, None])[:, 0]
        if real:
            per_row = torch.zeros(len(batch), dtype=torch.float64, device=system.device)
            sums[torch.from_numpy(batch).to(system.device)] = per_row.index_add_(0, scored.nonzero()[:, 0],
                                                                                  token_ll.double())
    model.train(was_training)
    if system.world > 1:
        dist.all_reduce(sums)  # each request was summed on one rank, zeros elsewhere
    return sums.cpu().numpy()


def evaluate(task, model, ctx, system):
    """acc, acc_norm and n of one encoded task, plus each example's choice log-likelihoods ('loglikelihoods')."""
    lls = loglikelihoods(task, model, ctx, system)
    ends = np.cumsum([len(e['choices']) for e in task['examples']])[:-1]  # requests are in example order
    per_example, norms = np.split(lls, ends), np.split(task['choice_lengths'], ends)
    labels = np.array([e['label'] for e in task['examples']])
    acc = np.array([np.argmax(values) for values in per_example]) == labels
    acc_norm = np.array([np.argmax(values / n) for values, n in zip(per_example, norms)]) == labels
    return dict(acc=float(acc.mean()), acc_norm=float(acc_norm.mean()), n=len(labels),
                loglikelihoods=[values.tolist() for values in per_example])


def task_record(name, step, result, seconds):
    """The log record (kind='task') of one task evaluation, and its one-line print."""
    record = dict(kind='task', task=name, step=step, acc=result['acc'], acc_norm=result['acc_norm'], n=result['n'],
                  eval_s=round(seconds, 3))
    after = f" after {step} steps" if step is not None else ''
    line = (f"task {name}{after}: acc {result['acc']:.4f}, acc_norm {result['acc_norm']:.4f} ({result['n']} "
            f"examples, {seconds:.1f}s)")
    return record, line


def evaluate_and_log(task_set, model, step, ctx, system, log):
    """train.py at each eval, eval.py once: every task evaluated and logged. Returns {'tasks': {name: {acc,
    acc_norm, n}}} for summary.json's `final` ({} without tasks)."""
    final = {}
    for task in task_set:
        start = time.time()
        result = evaluate(task, model, ctx, system)
        record, line = task_record(task['name'], step, result, time.time() - start)
        log(record, line)
        final[task['name']] = {k: record[k] for k in ('acc', 'acc_norm', 'n')}
    return {'tasks': final} if final else {}
