"""
Shared logic of the prepare/ scripts. Every script turns a stream of documents (str) into one *source* directory:

    train.bin, val.bin   flat token ids, each document encoded without special tokens and followed by the
                         end-of-text token (as nanoGPT does); uint16, or uint32 when the vocabulary needs it
    meta.json            tokenizer, vocab_size, eot_token, dtype, token and document counts per split, the source
                         (dataset, config, revision, files, ...), the val rule and the exact command

The val split is held out by document (VAL_RULE). Token files are written under *.partial names and renamed only
when complete, meta.json last (layout.write_json_atomic), so an interrupted run never leaves a directory that looks
valid; a re-run with the same settings finds meta.json matching and does nothing.

Scripts import this module as `from common import ...` (they run as `python prepare/x.py`, so prepare/ is on
sys.path); it puts the repository root on sys.path, the one place prepare/ does, so that they and it can import the
root's modules (tokenizer.py: every tokenizer; configurator.py; layout.py). The Hub scripts' streaming is in hub.py,
the command line (Parser, token counts, the shared options; re-exported here) in cmdline.py.
Mistakes a user can fix raise UserError: `run_main` prints it as one line and exits with status 2.
"""
import codecs
import collections
import concurrent.futures
import contextlib
import functools
import json
import os
import signal
import sys
import time

import numpy as np
from tqdm import tqdm

sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo root (see above)
import layout  # noqa: E402
from configurator import UserError, kind_of, run_main  # noqa: E402
from tokenizer import get_tokenizer, is_model_dir_tokenizer  # noqa: E402
from cmdline import (MAX_COUNT, Parser, at_least_1, base_parser, command_line, parse_bool,  # noqa: E402,F401
                     parse_count)
VAL_RULE = ('by document: the first documents of the val stream (the dataset\'s validation split when it has one, '
            'else the start of the document stream), whole, until val_tokens is reached; train is the documents '
            'after them. A source smaller than that gives val its first ~10% of tokens instead.')
SMALL_SOURCE_VAL_SHARE = 0.1
SOURCE_FILES = ('bin', 'mask.bin', 'starts.bin')  # {split}.<these>: a text source has .bin, a chat one all three
EMPTY_VAL_SPLIT = ('the validation split has no {what}: val.bin would be empty, which train.py refuses; {change}; '
                   'nothing was written')


# the project's one error type and script runner (configurator.py); prepare scripts add their Ctrl-C promise
run_main = functools.partial(run_main, interrupted='interrupted: nothing was written (an earlier complete output, '
                                                   'if any, is untouched)')


def warn(message):
    print(f'warning: {message}', file=sys.stderr)


# ---------------------------------------------------------------------------------------------------------------
# Encoding in worker processes (the tokenizers themselves: tokenizer.py)
# ---------------------------------------------------------------------------------------------------------------

_worker_tokenizer = functools.lru_cache(maxsize=None)(get_tokenizer)  # loaded once per worker process


