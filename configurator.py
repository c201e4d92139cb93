"""
The tiny configurator, nanoGPT-style: config files are plain Python assignments, executed in order, then
`--key=value` overrides. Every key must exist in config/default.py (which documents them all); a value must have
the type of its default. Usage from a script:

    config = load_config(sys.argv[1:])        # dict of every key

User mistakes raise UserError; scripts wrap main() in `run_main(main)`, which prints the one-line message and exits
with status 2 instead of a traceback.
"""
import ast
import difflib
import os
import sys

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULTS_FILE = os.path.join(ROOT, 'config', 'default.py')


class UserError(Exception):
    """A mistake the user can fix (bad key, bad value, missing file). Printed as one line, exit status 2."""


def run_main(main, argv=None, interrupted='interrupted'):
    """Run main(argv) (default: sys.argv[1:]); a UserError becomes 'error: <message>' on stderr and exit status
    2, with no traceback; Ctrl-C prints `interrupted` and exits with 130. Every script of the project (prepare/
    included) ends with it."""
    try:
        main(sys.argv[1:] if argv is None else argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        sys.exit(130)


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
        raise UserError(f"config file {path} not found")
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
    except Exception as e:  # a config file is user input: report where it broke, briefly
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
    if default is None or value is None:
        return value  # keys that default to None take a number or None; their own checks live where they are used
    if key == 'pad_vocab' and not (value == 'auto' or isinstance(value, bool)):
        raise UserError(f"config key 'pad_vocab' in {where} must be 'auto', True or False, got {value!r}")
    if key in ('compile', 'pad_vocab'):  # 'auto' or a bool
        ok = value == 'auto' or isinstance(value, bool)
    elif key == 'activation_checkpointing':  # a mode's name, or an older bool (train.check_config judges it)
        ok = isinstance(value, (str, bool))
    elif isinstance(default, bool) or isinstance(value, bool):
        ok = isinstance(value, bool) and isinstance(default, bool)
    elif isinstance(default, float):
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


def load_config(argv, defaults=DEFAULTS, extra_keys=None):
    """argv: config files and --key=value items, applied left to right. Returns a dict with every key.
    extra_keys: a script's own keys and defaults (e.g. schedule.py's --format), merged into the known keys."""
    known = dict(defaults)
    known.update(extra_keys or {})
    config = dict(known)
    for arg in argv:
        if arg.startswith('--'):
            if '=' not in arg:
                raise UserError(f"argument {arg} must look like --key=value")
            key, text = arg[2:].split('=', 1)
            config[key] = check_value(key, parse_value(text), f"argument {arg}", known)
        else:
            for key, value in read_config_file(arg).items():
                config[key] = check_value(key, value, f"config file {arg}", known)
    return config


def parse_options(argv, options, positional=(), usage=''):
    """A script's own command line (plot.py, efficiency.py, sample.py, ...): `positional` names the arguments
    that come first, in order; then --key=value options typed like their defaults in `options`; a bare --key sets
    a boolean option to True. Returns a dict of both."""
    values = [a for a in argv if not a.startswith('--')]
    if len(values) != len(positional):
        raise UserError(f"usage: {usage}" if usage else f"expected {len(positional)} argument(s) "
                        f"({', '.join(positional)}), got {len(values)}: {' '.join(values)}")
    flags = [f'{a}=True' if '=' not in a and isinstance(options.get(a[2:]), bool) else a
             for a in argv if a.startswith('--')]
    return dict(load_config(flags, defaults=options), **dict(zip(positional, values)))
