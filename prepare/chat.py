"""
Chat sources: conversations in, packed windows with loss masks out (prepare/local.py --format=chat and
prepare/hub_chat.py). Each conversation is rendered with the model directory's chat template and tokenized as
transformers' apply_chat_template does (tokenizer.py, section "chat templates"), then packed into windows of
exactly block_size + 1 tokens. A source directory holds, per split (train, val):

    {split}.bin          token ids (uint16, or uint32 when the vocabulary needs it); window w is tokens
                         [w*(B+1), (w+1)*(B+1)), B = block_size; the file holds whole windows only
    {split}.mask.bin     uint8, one byte per token: 1 where the token is a training label (the loss on predicting
                         token i from the tokens before it counts); 0 on every example's first token and on padding
    {split}.starts.bin   uint8, one byte per token: 1 at the first token of every example and at the first token of
                         a window's padding run (padding is its own segment); every window's first token is 1
    meta.json            format "chat", block_size, window_stride (B+1), chat_template_sha256, loss_on,
                         end_of_turn, date, pad_token_id, counts per split, and the keys of a text source

Input records are conversations: `messages` (a list of {"role", "content"}, as transformers takes them;
--messages_field names another key) or ShareGPT `conversations` ({"from": human|gpt|system, "value"}), told apart
by their keys. The val split is held out by conversation (VAL_RULE).
"""
import json
import os
import time

import numpy as np

# common first: it puts the repo root on sys.path
from common import (SOURCE_FILES, UserError, check_output, command_line, commit, is_prepared, read_meta,
                    token_dtype, warn)
import chat_template as chat_templates  # noqa: E402

SHAREGPT_ROLES = {'human': 'user', 'gpt': 'assistant', 'system': 'system'}
OPEN_WINDOWS = 64
FILES = SOURCE_FILES
MAX_BLOCK_SIZE = 2**20  # Llama 4-scale contexts; the packer's open windows then hold ~400 MB
VAL_RULE = ('by conversation: the first conversations of the input, whole, until val_tokens (tokens of kept '
            'examples, before padding) is reached; train is the conversations after them. A source that does not '
            'exceed val_tokens gives val its first ~10% of tokens instead (at least one example each).')
PACK_RULE = (f'first fit in input order: each example goes into the oldest of the last {OPEN_WINDOWS} open windows '
             f'with room for it, else into a new window; a window leaves when a {OPEN_WINDOWS + 1}th opens (or at '
             f'the end), its free tail padded with pad_token_id (no loss, its own segment)')
LONG_RULE = ('truncate: an example longer than a window (block_size + 1 tokens) keeps its first block_size + 1 '
             'tokens (counted in truncated); one left with no loss token by the cut is dropped (counted in dropped '
             'instead)')


def conversation_of(record, messages_field, where):
    """The turns of one input record, as messages with role and content. ShareGPT turns are mapped to
    transformers' roles (human -> user, gpt -> assistant, system -> system)."""
    if not isinstance(record, dict):
        raise UserError(f'{where} is a {type(record).__name__}, not an object with a {messages_field!r} or '
                        f'"conversations" field')
    if messages_field in record:
        return record[messages_field]
    if 'conversations' not in record:
        wanted = f"neither '{messages_field}' nor" if messages_field != 'conversations' else 'no'
        raise UserError(f"{where} has {wanted} 'conversations' (fields: {', '.join(record) or 'none'}); pass "
                        f"--messages_field NAME")
    turns = record['conversations']
    if not isinstance(turns, (list, tuple)):
        return turns  # chat_messages names the mistake
    messages = []
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or turn.get('from') is None or turn.get('value') is None:
            raise UserError(f'{where}: ShareGPT turn {i} needs "from" and "value" (got '
                            f'{json.dumps(turn, ensure_ascii=False)[:120]})')
        if turn['from'] not in SHAREGPT_ROLES:
            raise UserError(f'{where}: ShareGPT turn {i} is from {turn["from"]!r}; known: '
                            f'{", ".join(SHAREGPT_ROLES)}')
        messages.append(dict(role=SHAREGPT_ROLES[turn['from']], content=turn['value']))
    return messages


