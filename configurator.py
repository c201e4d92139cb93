"""
The tiny configurator, nanoGPT-style: config files are plain Python assignments, executed in order, then
`--key=value` overrides. Every key must exist in config/default.py (which documents them all); a value must have
the type of its default. Usage from a script:

    config = load_config(sys.argv[1:], doc=__doc__)        # dict of every key
    options = parse_options(sys.argv[1:], OPTIONS, positional=['source'], rules=RULES, usage=..., doc=__doc__)

Every script's command line follows one convention (split_argv): -h/--help prints its docstring and exits 0;
--key=value and --key value both work; a boolean may be bare (--dry_run) or take a value; an unknown key or option
names the closest known one. What a value must be beyond its type (a range, a choice, a device, a path of a kind)
is a rule in a table beside the keys, checked by check_rules with the same one-line errors for every script.

User mistakes raise UserError; scripts wrap main() in `run_main(main)`, which prints the one-line message and exits
with status 2 instead of a traceback.
"""
import ast
import difflib
import math
import os
import sys

import layout

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULTS_FILE = os.path.join(ROOT, 'config', 'default.py')


class UserError(Exception):
    """A mistake the user can fix (bad key, bad value, missing file). Printed as one line, exit status 2."""


def kind_of(value):
    """A value's type with its article, for an error line: 'an int', 'a list'."""
    name = type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def run_main(main, argv=None, interrupted='interrupted'):
    """Run main(argv) (default: sys.argv[1:]); a UserError becomes 'error: <message>' on stderr and exit status
    2, with no traceback; Ctrl-C prints `interrupted` and exits with 130; output piped into a reader that stops
    early (`| head`) ends quietly. Every script of the project (prepare/ included) ends with it."""
    try:
        main(sys.argv[1:] if argv is None else argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        sys.exit(130)
    except BrokenPipeError:  # Python's documented recipe: no second error when the interpreter flushes stdout
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)


def read_config_file(path, include_key='base', _including=()):
    """Execute a config file and return the plain values it assigns (modules and _private names are dropped).

    Includes: a file may start from other config files with `base = ['config/paper.py', ...]` (a literal list,
    as sweep files name theirs). Those are read first, in order (each with its own bases), their values are
    visible to the including file while it runs (`runs = [...] + runs` works), and its own assignments win.
    A relative base path is taken from the repository root (where `python train.py config/x.py` runs), so the
    same string works in a run config and in a sweep file; an absolute one as it is. A cycle or a missing base is
    one error line. include_key: the key that names includes (sweep.py reads a sweep file with 'include', since
    its `base` names the run configs of its runs, not files to include)."""
    if not os.path.isfile(path):
        raise UserError(f"config file {path} " + ("is a directory, not a file" if os.path.isdir(path) else "not found"))
    try:
        text = open(path).read()
        tree = compile(text, path, 'exec', ast.PyCF_ONLY_AST)
    except (SyntaxError, ValueError, UnicodeDecodeError) as e:
        raise UserError(f"config file {path} failed to run: {type(e).__name__}: {e}")
    namespace = {}
    for base in config_includes(tree, path, include_key) if include_key else []:
        base_path = base if os.path.isabs(base) else os.path.join(ROOT, base)
        chain = (*_including, os.path.realpath(path))
        if os.path.realpath(base_path) in chain:
            cycle = ' -> '.join(os.path.relpath(p, ROOT) if p.startswith(ROOT + os.sep) else p
                                for p in (*chain, os.path.realpath(base_path)))
            raise UserError(f"config files include each other in a cycle ({include_key} = [...]): {cycle}")
        if not os.path.isfile(base_path):
            raise UserError(f"config file {path} includes {base} ({include_key} = [...]), which is not found: "
                            f"paths are relative to the repository root ({ROOT})")
        namespace.update(read_config_file(base_path, include_key, chain))
    namespace['__file__'] = os.path.abspath(path)
    try:
        exec(compile(tree, path, 'exec'), namespace)
    except (Exception, SystemExit) as e:  # a config file is user input (an exit() in it ended a run silently)
        raise UserError(f"config file {path} failed to run: {type(e).__name__}: {e}")
    namespace.pop(include_key, None)
    return {k: v for k, v in namespace.items()
            if not k.startswith('_') and not callable(v) and type(v).__name__ != 'module'}


