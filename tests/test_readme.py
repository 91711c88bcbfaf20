"""README.md is a short guide, and every command and link in it and in docs/ is real.

README.md holds the workflow and the commands (at most 300 lines); docs/*.md hold the rest. Every
``lowpower ...`` command shown in them (in a fenced code block or inline code) must name a command of
``lowpower.cli.TABLE``; no page or config names the old ``python -m lowpower.X`` form; every relative
link in them points at a file that exists (and at a heading that exists, when it names one).
"""
import re
from pathlib import Path

import pytest

from lowpower.cli import TABLE

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README] + DOCS
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))
MAX_README_LINES = 300

GROUPS = {words.split()[0] for words in TABLE if " " in words}  # data, quantize, device-api, bench
FENCE = re.compile(r"^\s*(```|~~~)")
INLINE = re.compile(r"(`+)(.+?)\1")
# `lowpower` where a command starts: the start of the code (after an optional "$ "), after && ; | $( or
# "same as:", or after -m (python -m lowpower). Not lowpower/ (the folder) or lowpower.x (a module).
COMMAND = re.compile(r"(?:^\s*(?:\$\s+)?|&&\s*|;\s*|\|\s*|\$\(\s*|:\s+|-m\s+)lowpower(?![\w./-])(.*)")
DOTTED = re.compile(r"-m\s+lowpower\.")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def rel(path):
    return str(Path(path).relative_to(ROOT))


def code_of(text):
    """The code shown in Markdown ``text``: each line of a fenced block, and each inline code span
    (a span may wrap over lines inside its paragraph)."""
    code, prose, in_block = [], [], False
    for line in text.splitlines():
        if FENCE.match(line):
            in_block = not in_block
            continue
        (code if in_block else prose).append(line)
    for paragraph in "\n".join(prose).split("\n\n"):
        code += [span.group(2) for span in INLINE.finditer(paragraph.replace("\n", " "))]
    return code


def commands_in(text):
    """Every ``lowpower`` command line shown in ``text``, as the words after ``lowpower``."""
    found = []
    for code in code_of(text):
        for match in COMMAND.finditer(code):
            found.append(match.group(1).split("#")[0].split())
    return found


def known(tokens):
    """Whether ``lowpower TOKENS`` names a command: its first one or two words are a key of TABLE,
    or a group (``bench``) stands alone; bare ``lowpower``, options and placeholders pass."""
    if not tokens or tokens[0][0] in "-<[":
        return True
    if " ".join(tokens[:2]) in TABLE or tokens[0] in TABLE:
        return True
    return tokens[0] in GROUPS and (len(tokens) == 1 or tokens[1][0] in "-<[")


def slug(heading):
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors_of(text):
    seen, anchors, in_block = {}, set(), False
    for line in text.splitlines():
        if FENCE.match(line):
            in_block = not in_block
        elif not in_block and re.match(r"#{1,6} ", line):
            base = slug(line.lstrip("#"))
            anchors.add(base if base not in seen else "%s-%d" % (base, seen[base]))
            seen[base] = seen.get(base, 0) + 1
    return anchors


def broken_links(page):
    """The relative links of ``page`` whose file, or heading, does not exist."""
    text = page.read_text()
    bad = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.is_file():
            bad.append(target)
        elif anchor and file.suffix == ".md" and anchor not in anchors_of(file.read_text()):
            bad.append(target)
    return bad


# ---- the checks on the real files


def test_readme_is_a_short_guide():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, "README.md has %d lines; move detail to docs/" % len(lines)


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_every_command_shown_exists(page):
    unknown = [" ".join(["lowpower"] + tokens) for tokens in commands_in(page.read_text()) if not known(tokens)]
    assert not unknown, "%s shows commands lowpower.cli does not have: %s" % (rel(page), unknown)


def test_the_pages_show_commands_at_all():
    # the extraction must find what is there, or the test above passes on nothing
    assert len(commands_in(README.read_text())) >= 20
    assert sum(len(commands_in(page.read_text())) for page in DOCS) >= 20


def test_readme_lists_every_command():
    shown = {" ".join(tokens[:2]) for tokens in commands_in(README.read_text())}
    shown |= {tokens[0] for tokens in commands_in(README.read_text()) if tokens}
    missing = sorted(words for words in TABLE if words not in shown)
    assert not missing, "README.md's command table lacks: %s" % missing


@pytest.mark.parametrize("path", PAGES + CONFIGS, ids=rel)
def test_no_old_module_commands(path):
    hits = [line.strip() for line in path.read_text().splitlines() if DOTTED.search(line)]
    assert not hits, "%s still runs python -m lowpower.X (use the lowpower command): %s" % (rel(path), hits)


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_relative_links_resolve(page):
    assert not broken_links(page), "%s links to missing files or headings: %s" % (rel(page), broken_links(page))


def test_readme_links_to_every_docs_page():
    text = README.read_text()
    assert DOCS and all("docs/%s" % page.name in text for page in DOCS)


# ---- the checkers themselves catch what they should


@pytest.mark.parametrize("text", [
    "```\nlowpower quantize convert runs/x/last.pt\n```",
    "Run `lowpower frobnicate x`.",
    "```\n$ lowpower bench nope --images d\n```",
    "see `lowpower bench\nsweeps CKPT` here",
    "`make && lowpower train-all`",
    "`python -m lowpower quantise ptq x.pt`",
])
def test_unknown_commands_are_caught(text):
    assert not all(known(tokens) for tokens in commands_in(text))


@pytest.mark.parametrize("text", [
    "```\nlowpower quantize qat-convert runs/x/last.pt -o y.pt   # note\n```",
    "`lowpower bench`, `lowpower --help`, `lowpower <command> [<subcommand>]`",
    "`python -m lowpower presubmit a.pyz`",
    "the `lowpower/` folder, `lowpower.cli.TABLE`, `conda activate lowpower`, cd lowpower",
    "```\n$ lowpower bench sweep runs/demo/best.pt --sizes 64,96\n```",
])
def test_known_commands_pass(text):
    assert all(known(tokens) for tokens in commands_in(text))


def test_dotted_module_form_is_caught():
    assert DOTTED.search("#   python -m lowpower.train.tester --checkpoint x")
    assert not DOTTED.search("python -m lowpower presubmit x.pyz")


def test_broken_links_are_caught(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# Title\n\n## Some section: here\n")
    page = tmp_path / "README.md"
    page.write_text("[ok](docs/a.md) [ok](docs/a.md#some-section-here) [self](#top)\n# Top\n"
                    "[gone](docs/b.md) [bad anchor](docs/a.md#nowhere) [web](https://example.org/x)\n")
    assert broken_links(page) == ["docs/b.md", "docs/a.md#nowhere"]