def ignore_sigint():
    """A worker process's initializer: Ctrl-C is the parent's to report (once), not a traceback per worker."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _encode_in_worker(name, texts):
    return _worker_tokenizer(name)['encode'](texts)


def encode_batches(tok, text_batches, workers):
    """(ids, lengths) per batch of texts, in order. BPE runs in `workers` processes because tiktoken's own batch
    threads did not scale on the 2-core dev machine (one measurement: 1 thread 1.3M tok/s, 2 threads 1.1M,
    2 processes 2.8M). A few batches are in flight at a time, so a stream is never read far ahead of the writer."""
    # bytes: numpy is faster than shipping text to another process; Hugging Face tokenizers (those with a 'path')
    # batch-encode on every core already, in Rust threads
    if workers <= 1 or tok['name'] == 'bytes' or 'path' in tok:
        for texts in text_batches:
            yield tok['encode'](texts)
        return
    pool = concurrent.futures.ProcessPoolExecutor(workers, initializer=ignore_sigint)
    pending = collections.deque()
    try:
        for texts in text_batches:
            pending.append(pool.submit(_encode_in_worker, tok['name'], texts))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def token_dtype(vocab_size):
    return np.uint16 if vocab_size <= 2**16 else np.uint32


# ---------------------------------------------------------------------------------------------------------------
# Text in: UTF-8 with invalid bytes replaced and counted (the datasets builders replace but cannot count), by the
# 'prepare.count' error handler (local.count_invalid_utf8 decodes a whole input file through it)
# ---------------------------------------------------------------------------------------------------------------

INVALID_UTF8 = [0]  # the invalid sequences 'prepare.count' has replaced in this process


def _count_and_replace(err):
    INVALID_UTF8[0] += 1
    return '\ufffd', err.end  # exactly what errors='replace' does: one U+FFFD per invalid sequence


codecs.register_error('prepare.count', _count_and_replace)


def decode_utf8(raw):
    """bytes -> (str, number of invalid UTF-8 sequences replaced by U+FFFD)."""
    before = INVALID_UTF8[0]
    return raw.decode('utf-8', 'prepare.count'), INVALID_UTF8[0] - before


# ---------------------------------------------------------------------------------------------------------------
# Documents out: the token writer with its by-document val split, atomic output and meta.json
# ---------------------------------------------------------------------------------------------------------------

def read_meta(out):
    """out/meta.json as a dict; None where there is none or it is not a JSON object (then out is no source)."""
    try:
        with open(os.path.join(out, 'meta.json')) as f:
            meta = json.load(f)
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def is_prepared(out, settings, files=('bin',)):
    """meta.json exists, was made with these settings, and each split's files ({split}.bin: tokens; a chat
    source's byte-per-token masks too) have the sizes it records."""
    meta = read_meta(out)
    if meta is None or meta.get('settings') != settings:
        return False
    try:
        itemsize = np.dtype(meta['dtype']).itemsize
        return all(os.path.isfile(p) and os.path.getsize(p) == meta[s]['tokens'] * (itemsize if f == 'bin' else 1)
                   for s in ('train', 'val') for f in files for p in [os.path.join(out, f'{s}.{f}')])
    except (KeyError, TypeError, ValueError):  # an edited or damaged meta.json: rebuild
        return False


def check_output(out, force, files):
    """Before anything is written: a non-empty `out` that is no source of ours holds the user's files (refused
    unless --force), and no path this run writes may be a directory."""
    if os.path.isdir(out) and os.listdir(out) and not force and 'settings' not in (read_meta(out) or {}):
        raise UserError(f'{out} is not empty and holds no source prepared here (no valid meta.json): choose another '
                        f'--out, or pass --force to write into it')
    for name in ['meta.json'] + [f'{s}.{f}{p}' for s in ('train', 'val') for f in files for p in ('', '.partial')]:
        if os.path.isdir(os.path.join(out, name)):
            raise UserError(f'{os.path.join(out, name)} is a directory: remove it or choose another --out')


def missing_dirs(out):
    """`out` and the directories above it that do not exist yet (os.makedirs would make them), deepest first."""
    made, path = [], os.path.abspath(out)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        made.append(path)
        path = os.path.dirname(path)
    return made


def remove_empty(dirs):
    """Remove those of `dirs` (deepest first) that are empty directories: what a failed first run made."""
    for path in dirs:
        if os.path.isdir(path) and not os.listdir(path):
            os.rmdir(path)


@contextlib.contextmanager
def removed_on_failure(out):
    """A failed (or interrupted) run into a/b/out leaves no trace, not even the a/ and a/b/ it made."""
    made = missing_dirs(out)
    try:
        yield
    except BaseException:
        remove_empty(made)
        raise


def document_batches(docs, stats, sizes=None, max_chars=1 << 20, max_docs=512):
    """Lists of non-empty documents, about 1M characters each: big enough to be worth shipping to a worker
    process, small enough to stop soon after a budget is reached and to keep every worker busy. Empty and missing
    (None) documents are skipped and counted. stats['started']: when the first document arrived; `sizes` (a
    deque) gets each batch's UTF-8 bytes, for the progress bar's estimate."""
    batch, chars = [], 0
    for text in docs:
        stats.setdefault('started', time.time())
        if not text:
            stats['skipped_empty'] += 1
            continue
        if not isinstance(text, str):
            raise UserError(f'a document is {not_text(text)}: is --text_field the text column?')
        batch.append(text)
        chars += len(text)
        if chars >= max_chars or len(batch) >= max_docs:
            yield batch_with_size(batch, sizes)
            batch, chars = [], 0
    if batch:
        yield batch_with_size(batch, sizes)


