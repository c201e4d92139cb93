"""
chat_template.py: chat templates, rendered as transformers renders them, and the loss mask of a conversation.
"""
import datetime
import hashlib
import json
import os
import re
import sys

import numpy as np

from configurator import UserError, kind_of
from tokenizer import hf_tokenizer, load_tokenizer_json, read_json_file, special_token_text

# A model directory's chat template, rendered exactly as transformers' (5.24.0) apply_chat_template renders it,
# and the loss mask of a rendered conversation (prepare/chat.py packs them into a chat source).
#
# Rendering, as transformers does it: jinja2's ImmutableSandboxedEnvironment with trim_blocks and lstrip_blocks,
# the loop-controls extension and a `{% generation %}` extension; a `tojson` filter that does not escape HTML
# (json.dumps, ensure_ascii=False); the globals raise_exception, strftime_now, a limited `dict` and a `namespace`
# that refuses underscore names; each message with its None-valued keys dropped (and reasoning fields aliased as
# transformers aliases them); the variables messages, tools=None, documents=None, add_generation_prompt and the
# tokenizer's named special tokens (bos_token, eos_token, unk_token, sep_token, pad_token, cls_token, mask_token and
# any other `*_token` string of tokenizer_config.json), as strings. One stated difference: transformers binds
# strftime_now to the current date; here it is a fixed date (meta.json's `date`), so the files are reproducible.
# No date_string is passed (Llama 3.1's template has its own default). The rendered text is tokenized with the
# directory's tokenizer.json without adding special tokens again; the template's control tokens are matched as
# special tokens, and so is text in a message that spells one (transformers' default, sanitize_control_tokens=False).
#
# Loss masks (1 = the token is a training label). With `{% generation %}` tags in the template: every token that
# overlaps a tagged span of characters, mapped through the tokenizer's character offsets exactly as
# return_assistant_tokens_mask=True does; a span whose characters are not the text its tags wrapped (tags inside a
# macro or a {% set %} block, counted from the wrong place there too) is refused. Without tags: assistant turn k
# is the characters between the rendering of messages[:k] with add_generation_prompt=True and that of
# messages[:k+1], cut right after the last end-of-turn token in it (so a newline the template writes after the turn
# is not trained on), mapped through the same offsets;
# every such rendering must be a string prefix of the whole conversation's (checked, else the example is refused);
# a template that ignores add_generation_prompt puts the assistant header into the turn (a warning says so).
CHAT_DATE = '2024-07-26'  # strftime_now's fixed date (Llama 3.1's template defaults its date_string to this day)
LOSS_ON = ('assistant', 'last_assistant', 'all')
NAMED_SPECIAL_TOKENS = ('bos_token', 'eos_token', 'unk_token', 'sep_token', 'pad_token', 'cls_token', 'mask_token')
REASONING_FIELDS = ('reasoning_content', 'thinking', 'reasoning')  # transformers' names, the first one standard
GENERATION_TAG = re.compile(r'\{%-?\s*generation\s*-?%\}')  # how transformers tells a template has tags


def read_chat_template(model_dir, override=None):
    """(template text, where it came from): --chat_template=FILE, else the directory's chat_template.jinja, else
    tokenizer_config.json's chat_template (a string, or a list of named templates: the one named 'default')."""
    if override:
        if not os.path.isfile(override):
            raise UserError(f'--chat_template {override}: no such file')
        return read_template_file(override), override
    jinja_file = os.path.join(model_dir, 'chat_template.jinja')
    if os.path.isfile(jinja_file):  # transformers reads it before tokenizer_config.json, empty or not
        return read_template_file(jinja_file), jinja_file
    config_file = os.path.join(model_dir, 'tokenizer_config.json')
    template = read_json_file(config_file).get('chat_template') if os.path.isfile(config_file) else None
    if isinstance(template, list):
        template = {t.get('name'): t.get('template') for t in template if isinstance(t, dict)}.get('default')
    if not isinstance(template, str) or not template:
        raise UserError(f'{model_dir} has no chat template (no chat_template.jinja, no chat_template in '
                        f'tokenizer_config.json): pass --chat_template=FILE, or use --format=text')
    return template, config_file


