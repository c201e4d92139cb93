"""Synthetic sources for tests: every token of window w is `base + w`, so the first token of a fed sequence
says which window (and, by base, which source) train.py actually read."""
import json
import os

import numpy as np

TARGET_BASE = 20000  # target windows are tokens 20000+w; generic windows are tokens w (< 20000)
VOCAB = 32768


def write_source(path, n_windows, block_size, base, val_windows=8):
    os.makedirs(path, exist_ok=True)
    for split, n in (('train', n_windows), ('val', val_windows)):
        tokens = np.repeat(base + np.arange(n + 1), block_size)[:n * block_size + 1].astype(np.uint16)
        tokens.tofile(os.path.join(path, f'{split}.bin'))
    meta = dict(tokenizer='synthetic', vocab_size=VOCAB, eot_token=VOCAB - 1, dtype='uint16')
    with open(os.path.join(path, 'meta.json'), 'w') as f:
        json.dump(meta, f)
    return path


def write_random_source(path, train_tokens, val_tokens=32 * 16 + 1, seed=0, **meta):
    """Uniformly random tokens of a 256-token vocabulary: nothing to decode, but a CPU step is ~15x faster than
    with write_source's 32K vocabulary. meta overrides meta.json's fields."""
    os.makedirs(path, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, n in (('train', train_tokens), ('val', val_tokens)):
        rng.integers(0, 256, n, dtype=np.uint16).tofile(os.path.join(path, f'{split}.bin'))
    with open(os.path.join(path, 'meta.json'), 'w') as f:
        json.dump(dict(dict(tokenizer='toy', vocab_size=256, dtype='uint16'), **meta), f)
    return str(path)


def make_sources(root, block_size=32, generic_windows=400, target_windows=40):
    return (write_source(os.path.join(root, 'generic'), generic_windows, block_size, 0),
            write_source(os.path.join(root, 'target'), target_windows, block_size, TARGET_BASE))


def read_log(out_dir):
    with open(os.path.join(out_dir, 'log.jsonl')) as f:
        return [json.loads(line) for line in f]


TIMING_KEYS = ('ms_per_step', 'elapsed_s', 'mfu')


def without_timing(log):
    """Log records minus wall-clock fields: what must be equal between two runs of the same plan on CPU."""
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in log]


def copy_for_resume(out_dir, step, resumed_dir):
    """A fresh run dir holding run out_dir's checkpoint after `step` steps and its whole log (which also holds the
    steps after `step`: a resume must cut them off and write them again)."""
    import shutil
    os.makedirs(resumed_dir)
    shutil.copy(os.path.join(out_dir, f'ckpt_{step}.pt'), os.path.join(resumed_dir, 'ckpt.pt'))
    shutil.copy(os.path.join(out_dir, 'log.jsonl'), os.path.join(resumed_dir, 'log.jsonl'))
    return resumed_dir
