"""
task_files.py: a task file's examples and the prompt each is shown as, as lm-evaluation-harness 0.4.13 makes them
(tasks.py reads a config's `tasks` with these, then encodes and scores the prompts).

Task files are JSON lines, one example a line, in one of four formats (told by the keys of the first example):
    {"context": "...", "choices": ["...", "...", ...], "label": 0}      two or more choices; label indexes them
    XCOPA: {"premise", "choice1", "choice2", "question": "cause" | "effect", "label": 0 | 1} (other keys ignored),
        read with the prompt of the harness's Basque-bench task `xcopa_eu`: context = premise.strip() + " Izan
        ere," (cause) or " Beraz," (effect); choices choice1, choice2 with their first letter lower-cased.
    {"context": "...", "answer": "..."}                                  generated, then compared with the answer
    GSM8K: {"question", "answer"}, read as the harness's gsm8k task (gsm8k.yaml): prompt "Question: {question}
        \nAnswer:", stop strings "Question:", "</s>", "<|im_end|>", filters strict-match and flexible-extract,
        exact_match ignoring case, ',', '$', everything up to '#### ' and a final '.'.

Few-shot (both kinds): num_fewshot examples drawn from fewshot_file (default: the task file itself, leaving the
example out) as the harness's default sampler draws them with its seed 1234 (draw_fewshot), each shown as its text,
" ", its answer, "\n\n", before the example's own text. apply_chat_template renders the turns with the model's chat
template (chat_template.py, as transformers renders it) and a generation prompt, as --apply_chat_template does.
"""
import json
import os
import random

import chat_template
from configurator import UserError

TARGET_DELIMITER = ' '  # the harness's default target_delimiter, between context and choice
XCOPA_CONNECTORS = {'cause': ' Izan ere,', 'effect': ' Beraz,'}  # lm_eval/tasks/basque_bench/utils.py
FORMATS = {'choices': ('context', 'choices', 'label'),  # first match wins: xcopa has a question too
           'xcopa': ('premise', 'choice1', 'choice2', 'question', 'label'),
           'generate': ('context', 'answer'),
           'gsm8k': ('question', 'answer')}
GENERATION_FORMATS = ('generate', 'gsm8k')
FEWSHOT_SEED = 1234  # the harness's fewshot_random_seed default
FEWSHOT_DELIMITER = '\n\n'  # the harness's fewshot_delimiter, after each few-shot example
TASK_FILE_HELP = ('task files are JSON lines of {"context", "choices", "label"}, XCOPA\'s {"premise", "choice1", '
                  '"choice2", "question", "label"}, {"context", "answer"} (generated) or GSM8K\'s {"question", '
                  '"answer"} (docs/tasks.md)')


def draw_fewshot(name, options, examples, pool, same_file):
    """Each example's few-shot examples ('shots'), drawn as the single-process harness draws them from its few-shot
    split (lm_eval/api/samplers.py): one random.Random(FEWSHOT_SEED) per task, its state carried through the
    examples in file order, sample(pool, n) per example; from the task file itself n + 1 are drawn and the example
    left out (then the first n kept). Every rank draws them all, so prompts do not depend on the number of ranks."""
    n = options['num_fewshot']
    need = n + 1 if same_file else n
    if n and len(pool) < need:
        where = options['fewshot_file'] or options['file']
        raise UserError(f"task {name}: num_fewshot={n} needs {need} examples in {where}"
                        f"{' (the task file itself: each example is left out of its own)' if same_file else ''}, "
                        f"it has {len(pool)}: lower num_fewshot or name a longer fewshot_file")
    rnd = random.Random(FEWSHOT_SEED)
    for example in examples:
        if not n:
            example['shots'] = []
        elif not same_file:
            example['shots'] = rnd.sample(pool, n)
        else:
            shots = [x for x in rnd.sample(pool, n + 1) if x['record'] != example['record']][:n]
            if len(shots) < n:  # copies of the example in the pool were drawn: the harness draws again without any
                shots = rnd.sample([x for x in pool if x['record'] != example['record']], n)
            example['shots'] = shots


def read_task_file(path, name='task'):
    if os.path.isdir(path):
        raise UserError(f"task {name}: {path} is a directory, not a task file: name the file in it ({TASK_FILE_HELP})")
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
                examples.append(dict(parse_example(record, kind, where), line=number, record=record, kind=kind))
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
    """One example as {'context', 'choices', 'label'}, XCOPA through the harness's xcopa_eu prompt; a generation
    example as {'query', 'target'}, GSM8K through the harness's gsm8k prompt (doc_to_text, doc_to_target)."""
    missing = [k for k in FORMATS[kind] if k not in record]
    if missing:
        raise UserError(f"{where} has no {', '.join(missing)} (the file's first example is in the {kind} format)")
    if kind in GENERATION_FORMATS:
        text_key = 'context' if kind == 'generate' else 'question'
        if not isinstance(record[text_key], str):
            raise UserError(f"{where}: {text_key} must be a string, got {record[text_key]!r}")
        answer = record['answer']
        if isinstance(answer, bool) or not isinstance(answer, (str, int, float)):
            raise UserError(f"{where}: answer must be a string (or a number), got {answer!r}")
        query = record['context'] if kind == 'generate' else f"Question: {record['question']}\nAnswer:"
        return dict(query=query, target=str(answer))  # the harness compares str(target) when it is a number
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


def prompt_messages(example):
    """[(role, content, delimiter)] of an example's prompt, as the harness's build_qa_turn makes them: per few-shot
    example its text, the target delimiter, its answer and the few-shot delimiter, then the example's own text."""
    messages = []
    for shot in example['shots']:
        question, answer = example_text(shot), example_answer(shot)
        if answer == '':  # the harness adds no answer turn (nor delimiters) for an empty answer
            messages.append(('user', question, ''))
        else:
            messages += [('user', question, TARGET_DELIMITER), ('assistant', answer, FEWSHOT_DELIMITER)]
    return messages + [('user', example_text(example), '')]


def example_text(example):
    return example['query'] if 'query' in example else example['context']


def example_answer(example):
    return example['target'] if 'query' in example else example['choices'][example['label']]


def render_prompt(example, options, tokenizer, name='task'):
    """The string the model reads: the messages as text, or through the tokenizer's chat template (the harness's
    --apply_chat_template: generation prompt added; with fewshot_as_multiturn each few-shot example is a user and
    an assistant turn, else everything is one user turn)."""
    messages = prompt_messages(example)
    if not options['apply_chat_template']:
        return ''.join(content + delimiter for _, content, delimiter in messages)
    if tokenizer.get('path') is None:
        raise UserError(f"task {name}: apply_chat_template=True, but the model's tokenizer has no chat template")
    if options['fewshot_as_multiturn']:
        chat = [dict(role=role, content=content) for role, content, _ in messages]
    else:
        chat = [dict(role='user', content=''.join(content + delimiter for _, content, delimiter in messages))]
    if 'chat' not in tokenizer:  # chat_template.py renders as transformers' apply_chat_template does
        tokenizer['chat'] = chat_template.load_chat(tokenizer['path'])
    return chat_template.render_chat(tokenizer['chat'], chat, add_generation_prompt=True, where=f'task {name}')[0]