def read_template_file(path):
    try:
        with open(path, encoding='utf-8') as f:  # text mode, as transformers reads chat_template.jinja
            text = f.read()
    except UnicodeDecodeError as e:
        raise UserError(f'{path} is not UTF-8 text ({e.reason} at byte {e.start}): a chat template is a jinja '
                        f'text file, saved as UTF-8') from None
    except OSError as e:
        raise UserError(f'{path} cannot be read ({e.strerror})') from None
    if not text.strip():  # it would render every conversation as nothing
        raise UserError(f'{path} is empty (a chat template file holds a jinja template): fill it in or pass '
                        f'another --chat_template=FILE, or use --format=text')
    return text


def special_tokens_map(model_dir, tok, config):
    """The special tokens transformers passes to a chat template (its special_tokens_map): tokenizer_config.json's
    named tokens and other `*_token` strings, extra_special_tokens given as a dict, special_tokens_map.json where
    the config lists no added_tokens_decoder (transformers' legacy path), and tokenizer.json's padding token."""
    found = {}
    legacy = os.path.join(model_dir, 'special_tokens_map.json')
    if 'added_tokens_decoder' not in config and os.path.isfile(legacy):
        found.update({k: special_token_text(v) for k, v in read_json_file(legacy).items()})
    for key, value in config.items():
        if key.endswith('_token') and special_token_text(value) is not None:
            found[key] = special_token_text(value)
    if isinstance(config.get('extra_special_tokens'), dict):
        found.update({k: special_token_text(v) for k, v in config['extra_special_tokens'].items()})
    if tok.padding and 'pad_token' not in found:
        found['pad_token'] = tok.padding['pad_token']
    return {k: str(v) for k, v in found.items() if isinstance(v, str)}


class _GenerationSpans:
    """What the `{% generation %}` extension records while a template renders: the characters yielded so far by
    the template's top-level generator and the (start, end) of each tagged span. A span starts where the output
    yielded so far ends, as transformers counts it (so tags inside a buffered block, a macro say, count as they do
    there, and misplaced_span refuses them), and each span's text."""
    def __init__(self):
        self.yielded, self.spans, self.texts = 0, [], []


def _sandbox(date):
    """The sandboxed jinja2 environment transformers renders chat templates in, strftime_now bound to `date`."""
    import jinja2
    import jinja2.ext
    import jinja2.nodes
    import jinja2.utils
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(jinja2.ext.Extension):
        tags = {'generation'}

        def __init__(self, environment):
            super().__init__(environment)
            self.tracking = None  # a _GenerationSpans while render_chat runs

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(('name:endgeneration',), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method('_span'), [], [], body).set_lineno(lineno)

        def _span(self, caller):
            text = caller()
            if self.tracking is not None:
                start = self.tracking.yielded
                self.tracking.spans.append((start, start + len(text)))
                self.tracking.texts.append(text)
            return text

    class Namespace(jinja2.utils.Namespace):
        def __init__(*args, **kwargs):  # jinja's own signature trick: namespace(self=...) still works
            self, attrs = args[0], dict(*args[1:], **kwargs)
            for name in attrs:
                Namespace.check(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name, value):
            Namespace.check(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def check(name):
            if isinstance(name, str) and name.startswith('_'):
                raise jinja2.exceptions.SecurityError(f'chat templates cannot set underscore attributes ({name!r})')

    class Dict:  # dict(...) and dict.fromkeys(...) only: no attribute access into the real type
        def __call__(self, *args, **kwargs):
            return dict(*args, **kwargs)

        def fromkeys(self, *args, **kwargs):
            return dict.fromkeys(*args, **kwargs)

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    day = datetime.datetime.strptime(date, '%Y-%m-%d')
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[Generation, jinja2.ext.loopcontrols])
    env.filters['tojson'] = tojson
    env.globals.update(raise_exception=raise_exception, strftime_now=lambda fmt: day.strftime(fmt), dict=Dict(),
                       namespace=Namespace)
    return env, env.extensions[Generation.identifier]


