"""
tasks.py: task accuracy scored as lm-evaluation-harness 0.4.13 scores it with its Hugging Face model class
(lm_eval/models/huggingface.py, HFLM): multiple-choice tasks by log-likelihood, generation tasks by greedy
generation and exact match. train.py evaluates the config's `tasks` at every eval; eval.py evaluates a run, a
checkpoint or a Hugging Face model directory.

A task is a file, or a dict of options (TASK_OPTIONS: file, num_fewshot, fewshot_file, limit, until, max_gen_toks,
regex, ignore_case, ignore_punctuation, regexes_to_ignore, apply_chat_template, fewshot_as_multiturn). Its
examples, their few-shot examples and the prompt each is shown as come from task_files.py (four formats:
multiple choice, XCOPA, generated answers, GSM8K).

Multiple choice, as the harness does it (no description):
  - a choice's continuation is the target delimiter " " + the choice ("" after a chat template); trailing
    whitespace of the context moves to the front of the continuation;
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
padded tokens a forward.

Generation, as HFLM.generate_until: the prompt encoded with the default special tokens (none if it starts with the
BOS text), left-truncated to block_size - max_gen_toks tokens; greedy decoding with the KV cache (generate.py)
until an EOS id of the model or a stop string (`until` and the EOS text) appears in the decoded continuation, at most
max_gen_toks tokens; the continuation decoded whole with special tokens skipped and cut before each stop string;
then each filter (`none`: the text; `regex`: the first match's group; GSM8K's two) and exact_match per filter.
Batched by prompt length + max_gen_toks (left-padded rows, at most tokens_per_batch tokens).
Where we can differ from the harness: greedy argmax on near-ties (two top logits within float rounding; the
batch's padding and the cache change rounding, not the maths); batching (the harness is compared at batch size 1,
where its stop check looks at the last few tokens only, ours at the whole continuation); transformers' decode
clean-up of tokenization spaces (off for BPE tokenizers in transformers 5) is not done; few-shot example equality
compares the JSON objects (the harness compares dataset rows, which fill keys missing from a row with None).

Under several ranks, batch i runs on rank i % world and every rank runs the same number of batches (a rank short
of one repeats the last batch and drops its result: FSDP's collectives hang when ranks run different numbers of
forwards; for the same reason a sharded model generates every row to max_gen_toks tokens); sums and generations
are gathered, so every rank returns every number.
"""
import difflib
import os
import re
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

import runlog
from configurator import UserError
from generate import apply_filter, cut_generation, exact_match, generate_rows
from task_files import GENERATION_FORMATS, TARGET_DELIMITER, draw_fewshot, read_task_file, render_prompt
from tokenizer import checkpoint_tokenizer, tokenizer_meta

# a task's options in `tasks` / eval.py --tasks, as the harness names them; a task given as a file alone is {file}
TASK_OPTIONS = dict(
    file=None,                  # the task file (required)
    num_fewshot=0,              # examples drawn from fewshot_file in front of each prompt
    fewshot_file=None,          # None: the task file itself, each example left out of its own few-shot examples
    limit=None,                 # the first n examples only
    until=None,                 # generation: stop strings (None: ["\n\n"], GSM8K's own for GSM8K files)
    max_gen_toks=256,           # generation: the most tokens generated
    regex=None,                 # generation: the answer is the first match's group (filter `regex`; else `none`)
    ignore_case=None,           # exact_match's options (None: False, GSM8K's own for GSM8K files)
    ignore_punctuation=None,
    regexes_to_ignore=None,
    apply_chat_template=False,  # render prompts with the tokenizer's chat template (the harness's option)
    fewshot_as_multiturn=None,  # with apply_chat_template: each few-shot example its own turns (None: True)
)
GENERATION_OPTIONS = ('until', 'max_gen_toks', 'regex', 'ignore_case', 'ignore_punctuation', 'regexes_to_ignore')
# lm_eval/tasks/gsm8k/gsm8k.yaml (0.4.13): prompt, stop strings, exact_match options, filters (regex, group_select)
GSM8K = dict(until=['Question:', '</s>', '<|im_end|>'], ignore_case=True, ignore_punctuation=False,
             regexes_to_ignore=[',', '\\$', '(?s).*#### ', '\\.$'],
             filters={'strict-match': ('#### (\\-?[0-9\\.\\,]+)', 0),
                      'flexible-extract': ('(-?[$0-9.,]{2,})|(-?[0-9]+)', -1)})
