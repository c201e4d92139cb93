"""The README and docs/ point only at things that exist: every relative link resolves (a file, or a heading of
the page it names), and every config/*.py they mention is in config/."""
import glob
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = [os.path.join(ROOT, 'README.md')] + sorted(glob.glob(os.path.join(ROOT, 'docs', '*.md')))
LINK = re.compile(r'\[[^\]]*\]\(([^)\s]+)\)')


def anchors(path):
    """GitHub's heading anchors: lower-cased, punctuation dropped, spaces to dashes."""
    out = set()
    for line in open(path, encoding='utf-8'):
        if line.startswith('#'):
            title = line.lstrip('#').strip().lower()
            out.add(re.sub(r'\s', '-', re.sub(r'[^\w\- ]', '', title)))
    return out


def test_every_relative_link_resolves():
    broken = []
    for page in PAGES:
        for target in LINK.findall(open(page, encoding='utf-8').read()):
            if re.match(r'[a-z]+://|mailto:', target):
                continue
            path, _, anchor = target.partition('#')
            resolved = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
            if not os.path.exists(resolved):
                broken.append(f"{os.path.relpath(page, ROOT)}: {target} (no such file)")
            elif anchor and resolved.endswith('.md') and anchor not in anchors(resolved):
                broken.append(f"{os.path.relpath(page, ROOT)}: {target} (no such heading)")
    assert not broken, '\n'.join(broken)


def test_every_config_named_exists():
    missing = []
    for page in PAGES:
        for name in sorted(set(re.findall(r'config/[\w./-]*?\.py', open(page, encoding='utf-8').read()))):
            if not os.path.isfile(os.path.join(ROOT, name)):
                missing.append(f"{os.path.relpath(page, ROOT)}: {name}")
    assert not missing, '\n'.join(missing)
