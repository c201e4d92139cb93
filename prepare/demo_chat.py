"""
Two small chat corpora made offline from text every Python installation has, for the chat walkthrough (README):

    target   question/answer conversations about the Python Language Reference (pydoc_data.topics, the prose that
             help() shows): per topic, the user asks about its heading and the assistant answers with its
             text, a few lines per turn, up to 2 exchanges per conversation (then a new conversation goes on);
             every other conversation opens with a system turn. JSON lines in the `messages` format.
    generic  one conversation per standard-library module with a docstring: the user asks what the module is for
             and the assistant answers with its docstring's first lines. JSON lines in ShareGPT's `conversations` format
             (from human/gpt/system), so both input formats of prepare/local.py --format=chat are exercised.

Deterministic for a given Python version. Then, e.g.:

    python prepare/demo_chat.py
    python prepare/local.py --format=chat --input data/demo_chat_target.jsonl --tokenizer models/tiny-llama \\
        --block_size 256 --val_tokens 8192 --out data/chat_target
"""
import ast
import json
import os
import sysconfig

from common import UserError, Parser, decode_utf8, run_main
from demo import stdlib_files, target_documents

SYSTEM = 'You answer questions about Python concisely, quoting its documentation.'
ANSWER_CHARS = 180  # whole lines per assistant turn, up to about this many characters: conversations fit the
EXCHANGES = 2       # tiny model's 256-token context
FOLLOW_UPS = ('Go on.', 'What else?')


def answers(text, limit=ANSWER_CHARS):
    """A text's lines (its heading and reStructuredText underlines left out) joined into answers of up to about
    `limit` characters (a longer line alone); a paragraph break ends an answer early once it is half full."""
    answer = []
    for line in text.splitlines()[2:]:
        if set(line.strip()) <= set('*=-') and line.strip():
            continue
        if answer and (len('\n'.join(answer + [line])) > limit or not line.strip() and
                       len('\n'.join(answer)) > limit // 2):
            yield '\n'.join(answer).strip('\n')
            answer = []
        if answer or line.strip():
            answer.append(line)
    if ''.join(answer).strip():
        yield '\n'.join(answer).strip('\n')


def target_conversations():
    conversations = []
    for _, text in target_documents()[0]:
        heading, replies = text.splitlines()[0].strip(), list(answers(text))
        for start in range(0, len(replies), EXCHANGES):
            messages = [dict(role='system', content=SYSTEM)] if len(conversations) % 2 == 0 else []
            for i, reply in enumerate(replies[start:start + EXCHANGES]):
                ask = (f'What does the Python language reference say about {heading}?' if start == 0 else
                       f'Tell me more about {heading}.') if i == 0 else FOLLOW_UPS[(i - 1) % len(FOLLOW_UPS)]
                messages += [dict(role='user', content=ask), dict(role='assistant', content=reply)]
            conversations.append(dict(messages=messages))
    return conversations


def generic_conversations():
    stdlib = sysconfig.get_paths()['stdlib']
    conversations = []
    for path in stdlib_files(stdlib):
        with open(path, 'rb') as f:
            text, _ = decode_utf8(f.read())
        try:
            doc = ast.get_docstring(ast.parse(text))
        except (SyntaxError, ValueError):
            continue  # a file this Python cannot parse (lib2to3's test data, say)
        if not doc or len(doc) < 40:
            continue
        name = os.path.relpath(path, stdlib)[:-3].replace(os.sep, '.').removesuffix('.__init__')
        conversations.append(dict(conversations=[
            dict(**{'from': 'human', 'value': f'What is the Python module {name} for?'}),
            dict(**{'from': 'gpt', 'value': next(answers('\n\n' + doc))})]))
    return conversations


def write_jsonl(path, records):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f'{path}.partial'
    try:
        with open(tmp, 'w', encoding='utf-8') as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + '\n')
        os.replace(tmp, path)
    finally:  # a failed write leaves no .partial behind
        if os.path.exists(tmp):
            os.remove(tmp)


def main(argv):
    p = Parser(__doc__)
    p.add_argument('--target_out', default='data/demo_chat_target.jsonl', rule='an output file',
                   help='default: %(default)s')
    p.add_argument('--generic_out', default='data/demo_chat_generic.jsonl', rule='an output file',
                   help='default: %(default)s')
    args = p.parse_args(argv)
    if os.path.abspath(args.target_out) == os.path.abspath(args.generic_out):
        raise UserError(f'--target_out and --generic_out are the same file ({args.target_out}): give two')
    target, generic = target_conversations(), generic_conversations()
    if not generic:
        raise UserError('found no standard-library module with a docstring')
    write_jsonl(args.target_out, target)
    write_jsonl(args.generic_out, generic)
    for path, records in ((args.target_out, target), (args.generic_out, generic)):
        print(f'{path}: {len(records)} conversations, {os.path.getsize(path) / 1e6:.2f} MB')


if __name__ == '__main__':
    run_main(main)