TASK_NAME = re.compile(r'[A-Za-z0-9][A-Za-z0-9_.-]*')  # it names results.csv columns acc_<name>, acc_norm_<name>


# ---------------------------------------------------------------------------------------------------------------
# a config's tasks, their options checked (their files: task_files.py)
# ---------------------------------------------------------------------------------------------------------------

def read_tasks(tasks, block_size=None):
    """The config's `tasks` ({name: task file or a dict of TASK_OPTIONS}), every file read and checked:
    [(name, options, examples)], options complete (TASK_OPTIONS' keys; 'kind' the file's format), examples as dicts
    {'line', 'record' (the JSON object), 'shots' (its few-shot examples)} plus, multiple choice, {'context',
    'choices', 'label'}, generation {'query', 'target'}. A bad input is one UserError line naming the task (with
    block_size, the model's context, max_gen_toks is checked against it here too)."""
    if not isinstance(tasks, dict) or not all(isinstance(k, str) and isinstance(v, (str, dict))
                                              for k, v in tasks.items()):
        raise UserError(f"tasks={tasks!r} must map task names to task files (or dicts of options with a 'file'), e.g. "
                        f"{{'xcopa_eu': 'data/xcopa_eu.jsonl'}}")
    for name in tasks:
        if not TASK_NAME.fullmatch(name) or name.startswith('norm_'):  # acc_norm_x must not be acc_<norm_x>
            raise UserError(f"tasks: the name {name!r} must be letters, digits, '_', '.' or '-' (not starting with "
                            f"'norm_'): it names the columns acc_<name> and acc_norm_<name>")
    out = []
    for name, spec in tasks.items():
        options = task_options(name, spec)
        examples = read_task_file(options['file'], name)
        options['kind'] = examples[0]['kind']
        check_options(name, options)
        if block_size is not None and options['kind'] in GENERATION_FORMATS and options['max_gen_toks'] >= block_size:
            raise UserError(f"task {name}: max_gen_toks={options['max_gen_toks']} must be less than the model's "
                            f"context of {block_size} tokens (the prompt is left-truncated to the rest)")
        pool = examples
        if options['fewshot_file'] is not None:
            pool = read_task_file(options['fewshot_file'], name)
            if pool[0]['kind'] != options['kind']:
                raise UserError(f"task {name}: fewshot_file {options['fewshot_file']} is in the {pool[0]['kind']} "
                                f"format, the task file in the {options['kind']} format: they must be the same")
        examples = examples[:options['limit']]
        # the task file under another spelling (./x, a link) is the task file: each example left out of its own
        same_file = options['fewshot_file'] is None or os.path.samefile(options['fewshot_file'], options['file'])
        draw_fewshot(name, options, examples, pool, same_file)
        out.append((name, options, examples))
    return out