def encode_examples(records, chat, block_size, loss_on, messages_field):
    """(ids, mask, truncated) of each record, truncated to a window (LONG_RULE); those without a loss token too
    (the packer counts them as dropped)."""
    window = block_size + 1
    for where, record in records:
        ids, mask = chat_templates.encode_chat(chat, conversation_of(record, messages_field, where), loss_on, where)
        truncated = len(ids) > window
        ids, mask = ids[:window], mask[:window]
        if len(ids) and int(ids.max()) >= chat['vocab_size']:
            raise UserError(f"{where}: token id {int(ids.max())} is beyond the tokenizer's vocab_size "
                            f"{chat['vocab_size']}")
        yield ids, mask, truncated


class Packer:
    """One split's windows being written (as .partial files), packed by PACK_RULE, with its counts."""
    def __init__(self, paths, block_size, pad, dtype):
        self.files = {k: open(p, 'wb') for k, p in paths.items()}
        self.size, self.pad, self.dtype, self.open = block_size + 1, pad, dtype, []
        self.counts = dict(examples=0, loss_tokens=0, dropped=0, truncated=0, windows=0, tokens=0, max_token_id=-1)

    def add(self, ids, mask, truncated):
        if not mask.any():
            self.counts['dropped'] += 1
            return
        n = len(ids)
        window = next((w for w in self.open if self.size - w['used'] >= n), None)
        if window is None:
            window = dict(ids=np.full(self.size, self.pad, dtype=self.dtype), mask=np.zeros(self.size, np.uint8),
                          starts=np.zeros(self.size, np.uint8), used=0)
            self.open.append(window)
            if len(self.open) > OPEN_WINDOWS:
                self.write(self.open.pop(0))
        at = window['used']
        window['ids'][at:at + n], window['mask'][at:at + n], window['starts'][at] = ids, mask, 1
        window['used'] += n
        self.counts['examples'] += 1
        self.counts['truncated'] += int(truncated)
        self.counts['loss_tokens'] += int(mask.sum())
        self.counts['max_token_id'] = max(self.counts['max_token_id'], int(ids.max()))

    def write(self, window):
        if window['used'] < self.size:
            window['starts'][window['used']] = 1  # the padding run is a segment of its own
        for key, name in (('ids', 'bin'), ('mask', 'mask.bin'), ('starts', 'starts.bin')):
            self.files[name].write(window[key].tobytes())
        self.counts['windows'] += 1
        self.counts['tokens'] += self.size

    def close(self):
        for window in self.open:
            self.write(window)
        self.open = []
        for f in self.files.values():
            f.close()