def not_text(value):
    """'an int (5), not text' (for errors about a value that should be a string)."""
    return f"{kind_of(value)} ({json.dumps(value, default=str)[:60]}), not text"


def batch_with_size(batch, sizes):
    if sizes is not None:
        sizes.append(sum(len(text.encode('utf-8', 'replace')) for text in batch))
    return batch


def take_documents(lengths, need):
    """How many whole documents (of these lengths) it takes to reach `need` tokens (all if they don't), and their
    tokens. The document that crosses the budget is included whole: splits never cut a document."""
    if need <= 0 or not len(lengths):
        return 0, 0
    ends = np.cumsum(lengths)
    k = min(int(np.searchsorted(ends, need)) + 1, len(lengths))
    return k, int(ends[k - 1])


def commit(out, partial, meta):
    """Move finished files into place (each path NAME.partial to NAME), meta.json last. The old meta.json goes
    first, so there is no moment at which a meta.json describes files other than the ones beside it; then the files
    of another format the new one has not (a chat source's masks, rebuilt as text)."""
    if os.path.exists(os.path.join(out, 'meta.json')):
        os.remove(os.path.join(out, 'meta.json'))
    written = {path.removesuffix('.partial') for path in partial}
    for path in (os.path.join(out, f'{s}.{f}') for s in ('train', 'val') for f in SOURCE_FILES):
        if path not in written and os.path.isfile(path):
            os.remove(path)
    for path in partial:
        os.replace(path, path.removesuffix('.partial'))
    layout.write_json_atomic(os.path.join(out, 'meta.json'), meta, indent=2, newline=True)  # bytes sources.py hashes


class SplitWriter:
    """The train and val token files being written (as .partial files), with their token and document counts,
    the largest id written (meta.json's max_token_id, which train.py checks) and a progress bar. The bar's rate is
    the tokens written over the time since the first document arrived (progress['started']); its total, and so its
    ETA, is the token budget (`budget`, train + val) or, where the input's size in bytes is known
    (progress['input_bytes']), the tokens that size holds at the tokens per byte encoded so far (an estimate),
    whichever is smaller; without either it shows no ETA."""
    def __init__(self, files, tok, dtype, budget, desc, progress):
        self.files, self.tok, self.dtype, self.budget, self.desc = files, tok, dtype, budget, desc
        self.progress = progress  # started, bytes and tokens encoded so far, input_bytes (filled by the stream)
        self.counts = {s: dict(tokens=0, documents=0) for s in ('train', 'val')}
        self.max_token_id, self.bar = -1, None  # the bar opens at the first write, after the stream's own output

    def write(self, split, ids, n_docs):
        largest = int(ids.max()) if len(ids) else -1
        if self.dtype == np.uint16 and largest > np.iinfo(np.uint16).max:
            raise UserError(f"tokenizer '{self.tok['name']}' produced token id {largest}, which does not fit "
                            f"uint16 (its vocab_size claims {self.tok['vocab_size']}); nothing was written")
        if largest >= self.tok['vocab_size']:
            raise UserError(f"tokenizer '{self.tok['name']}' produced token id {largest}, beyond its vocab_size "
                            f"{self.tok['vocab_size']}; nothing was written")
        self.max_token_id = max(self.max_token_id, largest)
        self.files[split].write(ids.astype(self.dtype).tobytes())
        self.counts[split]['tokens'] += len(ids)
        self.counts[split]['documents'] += n_docs
        if self.bar is None:
            # smoothing=0: the average rate since the start, not tqdm's moving average of the last updates
            self.bar = tqdm(total=self.budget, unit='tok', unit_scale=True, desc=self.desc, mininterval=0.5,
                            smoothing=0, dynamic_ncols=True, file=sys.stderr)
            # the first tokens were read and encoded before the bar existed: timed from its own start, they took
            # ~0 s, and the rate read hundreds of times too high
            self.bar.start_t = self.bar.last_print_t = self.progress.get('started', self.bar.start_t)
        self.bar.total = self.total()
        self.bar.update(len(ids))

    def total(self):
        size, done = self.progress.get('input_bytes'), self.progress.get('bytes')
        if not size or not done:
            return self.budget
        estimate = int(round(self.progress['tokens'] * size / done))
        return min(estimate, self.budget) if self.budget else estimate

    def close(self, finished=False):
        if self.bar is not None and not self.bar.disable:
            if finished and self.bar.total is not None:  # the estimate gives way to what was written
                self.bar.total = self.bar.n
            self.bar.close()

    def tokens(self, split):
        return self.counts[split]['tokens']