def task_options(name, spec):
    """A task's value in `tasks` as a full dict of options (TASK_OPTIONS), its types checked."""
    options = dict(TASK_OPTIONS, **({'file': spec} if isinstance(spec, str) else spec))
    unknown = [k for k in options if k not in TASK_OPTIONS]
    if unknown:
        close = difflib.get_close_matches(unknown[0], TASK_OPTIONS, n=1)
        hint = f": did you mean {close[0]!r}?" if close else f"; the options are {', '.join(TASK_OPTIONS)}"
        raise UserError(f"task {name}: unknown option {unknown[0]!r}{hint}")
    if not isinstance(options['file'], str) or not options['file']:
        raise UserError(f"task {name}: its options need 'file', the task file, e.g. dict(file='data/gsm8k.jsonl')")
    types = dict(num_fewshot=int, limit=(int, type(None)), max_gen_toks=int, fewshot_file=(str, type(None)),
                 regex=(str, type(None)), ignore_case=(bool, type(None)), ignore_punctuation=(bool, type(None)),
                 apply_chat_template=bool, fewshot_as_multiturn=(bool, type(None)))
    for key, kind in types.items():
        value = options[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise UserError(f"task {name}: {key}={value!r} has the wrong type (see TASK_OPTIONS in tasks.py)")
    for key in ('until', 'regexes_to_ignore'):
        if isinstance(options[key], str):
            options[key] = [options[key]]
        if options[key] is not None and not (isinstance(options[key], list)
                                             and all(isinstance(x, str) for x in options[key])):
            raise UserError(f"task {name}: {key}={options[key]!r} must be a string or a list of strings")
    if options['until'] is not None and '' in options['until']:  # '' is in every text: each generation cut to ''
        raise UserError(f"task {name}: until={options['until']!r} holds an empty stop string, which would cut every "
                        f"generation to nothing: remove it")
    if options['num_fewshot'] < 0 or (options['limit'] is not None and options['limit'] < 1):
        raise UserError(f"task {name}: num_fewshot must be >= 0 and limit None or >= 1")
    return options


def check_options(name, options):
    """The options that depend on the file's format: generation ones only for generation tasks, GSM8K's defaults
    filled in, regexes that compile."""
    generated = options['kind'] in GENERATION_FORMATS
    if not generated:
        given = [k for k in GENERATION_OPTIONS if options[k] not in (None, TASK_OPTIONS[k])]
        if given:
            raise UserError(f"task {name}: {given[0]} is an option of generation tasks, but {options['file']} is "
                            f"a multiple-choice task ({options['kind']} format)")
    defaults = GSM8K if options['kind'] == 'gsm8k' else dict(until=['\n\n'], ignore_case=False,
                                                               ignore_punctuation=False, regexes_to_ignore=None)
    for key in ('until', 'ignore_case', 'ignore_punctuation', 'regexes_to_ignore'):
        if options[key] is None:
            options[key] = defaults[key]
    if options['regex'] is not None:
        options['filters'] = {'regex': (options['regex'], 0)}
    else:
        options['filters'] = GSM8K['filters'] if options['kind'] == 'gsm8k' else {'none': None}
    for pattern in [options['regex']] + (options['regexes_to_ignore'] or []):
        try:
            re.compile(pattern or '')
        except re.error as e:
            raise UserError(f"task {name}: the regular expression {pattern!r} does not compile ({e})") from None
    if generated and options['max_gen_toks'] <= 0:
        raise UserError(f"task {name}: max_gen_toks={options['max_gen_toks']} must be at least 1")
    if options['fewshot_as_multiturn'] is None:
        options['fewshot_as_multiturn'] = options['apply_chat_template']  # the harness turns it on with the template
    elif options['fewshot_as_multiturn'] and not options['apply_chat_template']:
        raise UserError(f"task {name}: fewshot_as_multiturn=True needs apply_chat_template=True")


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


def encode_task(name, path, examples, tokenizer, block_size, options=None):
    """A task ready to score. Multiple choice: every (example, choice) request as the token row the model reads
    plus its label token (the last block_size + 1 tokens of context + continuation) and its continuation length.
    Generation: each prompt's ids, left-truncated to block_size - max_gen_toks (encode_generation)."""
    options = options or dict(TASK_OPTIONS, file=path, kind=examples[0].get('kind', 'choices'))
    prompts = [render_prompt(dict({'shots': []}, **e), options, tokenizer, name) for e in examples]
    if options['kind'] in GENERATION_FORMATS:
        return encode_generation(name, path, examples, prompts, tokenizer, block_size, options)
    rows, continuation_lengths, choice_lengths = [], [], []
    delimiter = '' if options['apply_chat_template'] else TARGET_DELIMITER  # the harness's, after a chat prompt
    for example, prompt in zip(examples, prompts):
        for j, choice in enumerate(example['choices']):
            context_ids, continuation_ids = encode_pair(tokenizer, prompt, delimiter + choice)
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
    return dict(kind='choices', name=name, path=path, examples=examples, prompts=prompts, rows=rows,
                continuation_lengths=np.array(continuation_lengths),
                choice_lengths=np.array(choice_lengths, dtype=np.float64))


def encode_generation(name, path, examples, prompts, tokenizer, block_size, options):
    """A generation task as the harness's HFLM.generate_until encodes it: each prompt with the tokenizer's default
    special tokens (none when it starts with the BOS text), left-truncated to block_size - max_gen_toks tokens; the
    stop strings are `until` plus the EOS text."""
    max_gen_toks = options['max_gen_toks']
    if max_gen_toks >= block_size:
        raise UserError(f"task {name}: max_gen_toks={max_gen_toks} must be less than the model's context of "
                        f"{block_size} tokens (the prompt is left-truncated to the rest)")
    rows = []
    for example, prompt in zip(examples, prompts):
        special = not (tokenizer['bos_text'] and prompt.startswith(tokenizer['bos_text']))
        ids = tokenizer['tok'].encode(prompt, add_special_tokens=special).ids[-(block_size - max_gen_toks):]
        if not ids:
            raise UserError(f"task {name}: {path} line {example['line']}: its prompt encodes to no tokens")
        rows.append(ids)
    eos_text = tokenizer['eos_text']
    stops = options['until'] + ([eos_text] if eos_text is not None and eos_text not in options['until'] else [])
    return dict(kind='generate', name=name, path=path, examples=examples, prompts=prompts, rows=rows,
                options=options, stops=stops, tokenizer=tokenizer)


def encode_task_set(task_files, tokenizer, block_size, batch_size):
    """The tasks read by read_tasks, encoded, each with a forward budget of batch_size x block_size tokens."""
    return [dict(encode_task(name, options['file'], examples, tokenizer, block_size, options),
                 tokens_per_batch=batch_size * block_size)
            for name, options, examples in task_files]


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
    """One encoded task's numbers and its examples' details ('samples', eval.py --log_samples). Multiple choice:
    acc, acc_norm, n, each example's choice log-likelihoods ('loglikelihoods'); generation: exact_match {filter:
    mean}, n."""
    if task['kind'] == 'generate':
        return evaluate_generation(task, model, ctx, system)
    lls = loglikelihoods(task, model, ctx, system)
    ends = np.cumsum([len(e['choices']) for e in task['examples']])[:-1]  # requests are in example order
    per_example, norms = np.split(lls, ends), np.split(task['choice_lengths'], ends)
    labels = np.array([e['label'] for e in task['examples']])
    acc = np.array([np.argmax(values) for values in per_example]) == labels
    acc_norm = np.array([np.argmax(values / n) for values, n in zip(per_example, norms)]) == labels
    samples = [dict(task=task['name'], index=e['line'] - 1, prompt=prompt, loglikelihoods=values.tolist(),
                    acc=float(a), acc_norm=float(b))
               for e, prompt, values, a, b in zip(task['examples'], task['prompts'], per_example, acc, acc_norm)]
    return dict(acc=float(acc.mean()), acc_norm=float(acc_norm.mean()), n=len(labels),
                loglikelihoods=[values.tolist() for values in per_example], samples=samples)


def generation_model(model):
    """The GPT inside DDP and torch.compile wrappers: generate_rows reads its config and blocks and calls it with
    changing shapes."""
    for _ in range(2):
        model = getattr(model, 'module', model)
        model = getattr(model, '_orig_mod', model)
    return model


@torch.no_grad()
def generate(task, model, ctx, system):
    """Each prompt's generated ids, greedy with the KV cache, batched by length (longest first, at most
    tokens_per_batch tokens of prompt + max_gen_toks a batch), batch i on rank i % world, gathered on every rank.
    A row stops at an EOS id or once its text (special tokens shown, as the harness's stop criterion decodes it)
    holds a stop string. FSDP2 gathers weights in every forward, so there every rank runs every batch to
    max_gen_toks tokens (the text is cut afterwards all the same)."""
    generator = generation_model(model)
    lockstep = system.world > 1 and hasattr(generator, 'unshard')  # an FSDP2-sharded model
    rows, budget, stops = task['rows'], task['options']['max_gen_toks'], task['stops']
    decode = task['tokenizer']['tok'].decode
    stop = None if lockstep else (lambda row, ids: any(s in decode(ids, skip_special_tokens=False) for s in stops))
    eos_ids = set() if lockstep else task['tokenizer']['eos_ids']
    was_training = generator.training
    generator.eval()
    out = {}
    for batch, real in batch_plan([len(r) + budget for r in rows], task['tokens_per_batch'], system.world)[system.rank]:
        with ctx:
            new = generate_rows(generator, [rows[i] for i in batch], budget, eos_ids=eos_ids, stop=stop)
        if real:
            out.update(zip(batch.tolist(), new))
    generator.train(was_training)
    if system.world > 1:
        gathered = [None] * system.world
        dist.all_gather_object(gathered, out)
        out = {i: ids for part in gathered for i, ids in part.items()}
    return [out[i] for i in range(len(rows))]


def evaluate_generation(task, model, ctx, system):
    """exact_match per filter and n of a generation task: each generation decoded whole with special tokens
    skipped, cut at the stop strings, filtered, compared with the answer."""
    decode, options = task['tokenizer']['tok'].decode, task['options']
    samples = []
    for example, prompt, ids in zip(task['examples'], task['prompts'], generate(task, model, ctx, system)):
        text = cut_generation(decode(ids, skip_special_tokens=True), task['stops'])
        extracted = {name: apply_filter(text, regex) for name, regex in options['filters'].items()}
        samples.append(dict(task=task['name'], index=example['line'] - 1, prompt=prompt, generation=text,
                            extracted=extracted, target=example['target'],
                            exact_match={name: exact_match(answer, example['target'], options)
                                         for name, answer in extracted.items()}))
    scores = {name: float(np.mean([s['exact_match'][name] for s in samples])) for name in options['filters']}
    return dict(exact_match=scores, n=len(samples), samples=samples)


def task_record(name, step, result, seconds):
    """The log record (kind='task') of one task evaluation, and its one-line print."""
    after = f" after {step} steps" if step is not None else ''
    if 'exact_match' in result:
        record = dict(kind='task', task=name, step=step, exact_match=result['exact_match'], n=result['n'],
                      eval_s=round(seconds, 3))
        scores = ', '.join(f"{k} {v:.4f}" for k, v in result['exact_match'].items())
        return record, f"task {name}{after}: exact_match {scores} ({result['n']} examples, {seconds:.1f}s)"
    record = dict(kind='task', task=name, step=step, acc=result['acc'], acc_norm=result['acc_norm'], n=result['n'],
                  eval_s=round(seconds, 3))
    line = (f"task {name}{after}: acc {result['acc']:.4f}, acc_norm {result['acc_norm']:.4f} ({result['n']} "
            f"examples, {seconds:.1f}s)")
    return record, line


def evaluate_and_log(task_set, model, step, ctx, system, log, samples=None):
    """train.py at each eval, eval.py once: every task evaluated and logged; each example's details appended to
    `samples` when it is a list. Returns {'tasks': {name: {acc, acc_norm, n} or {exact_match, n}}} for
    summary.json's `final` ({} without tasks)."""
    final = {}
    for task in task_set:
        start = time.time()
        result = evaluate(task, model, ctx, system)
        record, line = task_record(task['name'], step, result, time.time() - start)
        log(record, line)
        final[task['name']] = runlog.task_scores(record)
        if samples is not None:
            samples.extend(result['samples'])
    return {'tasks': final} if final else {}