def config_includes(tree, path, include_key):
    """The files a config file's `base = [...]` names, read from its syntax tree before it runs."""
    found = [node.value for node in tree.body if isinstance(node, ast.Assign)
             and any(isinstance(t, ast.Name) and t.id == include_key for t in node.targets)]
    if not found:
        return []
    try:
        bases = ast.literal_eval(found[-1])
    except ValueError:
        bases = None
    if len(found) > 1 or not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise UserError(f"config file {path}: {include_key} must be assigned once, a list of config file paths "
                        f"written out, e.g. {include_key} = ['config/paper.py']")
    return bases


DEFAULTS = read_config_file(DEFAULTS_FILE)


def check_value(key, value, where, defaults=DEFAULTS):
    """Raise UserError unless key is known and value has the default's type (int is accepted for float)."""
    if key not in defaults:
        close = difflib.get_close_matches(key, defaults.keys(), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else " (config/default.py lists every key)"
        raise UserError(f"unknown config key '{key}' in {where}{hint}")
    default = defaults[key]
    if default is None:
        return value  # keys that default to None take a number or None; their own checks live where they are used
    if key in ('compile', 'pad_vocab'):  # 'auto' or a bool
        if not (value == 'auto' or isinstance(value, bool)):
            raise UserError(f"config key '{key}' in {where} must be 'auto', True or False, got {value!r}")
        return value
    if key == 'activation_checkpointing':  # a mode's name, or an older bool (train.check_config judges it)
        ok = isinstance(value, (str, bool))
    elif isinstance(default, bool) or isinstance(value, bool):
        ok = isinstance(value, bool) and isinstance(default, bool)
    elif isinstance(default, float):
        if isinstance(value, str) and value.strip().lower().lstrip('+-') in ('inf', 'infinity', 'nan'):
            value = float(value)  # numbers, if not literals: the key's rule says what it must be instead
        ok = isinstance(value, (int, float))
        value = float(value) if ok else value
    elif isinstance(default, int):
        ok = isinstance(value, int)
    elif isinstance(default, str) and isinstance(value, str):
        ok = True
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise UserError(f"config key '{key}' in {where} must be {type(default).__name__} "
                        f"(like its default {default!r}), got {value!r}")
    return value


def parse_value(text):
    """'--key=value' text -> Python value: a literal if it parses as one, else the string itself."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


# ---------------------------------------------------------------------------------------------------------------
# The one command-line convention of every script (train, schedule, sweep, plot, efficiency, sample, eval, export,
# bench; prepare/ follows it through argparse): -h/--help prints the script's docstring and exits 0; --key=value
# and --key value both work (a value that starts with -- needs the = form); a boolean may be bare (--dry_run) or
# take a value (--dry_run=False, --dry_run False); an unknown option names the closest known one.
# ---------------------------------------------------------------------------------------------------------------

BOOLEAN_WORDS = {'True': True, 'False': False, 'true': True, 'false': False}


def takes_bool(known, key):
    return isinstance(known.get(key), bool) or key == 'compile'  # compile: 'auto' or a bool (check_value)


def print_help_if_asked(argv, doc, options=None, usage=''):
    """-h or --help anywhere in argv: print the script's docstring, its usage line and its options; exit 0."""
    if not any(a in ('-h', '--help') for a in argv):
        return
    lines = [(doc or '').strip('\n')] + ([f"\nusage: {usage}"] if usage else [])
    if options:
        lines.append('\noptions (--key=value or --key value; default in brackets):')
        lines += [f"  --{key} [{default!r}]" for key, default in options.items()]
    print('\n'.join(lines))
    sys.exit(0)


def split_argv(argv, known, unknown=None):
    """argv -> its items in order: (None, text, None) for a positional argument (a config file, a run), (key,
    value text, where) for an option, under the convention above. known: key -> default (a boolean default makes
    a bare --key mean True). unknown(key, arg): the error for a key not in known (None: every key is taken, e.g.
    sweep.py passes the ones that are not its own on to train.py)."""
    items, i = [], 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if not arg.startswith('--'):
            items.append((None, arg, None))
            continue
        if '=' in arg:
            key, text = arg[2:].split('=', 1)
            where = f"argument {arg}"
        else:
            key, following = arg[2:], argv[i] if i < len(argv) else None
            if unknown is not None and key not in known:
                raise unknown(key, arg)
            if takes_bool(known, key) and following not in BOOLEAN_WORDS:
                text, where = 'True', f"argument {arg}"
            elif following is not None and not following.startswith('--'):
                text, where, i = following, f"argument {arg} {following}", i + 1
            else:
                raise UserError(f"argument {arg} must look like --key=value")
        if takes_bool(known, key) and text in BOOLEAN_WORDS:
            text = str(BOOLEAN_WORDS[text])
        items.append((key, text, where))
    return items


def load_config(argv, defaults=DEFAULTS, extra_keys=None, doc=None, rules=None):
    """argv: config files and --key=value items, applied left to right. Returns a dict with every key.
    extra_keys: a script's own keys and defaults (e.g. schedule.py's --format), merged into the known keys.
    doc: what -h/--help prints (the script's docstring). rules: key -> rule (check_rules), checked at the end."""
    known = dict(defaults)
    known.update(extra_keys or {})
    print_help_if_asked(argv, (doc or __doc__) + "\nEvery key is documented in config/default.py.", extra_keys)
    config = dict(known)
    for key, text, where in split_argv(argv, known):  # files and options apply left to right
        if key is None:
            for key, value in read_config_file(text).items():
                config[key] = check_value(key, value, f"config file {text}", known)
        else:
            config[key] = check_value(key, parse_value(text), where, known)
    check_rules(config, rules or {})
    return config


def parse_options(argv, options, positional=(), usage='', rules=None, aliases=None, doc=''):
    """A script's own command line (plot.py, efficiency.py, sample.py, ...): `positional` names the arguments
    that come first, in order (a name ending in '?' may be left out: it is then ''); then options typed like their
    defaults in `options` and checked by `rules` (check_rules); aliases: another name -> an option's name.
    usage: the one line a wrong argument count prints; doc: what -h/--help prints. Returns a dict of both."""
    aliases = aliases or {}
    print_help_if_asked(argv, doc, options, usage)
    known = dict(options, **{alias: options[name] for alias, name in aliases.items()})

    def unknown(key, arg):
        close = difflib.get_close_matches(key, known, n=1)
        hint = (f"did you mean --{close[0]}?" if close else
                "options: --" + ", --".join(options) if options else "this script takes no options")
        return UserError(f"unknown option --{key} ({hint})")
    items = split_argv(argv, known, unknown)
    values = [text for key, text, _ in items if key is None]
    needed = [p for p in positional if not p.endswith('?')]
    if not len(needed) <= len(values) <= len(positional):
        raise UserError(f"usage: {usage}" if usage else f"expected {len(positional)} argument(s) "
                        f"({', '.join(positional)}), got {len(values)}: {' '.join(values)}")
    result = dict(options)
    for key, text, where in items:
        if key is None:
            continue
        if key not in known:
            raise unknown(key, f'--{key}')
        value = text if isinstance(known[key], str) else parse_value(text)  # a string option keeps its text
        result[aliases.get(key, key)] = check_value(key, value, where, known)
    names = [p.rstrip('?') for p in positional]
    result.update({name: values[i] if i < len(values) else '' for i, name in enumerate(names)})
    for key, rule in (rules or {}).items():
        check_rule(f'--{key}' if key in options else key, result[key], rule)
    return result


# ---------------------------------------------------------------------------------------------------------------
# Rules: what a key's value must be, beyond its type. Declared in a table beside the keys (train.RULES for
# config/default.py's keys, each script's RULES for its options) and checked by check_rules, for every script the
# same one-line errors: "KEY=VALUE must be WHAT", or for paths what the path is instead.
# ---------------------------------------------------------------------------------------------------------------

NUMBER_RULES = {  # rule -> its test; the rule is also the message's words. NaN fails every test.
    'at least 1': lambda v: v >= 1,
    '0 or more': lambda v: 0 <= v < math.inf,
    '-1 or more': lambda v: -1 <= v < math.inf,
    'a positive number': lambda v: 0 < v < math.inf,
    'in [0, 1)': lambda v: 0 <= v < 1,
    'a number between 0 and 1': lambda v: 0 <= v <= 1,
    'a whole number from 0 to 2**64 - 1': lambda v: isinstance(v, int) and 0 <= v < 2**64,  # torch.manual_seed's
}
PATH_RULES = ('an existing file', 'an existing directory', 'an output file', 'an output directory', 'a checkpoint',
              'a checkpoint or a model directory')  # a checkpoint's own script says when it does not exist


def words(choices):
    """('a', 'b', 'c') -> "'a', 'b' or 'c'"."""
    quoted = [repr(c) for c in choices]
    return quoted[0] if len(quoted) == 1 else ', '.join(quoted[:-1]) + ' or ' + quoted[-1]


def check_rules(config, rules, prefix=''):
    """Raise UserError for the first value of config that breaks its rule (a NUMBER_RULES name, a tuple of the
    allowed values, 'a torch device', 'GPU indices', one of PATH_RULES ('' passes every path rule: not given), or a
    function of the value that returns what it must be, or None when it is fine)."""
    for key, rule in rules.items():
        check_rule(prefix + key, config[key], rule)


def is_choice(value, choices):
    """value is one of choices, exactly: True is not 1 and 1 is not True (`1 in (True, False)` is True)."""
    return any(value is c or (type(value) is type(c) and value == c) for c in choices)


def check_rule(name, value, rule):
    if isinstance(rule, tuple):
        if not is_choice(value, rule):
            raise UserError(f"{name}={value!r} must be {words(rule)}")
    elif callable(rule):
        what = rule(value)
        if what is not None:
            raise UserError(f"{name}={value!r} must be {what}")
    elif rule in NUMBER_RULES:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not NUMBER_RULES[rule](value):
            finite = ' (a finite number)' if isinstance(value, float) and not math.isfinite(value) else ''
            raise UserError(f"{name}={value!r} must be {rule}{finite}")
    elif rule == 'a torch device':
        check_device(name, value)
    elif rule == 'GPU indices':
        if value and not all(g.strip().isdigit() for g in value.split(',')):
            raise UserError(f"{name}={value!r} must be GPU indices separated by commas, e.g. 0,1,2,3")
    elif rule in PATH_RULES:
        if value != '':
            check_path(name, value, rule)
    else:
        raise ValueError(f"unknown rule {rule!r} for {name}")


def check_device(name, device):
    """The device check of every script that takes --device: 'auto', 'cpu', 'cuda' or 'cuda:N', and a GPU only
    where torch sees one."""
    if device == 'auto':
        return
    import torch  # here: sweep.py and plot.py never need it
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        raise UserError(f"{name}={device!r} is not a torch device: use 'auto', 'cpu' or 'cuda'") from None
    if kind not in ('cpu', 'cuda'):
        raise UserError(f"{name}={device!r} is not a device this code runs on: use 'auto', 'cpu' or 'cuda'")
    if kind == 'cuda' and not torch.cuda.is_available():
        raise UserError(f"{name}={device!r} but no CUDA GPU is visible: use {name}='cpu' or 'auto'")
    index = torch.device(device).index
    if kind == 'cuda' and index is not None and index >= torch.cuda.device_count():
        raise UserError(f"{name}={device!r} but only {torch.cuda.device_count()} CUDA GPU(s) are visible")


def check_path(name, path, rule):
    """A path of the kind the rule names; what it is instead, in one line."""
    if rule == 'an existing file' and not os.path.exists(path):
        raise UserError(f"{name}={path!r} not found")
    if rule == 'an existing directory' and not os.path.isdir(path):
        raise UserError(f"{name}={path!r} " + ("is a file, not a directory" if os.path.exists(path) else
                                               "not found"))
    if rule == 'an existing file' and os.path.isdir(path):
        raise UserError(f"{name}={path!r} is a directory, not a file")
    if rule == 'a checkpoint' and not is_checkpoint(path):
        raise UserError(f"no checkpoint in {path} (no ckpt.pt or ckpt.dcp/)")
    if rule == 'a checkpoint or a model directory' and not is_checkpoint(path) and \
            not os.path.isfile(os.path.join(path, 'config.json')):
        raise UserError(f"no checkpoint in {path} (no ckpt.pt or ckpt.dcp/), and no config.json of a Hugging Face "
                        f"model directory either")
    if rule in ('an output file', 'an output directory'):
        if rule == 'an output file' and os.path.isdir(path):
            raise UserError(f"{name}={path!r} is a directory, not a file")
        if rule == 'an output directory' and os.path.exists(path) and not os.path.isdir(path):
            raise UserError(f"{name}={path!r} is a file, not a directory")
        parent = os.path.dirname(os.path.abspath(path))
        while not os.path.exists(parent):
            parent = os.path.dirname(parent)
        if not os.path.isdir(parent):
            raise UserError(f"{name}={path!r} cannot be made: {parent} is a file, not a directory")
        written = path if rule == 'an output directory' and os.path.isdir(path) else parent  # files go in atomically
        if not os.access(written, os.W_OK):
            raise UserError(f"{name}={path!r} cannot be written: {written} is not writable (read-only, or no "
                            f"permission)")


def is_inside(path, directory):
    """path is directory or lies in it, as the file system resolves both (./x, links)."""
    path, directory = os.path.realpath(path), os.path.realpath(directory)
    return os.path.commonpath([path, directory]) == directory


def is_checkpoint(path):
    """Whether a path a user names may be a checkpoint: a file (what it holds is checkpoint.py's to judge), missing
    (the script says so in its words), a sharded checkpoint directory or a run directory holding one (layout.py)."""
    return not os.path.isdir(path) or layout.is_sharded_checkpoint(path) or layout.latest(path) is not None