def fill_val_from(writer, batches, val_tokens):
    """val from a separate validation stream: its first documents, whole, until val_tokens. Returns notes."""
    left = val_tokens
    for ids, lengths in batches:
        k, n = take_documents(lengths, left)
        writer.write('val', ids[:n], k)
        left -= n
        if left <= 0:
            return []
    return [f'the validation split has only {writer.tokens("val"):,} tokens, fewer than --val_tokens '
            f'{val_tokens:,}; val is all of it']


def fill_splits(writer, batches, val_tokens, max_tokens):
    """train (and val, unless val_tokens is 0 because a validation stream filled it) from one stream of encoded
    document batches: val is its first documents, whole, until val_tokens; train the documents after them until
    max_tokens (0 = all). Val documents are held in memory until train gets its first document, so that a source
    smaller than val_tokens can give val its first ~10% instead. Returns notes for meta.json."""
    held, val_left, notes = [], val_tokens, []
    for ids, lengths in batches:
        k, n = take_documents(lengths, val_left)  # the val prefix of the stream, while it is not full
        if k:
            held.append((ids[:n], lengths[:k]))
            val_left -= n
            ids, lengths = ids[n:], lengths[k:]
        k, n = take_documents(lengths, max_tokens - writer.tokens('train')) if max_tokens else (len(lengths), len(ids))
        if k and held:  # train has begun, so val is final: write it out
            for val_ids, val_lengths in held:
                writer.write('val', val_ids, len(val_lengths))
            held = []
        writer.write('train', ids[:n], k)
        if max_tokens and writer.tokens('train') >= max_tokens:
            break
    if held:  # the source ended before train got anything: give val ~10% of it, train the rest
        ids, lengths = np.concatenate([h[0] for h in held]), np.concatenate([h[1] for h in held])
        if len(lengths) < 2:
            raise UserError(f'the source has {len(lengths)} document(s) ({len(ids):,} tokens); a val and '
                            f'a train split need at least 2 documents')
        k, _ = take_documents(lengths, int(np.ceil(SMALL_SOURCE_VAL_SHARE * len(ids))))
        k = min(k, len(lengths) - 1)  # at least one document stays for train
        n = int(lengths[:k].sum())
        t, m = take_documents(lengths[k:], max_tokens) if max_tokens else (len(lengths) - k, len(ids) - n)
        writer.write('val', ids[:n], k)
        writer.write('train', ids[n:n + m], t)
        notes.append(f'the source has only {len(ids):,} tokens, not more than --val_tokens {val_tokens:,}: '
                     f'val is its first {k} document(s) ({n:,} tokens, ~10%), train ' +
                     (f'the next {t} ({m:,} tokens, --max_tokens {max_tokens:,})' if t < len(lengths) - k else
                      'the rest'))
    return notes


def size_notes(counts, max_tokens):
    """Warnings about what the source turned out to hold; an empty source is an error."""
    val, train = counts['val']['tokens'], counts['train']['tokens']
    if counts['train']['documents'] == 0:
        raise UserError('no documents: the input is empty (or every document is empty)')
    notes = []
    if val > 0.25 * (val + train):
        notes.append(f"val holds {val:,} of the source's {val + train:,} tokens; a smaller --val_tokens leaves more "
                     f"for train")
    if max_tokens and train < max_tokens:
        notes.append(f'the source ran out at {train:,} train tokens, fewer than --max_tokens {max_tokens:,}: '
                     f'prepared what there is')
    return notes