def compile_chat_template(text, date=CHAT_DATE, where='the chat template'):
    """A compiled template (jinja2 Template, with .generation_spans, the extension recording tagged spans)."""
    import jinja2
    try:
        datetime.datetime.strptime(date, '%Y-%m-%d')
    except ValueError:
        raise UserError(f'--date {date!r} is not a date like 2024-07-26') from None
    env, extension = _sandbox(date)
    try:
        template = env.from_string(text)
    except jinja2.TemplateSyntaxError as e:
        raise UserError(f'{where} is not a valid jinja2 template (line {e.lineno}: {e.message})') from None
    template.generation_extension = extension
    return template


def chat_messages(conversation, where):
    """The messages a template sees: a list of dicts, each with its None-valued keys dropped (as transformers
    does), a string role and a content; reasoning fields aliased as transformers aliases them."""
    if not isinstance(conversation, (list, tuple)):
        raise UserError(f'{where}: a conversation must be a list of turns, got {type(conversation).__name__}')
    if not conversation:
        raise UserError(f'{where}: the conversation is empty')
    messages = []
    for i, turn in enumerate(conversation):
        if not isinstance(turn, dict):
            raise UserError(f'{where}: turn {i} is a {type(turn).__name__}, not an object with role and content')
        turn = {k: v for k, v in turn.items() if v is not None}
        if 'role' not in turn or 'content' not in turn:
            raise UserError(f'{where}: turn {i} has no {"role" if "content" in turn else "content"} (fields: '
                            f'{", ".join(turn) or "none"}); every turn needs a role and a content')
        for key in ('role', 'content'):  # a template would print anything else as its Python repr
            if not isinstance(turn[key], str):
                hint = (' (content parts: join their text into one string)' if key == 'content' and
                        isinstance(turn[key], list) else '')
                raise UserError(f'{where}: turn {i} has a {key} that is {kind_of(turn[key])}, not text{hint}')
        reasoning = next((turn[k] for k in REASONING_FIELDS if turn.get(k) is not None), None)
        if reasoning is not None:
            turn = {'thinking': reasoning, **turn, 'reasoning_content': reasoning}
        messages.append(turn)
    return messages


def render_chat(chat, messages, add_generation_prompt=False, where='a conversation', check_tags=False):
    """(rendered text, tagged character spans) of messages with the chat's template. check_tags: refuse spans
    whose characters are not the text the tags wrapped (misplaced_span)."""
    import jinja2
    tracking = _GenerationSpans()
    extension = chat['template'].generation_extension
    extension.tracking = tracking
    blocks = []
    try:
        for block in chat['template'].generate(messages=messages, tools=None, documents=None,
                                               add_generation_prompt=add_generation_prompt, **chat['special_tokens']):
            blocks.append(block)
            tracking.yielded += len(block)
    except jinja2.TemplateError as e:  # raise_exception(...) in the template, or a template bug
        raise UserError(f'{where}: the chat template refused it ({type(e).__name__}: {" ".join(str(e).split())})') \
            from None
    except Exception as e:  # a template runs arbitrary expressions on the data (TypeError, KeyError, ...)
        raise UserError(f'{where}: the chat template failed on it ({type(e).__name__}: '
                        f'{" ".join(str(e).split())[:200]})') from None
    finally:
        extension.tracking = None
    text = ''.join(blocks)
    if check_tags:
        misplaced_span(chat, text, tracking, where)
    return text, tracking.spans


def misplaced_span(chat, text, tracking, where):
    """A tagged span is counted from the output the template's top level has yielded (as transformers counts it),
    so tags inside a macro, a {% set %} block or a {% filter %} block, whose output is buffered, get offsets that
    do not hold the text they wrapped: the mask would miss the reply (transformers' misses it too). Refused."""
    for (start, end), tagged in zip(tracking.spans, tracking.texts):
        if text[start:end] != tagged:
            raise UserError(f"{where}: the {{% generation %}} tags of {chat['template_source']} do not mark the "
                            f'reply: they wrap {tagged[:40]!r}, but the characters they are counted at '
                            f'({start} to {end}) hold {text[start:end][:40]!r}, as with tags inside a macro, a '
                            f'{{% set %}} block or a {{% filter %}} block (transformers masks these wrong too); put '
                            f'the tags in the template\'s top level (--chat_template=FILE), or use --loss_on=all')


