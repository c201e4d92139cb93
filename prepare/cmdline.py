"""
The command line of the prepare/ scripts (common.py re-exports all of it; import it from there, which puts the
repository root on sys.path first): token counts with suffixes, the Parser under the project's command-line
convention (configurator.py) with every output checked (writable, of the right kind) before anything is written, and
the options every script shares.
"""
import argparse
import decimal
import difflib
import os
import re
import shlex

from configurator import BOOLEAN_WORDS, UserError, check_rule

MAX_COUNT = 10**15  # (1e15) more tokens than any corpus holds: a bigger count is a typo (and overflows numpy)


def parse_count(text):
    """'65536', '1_000_000', '64M', '4.3B', '2e6' -> int: token budgets are easier to read with a suffix. Exact
    (decimal, so 4.3B is 4,300,000,000) and whole: 0.4 must not round to 0, which means "the whole source"."""
    m = re.fullmatch(r'\s*([0-9][0-9_]*(?:\.[0-9]+)?(?:e[0-9]+)?)\s*([kKmMbBgG]?)\s*', str(text))
    if not m:
        raise argparse.ArgumentTypeError(f"'{text}' is not a token count (examples: 65536, 64M, 4.3B)")
    scale = {'': 1, 'k': 10**3, 'm': 10**6, 'b': 10**9, 'g': 10**9}[m.group(2).lower()]
    try:
        value = decimal.Decimal(m.group(1).replace('_', '')) * scale
    except decimal.DecimalException:  # an exponent beyond decimal's range
        value = decimal.Decimal(MAX_COUNT + 1)
    if value > MAX_COUNT:
        raise argparse.ArgumentTypeError(f"'{text}' is more tokens than any source holds (at most 1e15)")
    if value != value.to_integral_value():
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number of tokens")
    return int(value)


def parse_bool(text):
    if text not in BOOLEAN_WORDS:
        raise argparse.ArgumentTypeError(f"'{text}' is not True or False")
    return BOOLEAN_WORDS[text]


def at_least_1(text):
    if not re.fullmatch(r'\s*[0-9]+\s*', text) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"'{text}' must be a whole number, at least 1")
    return int(text)


class Parser(argparse.ArgumentParser):
    """argparse under the project's command-line convention (configurator.py): --help prints `doc`, --key value or
    --key=value, a boolean bare or with a value (--force, --force=True), "did you mean" for an unknown option, and
    an option's rule (add_argument(..., rule=R), a configurator.check_rule rule) checked once all are parsed; an
    --out (or --*_out) is 'an output directory' unless it names another rule. No abbreviations: a typo is an error,
    not a guess."""
    def __init__(self, doc):
        super().__init__(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)

    def add_argument(self, *names, rule=None, **kwargs):
        if kwargs.get('action') == 'store_true':  # a bare --flag, or --flag=True/False
            kwargs.update(action='store', nargs='?', const=True, default=False, type=parse_bool)
        action = super().add_argument(*names, **kwargs)
        action.rule = rule or ('an output directory' if action.dest == 'out' or action.dest.endswith('_out') else None)
        return action

    def parse_args(self, args=None, namespace=None):
        parsed = super().parse_args(args, namespace)
        for action in self._actions:  # every rule, writable outputs included, before a script writes any
            value = getattr(parsed, action.dest, None)
            if action.rule in ('an output directory', 'an output file') and value is not None and not value.strip():
                raise UserError(f'--{action.dest} is empty: give the path to write')  # '' passes check_rule
            if action.rule and value is not None:
                check_rule(f'--{action.dest}', value, action.rule)
        return parsed

    def error(self, message):  # argparse's own mistakes exit 2 too, but with one line, like every other error
        unknown = re.match(r'unrecognized arguments: (--[^\s=]+)', message)
        names = [name for action in self._actions for name in action.option_strings]
        close = difflib.get_close_matches(unknown.group(1), names, n=1) if unknown else []
        hint = f' (did you mean {close[0]}?)' if close else ''
        self.exit(2, f'error: {message}{hint} (see {self.prog} --help)\n')


def base_parser(doc, tokenizer='gpt2', max_tokens='0', val_tokens='1048576', out=None):
    """The options every prepare script shares; scripts add their own."""
    p = Parser(doc)
    if out is not None:  # local.py has no sensible default and requires --out itself
        p.add_argument('--out', default=out, help='output directory (default: %(default)s)')
    p.add_argument('--tokenizer', default=tokenizer,
                   help="'gpt2' (tiktoken, works offline), 'bytes' (vocab 257, for CPU demos), a model directory "
                        "with a tokenizer.json (a Hugging Face model's own tokenizer; uint32 above 65,536 tokens) or "
                        "another tiktoken encoding such as cl100k_base (downloaded; uint32). Default: %(default)s")
    p.add_argument('--max_tokens', type=parse_count, default=parse_count(max_tokens),
                   help='train budget in tokens: stops after the document that reaches it; 0 = the whole source '
                        '(default: %(default)s)')
    p.add_argument('--val_tokens', type=parse_count, default=None if val_tokens is None else parse_count(val_tokens),
                   rule='at least 1',  # an empty val.bin is one train.py refuses
                   help=f'val tokens, whole documents held out (default: {val_tokens or "see above"})')
    p.add_argument('--workers', type=at_least_1, default=os.cpu_count() or 1,
                   help='tokenizer processes (BPE tokenizers); default: all cores (%(default)s)')
    p.add_argument('--force', action='store_true', help='rebuild even when meta.json says it is already done')
    return p


def command_line(script, argv):
    """The exact command, for meta.json: how to rebuild this output."""
    return shlex.join(['python', os.path.relpath(script)] + list(argv))