def fill_chat_splits(examples, packers, val_tokens, max_tokens, val_examples=None):
    """val: the first examples until val_tokens (of val_examples, a separate validation stream, when given);
    train: the examples after them until max_tokens (0 = all). Dropped examples count in the split they fall in.
    Val examples are held until train gets one, so that a source not larger than val_tokens can give val ~10%
    instead. Returns notes."""
    notes = []
    if val_examples is not None:
        val_count = 0
        for example in val_examples:
            packers['val'].add(*example)
            val_count += len(example[0]) if example[1].any() else 0
            if val_count >= val_tokens:
                break
        else:
            notes.append(f'the validation split has only {val_count:,} example tokens, fewer than --val_tokens '
                         f'{val_tokens:,}; val is all of it')
        val_tokens = 0
    held, held_tokens, train_tokens = [], 0, 0
    for example in examples:
        ids, mask, _ = example
        if held_tokens < val_tokens and not packers['train'].counts['examples'] + packers['train'].counts['dropped']:
            held.append(example)
            held_tokens += len(ids) if mask.any() else 0
            continue
        for kept in held:  # train begins: val is final
            packers['val'].add(*kept)
        held = []
        packers['train'].add(*example)
        train_tokens += len(ids) if mask.any() else 0
        if max_tokens and train_tokens >= max_tokens:
            break
    if not held:
        return notes
    kept = [i for i, (_, mask, _) in enumerate(held) if mask.any()]  # the whole source fits in val_tokens
    if len(kept) < 2:
        if not kept:  # every example dropped: prepare_chat_source says so
            for example in held:
                packers['train'].add(*example)
            return notes
        raise UserError(f'the input has {len(kept)} example(s) with a loss token; a val and a train split need at '
                        f'least 2')
    ends = np.cumsum([len(held[i][0]) for i in kept])
    k = min(int(np.searchsorted(ends, np.ceil(0.1 * held_tokens))) + 1, len(kept) - 1)  # kept examples for val
    cut = kept[k]  # the first train example: at least one kept example stays for train
    for example in held[:cut]:
        packers['val'].add(*example)
    rest = held[cut:]
    for i, example in enumerate(rest):  # --max_tokens holds here too
        if max_tokens and train_tokens >= max_tokens:
            rest = rest[:i]
            break
        packers['train'].add(*example)
        train_tokens += len(example[0]) if example[1].any() else 0
    return notes + [f'the source has only {held_tokens:,} example tokens, not more than --val_tokens {val_tokens:,}: '
                    f'val is its first {k} example(s) ({int(ends[k - 1]):,} tokens, ~10%), train ' +
                    (f'the next {len(rest)} (--max_tokens {max_tokens:,})' if len(rest) < len(held) - cut else
                     'the rest')]