def spans_to_mask(offsets, spans):
    """1 for every token whose characters overlap a span: transformers' return_assistant_tokens_mask mapping
    (spans and offsets both in order, one pass)."""
    mask, span = np.zeros(len(offsets), dtype=np.uint8), 0
    for i, (start, end) in enumerate(offsets):
        while span < len(spans) and start >= spans[span][1]:
            span += 1
        if span == len(spans):
            break
        if end > spans[span][0]:
            mask[i] = 1
    return mask


def assistant_spans(chat, messages, text, where):
    """The prefix method's character spans of the assistant turns in `text` (the whole conversation's rendering):
    from the end of the generation prompt to right after the turn's last end-of-turn token, or to the end of the
    turn where it has none (a template that writes no end-of-turn after a final turn)."""
    spans, eot = [], chat['end_of_turn']
    for k, message in enumerate(messages):
        if message['role'] != 'assistant':
            continue
        before, _ = render_chat(chat, messages[:k], add_generation_prompt=True, where=where)
        through, _ = render_chat(chat, messages[:k + 1], where=where)
        for name, prefix in (('with a generation prompt', before), ('through it', through)):
            if not text.startswith(prefix):
                raise UserError(f'{where}: the chat template is not prefix-stable: the conversation rendered up '
                                f'to assistant turn {k} ({name}) is not a prefix of the whole rendering, so the turn '
                                f'cannot be located; use a template with {{% generation %}} tags (--chat_template) '
                                f'or --loss_on=all')
        start, end = len(before), len(through)
        cut = text.rfind(eot, start, end) if eot else -1
        spans.append((start, cut + len(eot) if cut >= 0 else end))
    return spans


def encode_chat(chat, conversation, loss_on='assistant', where='a conversation', use_tags=None):
    """(token ids, loss mask) of one conversation, both numpy arrays of one length; the first token never carries
    loss. use_tags: None = the template's generation tags where it has them, else the prefix method; False forces
    the prefix method (tests). last_assistant: the last tagged span, or the last assistant turn."""
    messages = chat_messages(conversation, where)
    tags = loss_on != 'all' and (chat['generation_tags'] if use_tags is None else use_tags)
    text, tagged = render_chat(chat, messages, where=where, check_tags=tags)
    try:
        text.encode('utf-8')
    except UnicodeEncodeError as e:  # JSON's "\ud800" escape parses to a lone surrogate, which the tokenizer refuses
        raise UserError(f'{where}: the conversation holds a lone surrogate (U+{ord(text[e.start]):04X}, a JSON '
                        f'\\u escape that is half of a pair), which is not text: fix or drop it') from None
    encoding = chat['tokenizer'].encode(text, add_special_tokens=False)
    ids = np.array(encoding.ids, dtype=np.uint32)
    if loss_on == 'all':
        mask = np.ones(len(ids), dtype=np.uint8)
    else:
        spans = tagged if tags else assistant_spans(chat, messages, text, where)
        mask = spans_to_mask(encoding.offsets, spans[-1:] if loss_on == 'last_assistant' else spans)
    mask[:1] = 0
    return ids, mask


EOT_PROBE = [dict(role='user', content='Hi'), dict(role='assistant', content='Hello')]
EOT_PROBE_NAME = "the end-of-turn probe (a user 'Hi' and an assistant 'Hello')"


def end_of_turn_token(chat):
    """The token that ends an assistant turn: the special token of the tokenizer that ends last within the
    rendering of a probe turn (Llama 3: <|eot_id|>, ChatML: <|im_end|>, Mistral: </s>); None if none does."""
    before, _ = render_chat(chat, EOT_PROBE[:1], add_generation_prompt=True, where=EOT_PROBE_NAME)
    through, _ = render_chat(chat, EOT_PROBE, where=EOT_PROBE_NAME)
    if not through.strip():
        raise UserError(f'{EOT_PROBE_NAME}: the chat template renders nothing for it')
    turn = through[len(before):] if through.startswith(before) else through
    specials = [t.content for t in chat['tokenizer'].get_added_tokens_decoder().values() if t.special]
    found = [(turn.rfind(s) + len(s), len(s), s) for s in specials if s and s in turn]
    return max(found)[2] if found else None


