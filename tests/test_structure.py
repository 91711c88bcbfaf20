"""The shape of lowpower/: packages by job, no import circles, imports at module level, one command.

The import walker reads the sources (ast), so it sees every import, including the ones no test runs.
"""
import ast
import contextlib
import functools
import io
import subprocess
import sys
from pathlib import Path

import pytest

from lowpower import cli

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lowpower"
PROJECT = ("lowpower", "networks", "solution", "evaluation")
# Words a comment must use to say which heavy dependency an import inside a function avoids.
HEAVY = ("torch", "torchvision", "onnx", "onnxruntime", "matplotlib", "cityscapesscripts", "tensorrt", "cv2",
         "torch_pruning", "tensorboard")


def module_files():
    """``{module name: path}`` of every module in lowpower/."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imported_modules(node, module, is_package, known):
    """The project modules one import statement needs: ``from pkg import sub`` needs ``pkg.sub`` only."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        anchor = module.split(".") if is_package else module.split(".")[:-1]
        anchor = anchor[:len(anchor) - (node.level - 1)]
        base = ".".join(anchor + ([node.module] if node.module else []))
    names = []
    for alias in node.names:
        candidate = base + "." + alias.name
        names.append(candidate if candidate in known else base)
    return names


@functools.lru_cache(maxsize=1)
def import_graph():
    """``{module: {project modules it imports}}`` and the imports placed inside functions."""
    files = module_files()
    graph, inner = {}, []
    for module, path in files.items():
        source = path.read_text()
        tree = ast.parse(source)
        lines = source.splitlines()
        graph[module] = set()
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for name in imported_modules(node, module, path.name == "__init__.py", files):
                    if name in files and name != module:
                        graph[module].add(name)
        for function in ast.walk(tree):
            if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(function):
                    if isinstance(node, (ast.Import, ast.ImportFrom)):
                        names = imported_modules(node, module, path.name == "__init__.py", files)
                        if any(name.split(".")[0] in PROJECT for name in names):
                            comment = lines[node.lineno - 1] + " " + lines[node.lineno - 2]
                            inner.append((path.relative_to(ROOT), node.lineno, comment))
    return graph, inner


def cycles(graph):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_walker_finds_a_circle_and_an_unexplained_inner_import():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    tree = ast.parse("from lowpower.data import synthetic\nfrom lowpower import nothing_here\n")
    known = {"lowpower.data.synthetic": None, "lowpower": None}
    assert imported_modules(tree.body[0], "x", False, known) == ["lowpower.data.synthetic"]
    assert imported_modules(tree.body[1], "x", False, known) == ["lowpower"]


def test_no_import_circle_among_the_projects_modules():
    graph, _ = import_graph()
    assert len(graph) > 50  # the walker read the package
    assert cycles(graph) == []


def test_project_imports_inside_functions_name_the_heavy_dependency_they_avoid():
    _, inner = import_graph()
    unexplained = ["%s:%d" % (path, line) for path, line, text in inner
                   if "#" not in text or not any(word in text.split("#", 1)[1] for word in HEAVY)]
    assert unexplained == []


def test_at_most_six_modules_sit_directly_in_lowpower_and_every_package_says_what_it_owns():
    top = sorted(path.name for path in PACKAGE.glob("*.py"))
    assert len(top) <= 6, top
    for init in PACKAGE.rglob("__init__.py"):
        tree = ast.parse(init.read_text())
        docstring = ast.get_docstring(tree)
        assert docstring and len(docstring.split()) >= 8, "%s needs a docstring saying what it owns" % init


def test_help_lists_every_command_once():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["--help"]) == 0
    text = out.getvalue()
    for words in cli.TABLE:
        rows = [line.split() for line in text.splitlines() if line.startswith("  ")]
        assert sum(row[:len(words.split())] == words.split() for row in rows) == 1, words
    assert len(cli.TABLE) >= 24


@pytest.mark.parametrize("words", sorted(cli.TABLE))
def test_every_commands_help_exits_0_and_names_the_command(words):
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        cli.main(words.split() + ["--help"])
    assert exit_info.value.code == 0
    usage = out.getvalue().splitlines()[0]
    assert usage.startswith("usage: "), usage
    if words not in ("train", "test"):  # those two are also ./train.py and ./test.py, and say so
        assert ("lowpower " + words) in usage


def test_unknown_commands_and_groups_fail_with_the_list():
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        assert cli.main(["no-such-command"]) == 2
    assert "lowpower --help" in err.getvalue()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["bench", "--help"]) == 0
        assert cli.main(["bench"]) == 2
    assert "bench sweep" in out.getvalue() and "quantize ptq" not in out.getvalue()


def test_python_dash_m_lowpower_is_the_same_program():
    done = subprocess.run([sys.executable, "-m", "lowpower", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0
    assert "quantize qat-convert" in done.stdout and "device-api check" in done.stdout