def prepare_source(docs, out, source, script, argv, tokenizer='gpt2', max_tokens=0, val_tokens=0, workers=1,
                   force=False, val_docs=None, report=None):
    """Tokenize `docs` (an iterable of str, consumed lazily) into out/{train,val}.bin + meta.json.

    val: the first documents of `val_docs` (a separate validation stream) or, when None, of `docs` itself,
    whole, until val_tokens is reached. train: the documents after them until max_tokens is reached (0 = all).
    `source` describes where the documents come from; with the tokenizer and budgets it forms the settings that
    decide whether a re-run has anything to do. `report` is a dict the document stream may fill while it runs
    (utf8_replaced: count, notes: list of warnings) for meta.json and the summary, and input_bytes (the UTF-8 size
    of its text, exact or about, once known) for the progress bar's ETA. Returns meta (a dict)."""
    settings = dict(source=source, tokenizer=tokenizer, max_tokens=max_tokens, val_tokens=val_tokens)
    tok = None
    if is_model_dir_tokenizer(tokenizer):  # the same path with other contents is another tokenizer: read it now
        tok = get_tokenizer(tokenizer)
        settings['tokenizer_fingerprint'] = tok['fingerprint']
    settings = json.loads(json.dumps(settings))
    if not force and is_prepared(out, settings):
        print(f'{out}: already prepared with these settings (meta.json matches); nothing to do (--force rebuilds)')
        return read_meta(out)
    tok = tok or get_tokenizer(tokenizer)  # a named one only now: tiktoken may need the network to load it
    dtype = token_dtype(tok['vocab_size'])
    check_output(out, force, ('bin',))
    made = missing_dirs(out)
    os.makedirs(out, exist_ok=True)
    partial = {s: os.path.join(out, f'{s}.bin.partial') for s in ('train', 'val')}
    stats, report, t0 = dict(skipped_empty=0), {} if report is None else report, time.time()
    progress = dict(bytes=0, tokens=0)

    def batches(stream):
        sizes = collections.deque()  # encode_batches keeps the order: one size per encoded batch
        for ids, lengths in encode_batches(tok, document_batches(stream, stats, sizes), workers):
            progress.update(started=stats['started'], input_bytes=report.get('input_bytes'),
                            bytes=progress['bytes'] + sizes.popleft(), tokens=progress['tokens'] + len(ids))
            yield ids, lengths
    writer = None
    try:
        with open(partial['train'], 'wb') as ftrain, open(partial['val'], 'wb') as fval:
            writer = SplitWriter(dict(train=ftrain, val=fval), tok, dtype,
                                 max_tokens + val_tokens if max_tokens else None, out, progress)
            notes = fill_val_from(writer, batches(val_docs), val_tokens) if val_docs is not None else []
            if val_docs is not None and not writer.tokens('val'):
                raise UserError(EMPTY_VAL_SPLIT.format(what='documents (or only empty ones)',
                                                       change='pass a --revision whose validation split has text'))
            notes += fill_splits(writer, batches(docs), 0 if val_docs is not None else val_tokens, max_tokens)
            notes = report.get('notes', []) + notes + size_notes(writer.counts, max_tokens)
        seconds = time.time() - t0
        meta = dict(tokenizer=tok['name'], vocab_size=tok['vocab_size'], eot_token=tok['eot_token'],
                    **{f'tokenizer_{k}' if k != 'bos_token' else k: tok[k]
                       for k in ('path', 'fingerprint', 'bos_token') if k in tok},
                    dtype=np.dtype(dtype).name, max_token_id=writer.max_token_id, train=writer.counts['train'],
                    val=writer.counts['val'], val_rule=VAL_RULE, source=source, max_tokens=max_tokens,
                    val_tokens=val_tokens, skipped_empty_documents=stats['skipped_empty'],
                    utf8_replaced=report.get('utf8_replaced', 0), notes=notes, command=command_line(script, argv),
                    seconds=round(seconds, 2), settings=settings)
        commit(out, partial.values(), meta)
        writer.close(finished=True)
    finally:
        if writer is not None:
            writer.close()
        for path in partial.values():
            if os.path.exists(path):
                os.remove(path)
        remove_empty(made)  # a failed first run leaves no trace, not even the directories it made for --out
    for note in notes:
        warn(note)
    counts = writer.counts
    total = counts['train']['tokens'] + counts['val']['tokens']
    print(f"{out}: {counts['train']['tokens']:,} train tokens ({counts['train']['documents']:,} docs) + "
          f"{counts['val']['tokens']:,} val tokens ({counts['val']['documents']:,} docs), {tok['name']} "
          f"{np.dtype(dtype).name}, {total * np.dtype(dtype).itemsize / 1e6:,.1f} MB, {seconds:.1f} s "
          f"({total / max(seconds, 1e-9) / 1e6:.2f}M tok/s)")
    return meta