def ignores_generation_prompt(chat):
    """Whether the template renders a user turn the same with add_generation_prompt as without (then the prefix
    method counts the assistant header as part of the reply); None where it refuses that turn alone."""
    try:
        return render_chat(chat, EOT_PROBE[:1], add_generation_prompt=True)[0] == render_chat(chat, EOT_PROBE[:1])[0]
    except UserError:
        return None


def load_chat(model_dir, chat_template=None, date=CHAT_DATE, end_of_turn=None):
    """A model directory's chat tokenizer as a dict: tokenizer (tokenizers.Tokenizer that matches special tokens),
    template (compiled), template_text, template_sha256, template_source, special_tokens (the template's variables),
    generation_tags (bool), end_of_turn (text or None), end_of_turn_failure (why the probe found none, where the
    template failed on it), pad_token_id, date, and the fields of hf_tokenizer (name, path, fingerprint,
    vocab_size, eot_token, bos_token)."""
    info = hf_tokenizer(model_dir)  # checks the directory and its tokenizer.json, and names the EOS
    tok, config = load_tokenizer_json(model_dir)  # a second object: hf_tokenizer's encodes specials as text
    tok.no_truncation()
    tok.no_padding()
    tok.encode_special_tokens = bool(config.get('split_special_tokens', False))  # as transformers sets it
    text, source = read_chat_template(model_dir, chat_template)
    chat = dict({k: v for k, v in info.items() if k not in ('encode', 'decode')}, tokenizer=tok, template_text=text,
                template=compile_chat_template(text, date, where=source), template_source=os.path.abspath(source),
                template_sha256=hashlib.sha256(text.encode('utf-8')).hexdigest(), date=date,
                special_tokens=special_tokens_map(model_dir, tok, config),
                generation_tags=bool(GENERATION_TAG.search(text)), end_of_turn=None,
                end_of_turn_failure=None)
    if end_of_turn is not None:
        if tok.token_to_id(end_of_turn) is None:
            raise UserError(f'--end_of_turn {end_of_turn!r} is not a token of {model_dir}')
        chat['end_of_turn'] = end_of_turn
    else:
        try:
            chat['end_of_turn'] = end_of_turn_token(chat)
        except UserError as e:  # a template that refuses the probe: tags need none, else require_end_of_turn says
            chat['end_of_turn_failure'] = str(e)
    pad = chat['special_tokens'].get('pad_token')
    chat['pad_token_id'] = tok.token_to_id(pad) if pad is not None and tok.token_to_id(pad) is not None \
        else info['eot_token']
    return chat


def require_end_of_turn(chat, loss_on):
    """The prefix method cuts each turn after the end-of-turn token: it must be known. Once per run (prepare calls
    it once), a warning where the template ignores add_generation_prompt: the mask is kept as the method gives it."""
    if loss_on == 'all' or chat['generation_tags']:
        return
    if chat['end_of_turn'] is None and chat['end_of_turn_failure']:
        raise UserError(f"cannot tell the chat template's end-of-turn token: {chat['template_source']} failed on "
                        f"{chat['end_of_turn_failure']}; pass --end_of_turn=TOKEN, or fix the template")
    if chat['end_of_turn'] is None:
        raise UserError(f"cannot tell the chat template's end-of-turn token (its rendering of a user 'Hi' and an "
                        f"assistant 'Hello' ends in no special token): pass --end_of_turn=TOKEN")
    if ignores_generation_prompt(chat):
        print(f"warning: {chat['template_source']} ignores add_generation_prompt (it renders a conversation the same "
              f"with and without it), so each assistant turn's role header is trained on as part of the reply; to "
              f"avoid it, use a template that writes a generation prompt, or one with {{% generation %}} tags "
              f"(--chat_template=FILE)", file=sys.stderr)