def prepare_chat_source(records, out, source, script, argv, tokenizer, block_size, loss_on='assistant',
                        messages_field='messages', chat_template=None, date=chat_templates.CHAT_DATE,
                        end_of_turn=None, max_tokens=0, val_tokens=0, force=False, report=None, val_records=None):
    """Render, tokenize, mask and pack `records` (an iterable of (where, record), consumed lazily) into out/.
    `where` names the record in errors (file:line). val_records: a separate validation stream, like records.
    Returns meta (a dict)."""
    if not isinstance(block_size, int) or block_size < 1:
        raise UserError(f'--block_size must be a positive integer (the block_size train.py will use), got '
                        f'{block_size!r}')
    if block_size > MAX_BLOCK_SIZE:
        raise UserError(f'--block_size {block_size:,} is beyond the {MAX_BLOCK_SIZE:,} (2**20) tokens a window may '
                        f'hold here: use the block_size train.py will use')
    if loss_on not in chat_templates.LOSS_ON:
        raise UserError(f"--loss_on must be one of {', '.join(chat_templates.LOSS_ON)}, got {loss_on!r}")
    if not os.path.isdir(tokenizer) or not os.path.isfile(os.path.join(tokenizer, 'tokenizer.json')):
        raise UserError(f'--format=chat needs --tokenizer=MODEL_DIR, a model directory with a tokenizer.json and a '
                        f'chat template; {tokenizer!r} is not one')
    chat = chat_templates.load_chat(tokenizer, chat_template, date, end_of_turn)
    chat_templates.require_end_of_turn(chat, loss_on)
    settings = json.loads(json.dumps(dict(
        source=source, tokenizer=tokenizer, tokenizer_fingerprint=chat['fingerprint'], block_size=block_size,
        loss_on=loss_on, messages_field=messages_field, chat_template_sha256=chat['template_sha256'], date=date,
        end_of_turn=chat['end_of_turn'], special_tokens=chat['special_tokens'], pad_token_id=chat['pad_token_id'],
        max_tokens=max_tokens, val_tokens=val_tokens)))
    if not force and is_prepared(out, settings, FILES):  # chat settings: a text source's never match
        print(f'{out}: already prepared with these settings (meta.json matches); nothing to do (--force rebuilds)')
        return read_meta(out)
    dtype = token_dtype(chat['vocab_size'])
    check_output(out, force, FILES)
    created = not os.path.isdir(out)
    os.makedirs(out, exist_ok=True)
    partial = {(s, f): os.path.join(out, f'{s}.{f}.partial') for s in ('train', 'val') for f in FILES}
    report, t0, packers = {} if report is None else report, time.time(), {}
    try:
        packers = {s: Packer({f: partial[s, f] for f in FILES}, block_size, chat['pad_token_id'], dtype)
                   for s in ('train', 'val')}
        examples = encode_examples(records, chat, block_size, loss_on, messages_field)
        val_examples = None if val_records is None else \
            encode_examples(val_records, chat, block_size, loss_on, messages_field)
        notes = report.get('notes', []) + fill_chat_splits(examples, packers, val_tokens, max_tokens, val_examples)
        for packer in packers.values():
            packer.close()
        counts = {s: dict(packers[s].counts) for s in packers}
        if not counts['train']['examples']:
            dropped = sum(c['dropped'] for c in counts.values())
            raise UserError(f'no example to train on: all {dropped:,} example(s) have no loss token under '
                            f'--loss_on={loss_on}' if dropped else 'no example to train on: the input is empty')
        dropped = sum(c['dropped'] for c in counts.values())
        if dropped:
            notes.append(f'dropped {dropped:,} example(s) with no loss token under --loss_on={loss_on}')
        if report.get('utf8_replaced'):
            notes.append(f"replaced {report['utf8_replaced']:,} invalid UTF-8 sequence(s) with U+FFFD")
        truncated = sum(c['truncated'] for c in counts.values())
        if truncated:
            notes.append(f'truncated {truncated:,} example(s) longer than a window ({block_size + 1} tokens)')
        seconds = time.time() - t0
        meta = dict(
            tokenizer=chat['name'], vocab_size=chat['vocab_size'], eot_token=chat['eot_token'],
            tokenizer_path=chat['path'], tokenizer_fingerprint=chat['fingerprint'], bos_token=chat['bos_token'],
            dtype=np.dtype(dtype).name, max_token_id=max(c.pop('max_token_id') for c in counts.values()),
            train=dict(tokens=counts['train'].pop('tokens'), documents=counts['train']['examples']),
            val=dict(tokens=counts['val'].pop('tokens'), documents=counts['val']['examples']),
            format='chat', block_size=block_size, window_stride=block_size + 1,
            chat_template=chat['template_source'], chat_template_sha256=chat['template_sha256'],
            generation_tags=chat['generation_tags'], loss_on=loss_on, end_of_turn=chat['end_of_turn'], date=date,
            pad_token_id=chat['pad_token_id'], counts=counts, pack_rule=PACK_RULE, long_example_rule=LONG_RULE,
            val_rule=VAL_RULE, source=source, max_tokens=max_tokens, val_tokens=val_tokens,
            utf8_replaced=report.get('utf8_replaced', 0), notes=notes, command=command_line(script, argv),
            seconds=round(seconds, 2), settings=settings)
        commit(out, partial.values(), meta)
    finally:
        for packer in packers.values():
            for f in packer.files.values():
                f.close()  # a second close is harmless
        for path in partial.values():
            if os.path.exists(path):
                os.remove(path)
        if created and os.path.isdir(out) and not os.listdir(out):
            os.rmdir(out)
    for note in notes:
        warn(note)
    print(f"{out}: {counts['train']['windows']:,} train + {counts['val']['windows']:,} val windows of "
          f"{block_size + 1} tokens ({counts['train']['examples']:,} + {counts['val']['examples']:,} examples, "
          f"{counts['train']['loss_tokens']:,} + {counts['val']['loss_tokens']:,} loss tokens), {chat['name']} "
          f"{np.dtype(dtype).name}, loss on {loss_on}, {seconds:.1f} s")
    return meta
