"""
generate.py: generation, for a model.py GPT: decoding with the KV cache, and a generated text's answer as
lm-evaluation-harness 0.4.13 takes it (cut at the stop strings, filtered, exact_match). generate(model, idx, ...) is
nanoGPT's sampling call (sample.py); generate_rows decodes rows of different lengths in one batch, greedily for
tasks.py's generation tasks. Both take the GPT itself, which has the config and blocks they read
(tasks.generation_model unwraps DDP and torch.compile).
"""
import math
import re
import string

import torch
import torch.nn.functional as F

REGEX_FALLBACK = '[invalid]'  # the harness's regex filter's answer when nothing matches


def new_cache(model):
    """An empty KV cache for GPT.forward(cache=...): one dict per block, which holds its keys and values."""
    return [{} for _ in model.blocks]


@torch.no_grad()
def generate(model, idx, max_new_tokens, temperature=1.0, top_k=None):
    """Append max_new_tokens sampled tokens to idx (B, T) (temperature 0: greedy); once the sequence is longer
    than block_size the model reads its last block_size tokens."""
    new = generate_rows(model, idx.tolist(), max_new_tokens, temperature, top_k)
    return torch.cat((idx, torch.tensor(new, dtype=idx.dtype, device=idx.device).view(len(new), -1)), dim=1)


@torch.no_grad()
def generate_rows(model, prompts, max_new_tokens, temperature=0.0, top_k=None, eos_ids=(), stop=None,
                  use_cache=True):
    """Continue each prompt (a list of token ids) by up to max_new_tokens tokens, all rows in one batch: greedy
    (argmax, the first of equal logits) at temperature 0, else sampled from the top_k likeliest at that
    temperature. Rows of different lengths are left-padded; each reads its own positions (0 at its first token)
    and a mask that hides the padding, so it computes what it computes alone. A row ends after a token in eos_ids
    (kept in its output) or when stop(row index, its new ids) returns True; ended rows leave the batch.
    Returns each row's new ids. With the KV cache each step feeds one token per row; without it
    (use_cache=False, the reference the cache is tested against) every step reads the whole context again, as
    it must once a row is longer than block_size (the model then reads its last block_size tokens)."""
    if not 0 <= temperature < math.inf:  # inf: a uniform draw; nan: every probability nan (sample.py says so first)
        raise ValueError(f"temperature={temperature!r} must be a finite number >= 0")
    device, block = model.wte.weight.device, model.config.block_size
    width = max(len(p) for p in prompts)
    tokens = torch.zeros(len(prompts), width, dtype=torch.long, device=device)
    valid = torch.zeros(len(prompts), width, dtype=torch.bool, device=device)  # False: left padding
    for i, p in enumerate(prompts):
        tokens[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
        valid[i, width - len(p):] = True
    rows, out, cache = list(range(len(prompts))), [[] for _ in prompts], None
    for _ in range(max_new_tokens):
        if cache is not None and tokens.shape[1] <= block:  # the newest token, after the cached ones
            positions = valid.sum(1, keepdim=True) - 1
            mask = None if valid.all() else valid[:, None, None, :]
            logits, _ = model(tokens[:, -1:], positions=positions, attn_mask=mask, cache=cache)
        else:  # the whole context, or its last block_size tokens
            window, seen = tokens[:, -block:], valid[:, -block:]
            cache = new_cache(model) if use_cache and tokens.shape[1] < block else None
            positions = mask = None  # no padding: the fast path
            if not seen.all():
                positions = (seen.cumsum(1) - 1).clamp(min=0)
                T = window.shape[1]
                causal = torch.ones(T, T, dtype=torch.bool, device=device).tril()
                # padding queries see themselves, so no row of the mask is empty (their outputs are unused)
                mask = (causal & (seen[:, None, :] | torch.eye(T, dtype=torch.bool, device=device)))[:, None]
            logits, _ = model(window, positions=positions, attn_mask=mask, cache=cache)
        logits = logits[:, -1].float()
        if temperature == 0:
            next_token = logits.argmax(dim=-1)
        else:
            logits = logits / temperature
            if top_k is not None:
                kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
                logits = logits.masked_fill(logits < kth, float('-inf'))
            next_token = torch.multinomial(F.softmax(logits, dim=-1), num_samples=1)[:, 0]
        tokens = torch.cat((tokens, next_token[:, None]), dim=1)
        valid = F.pad(valid, (0, 1), value=True)
        ended = []
        for row, token in zip(rows, next_token.tolist()):
            out[row].append(token)
            ended.append(token in eos_ids or (stop is not None and stop(row, out[row])))
        if all(ended):
            break
        if any(ended):  # drop ended rows, then the padding columns no remaining row needs
            keep = torch.tensor([not e for e in ended], device=device)
            rows = [row for row, e in zip(rows, ended) if not e]
            tokens, valid = tokens[keep], valid[keep]
            lead = int(valid.any(0).int().argmax())
            tokens, valid = tokens[:, lead:], valid[:, lead:]
            for layer in cache or []:
                layer['k'], layer['v'] = layer['k'][keep, :, lead:], layer['v'][keep, :, lead:]
    return out


def cut_generation(text, stops):
    """The harness's postprocess_generated_text: the text before the first occurrence of each stop string."""
    for term in stops:
        if term:
            text = text.split(term)[0]
    return text


def apply_filter(text, regex):
    """The harness's filters: 'none' (regex None) keeps the text; regex = (pattern, group_select): its regex filter
    (findall, the match at group_select; of a match with several groups the first non-empty one; stripped; no
    match: '[invalid]')."""
    if regex is None:
        return text
    pattern, group_select = regex
    matches = re.findall(pattern, text)
    if not matches:
        return REGEX_FALLBACK
    match = matches[group_select]
    if isinstance(match, tuple):
        match = next((m for m in match if m), REGEX_FALLBACK)
    return match.strip()


def exact_match(prediction, reference, options):
    """The harness's exact_match (lm_eval/api/metrics.py): regexes_to_ignore removed from both, then lower-cased
    (ignore_case) and punctuation removed (ignore_punctuation); 1.0 if equal."""
    for pattern in options['regexes_to_ignore'] or []:
        prediction, reference = re.sub(pattern, '', prediction), re.sub(pattern, '', reference)
    if options['ignore_case']:
        prediction, reference = prediction.lower(), reference.lower()
    if options['ignore_punctuation']:
        table = str.maketrans('', '', string.punctuation)
        prediction, reference = prediction.translate(table), reference.translate(table)
    return float(prediction == reference)
