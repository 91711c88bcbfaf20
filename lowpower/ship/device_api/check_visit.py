"""The ``ast`` walk behind ``check``: imports, aliases, attribute chains, call keywords, guards.

Two passes over one module: the first records what each imported name stands for (a binding made
outside any guard wins over one inside ``try``), the second looks every use up. Scoping is
ignored on purpose: an import inside a function binds the name for the whole file, which errs
towards checking more.

Example:
    >>> Checker(index).check("import torch\\nif hasattr(torch, 'compile'):\\n    torch.compile(m)\\n")  # doctest: +SKIP
    [(3, 'torch.compile', 'guarded', "the device's torch 1.10.2 has no torch.compile (hasattr at line 2)")]
"""
import ast

from lowpower.ship.device_api.check_resolve import unknown_keywords, version, walk

ROOTS = ("torch", "torchvision", "numpy", "PIL", "imageio")
# An except clause naming one of these turns its try body into a feature test.
GUARD_EXCEPTIONS = {"AttributeError", "ImportError", "ModuleNotFoundError", "TypeError", "Exception",
                    "BaseException"}
# Calls in an if-test that make it a feature test: hasattr(X, 'n'), getattr(X, 'n', None),
# 'kw' in inspect.signature(f).parameters.
FEATURE_TESTS = {"hasattr", "getattr", "signature"}


def _catches(handler_type):
    """True when an except clause's type (None for a bare except) includes a guard exception."""
    if handler_type is None:
        return True
    if isinstance(handler_type, ast.Tuple):
        return any(_catches(item) for item in handler_type.elts)
    name = getattr(handler_type, "id", None) or getattr(handler_type, "attr", None)
    return name in GUARD_EXCEPTIONS


def _feature_test(test):
    """The line of the first feature-test call in an if/while/boolean test, or None."""
    for node in ast.walk(test):
        if isinstance(node, ast.Call):
            func = node.func
            name = getattr(func, "id", None) or getattr(func, "attr", None)
            if name in FEATURE_TESTS:
                return node.lineno
    return None


def _chain(node):
    """``a.b.c`` -> (Name a, ["b", "c"]); the base is whatever the chain hangs from."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    return node, parts[::-1]


class Checker(ast.NodeVisitor):
    """Collects ``(line, name, status, reason)`` for one module; see the module docstring.

    Args:
        index: the loaded device API index.
    """

    def __init__(self, index):
        self.index = index
        self.roots = set(index.get("packages") or ROOTS)
        self.aliases = {}  # local name -> (dotted target, guard reason or None)
        self.guard = None  # why the code being visited is guarded, or None
        self.collecting = True
        self.found = {}  # (line, name) -> (status, reason): one report per name and line

    def check(self, source):
        """Parse ``source`` and return the sorted findings (raises SyntaxError)."""
        tree = ast.parse(source)
        self.collecting = True
        self.visit(tree)
        self.collecting = False
        self.visit(tree)
        return sorted((line, name, status, reason) for (line, name), (status, reason) in self.found.items())

    # ------------------------------------------------------------------ reporting

    def _report(self, node, name, status, reason):
        if self.collecting:
            return
        if status == "missing" and self.guard:
            status, reason = "guarded", "{} ({})".format(reason, self.guard)
        key = (node.lineno, name)
        if key not in self.found or self.found[key][0] == "unverified":
            self.found[key] = (status, reason)

    def _use(self, dotted, node, alias=None):
        """Look ``dotted`` up and report it; returns the ``Walk``.

        alias: the local name the chain started from. A failure inside that name's own target
        was reported at its import; it is repeated here only when that import was guarded.
        """
        result = walk(self.index, dotted)
        if result.status == "ok":
            return result
        if alias is not None:
            target, import_guard = self.aliases[alias]
            if len(result.name.split(".")) <= len(target.split(".")):
                if import_guard and result.status == "missing":
                    self._report(node, result.name, "guarded", "{} ({}, where {} is imported)".format(
                        result.reason, import_guard, alias))
                return result
        self._report(node, result.name, result.status, result.reason)
        return result

    def _dotted(self, node):
        """(dotted name, alias) for a chain rooted at an imported name, else (None, None)."""
        base, parts = _chain(node)
        if isinstance(base, ast.Name) and base.id in self.aliases:
            return ".".join([self.aliases[base.id][0]] + parts), base.id
        return None, None

    def _guarded(self, reason, nodes):
        saved, self.guard = self.guard, self.guard or reason
        for node in nodes:
            self.visit(node)
        self.guard = saved

    # ------------------------------------------------------------------ imports

    def _bind(self, name, target):
        # A binding outside any guard (e.g. the fallback in an except) is what the device runs.
        if name not in self.aliases or not self.guard or self.aliases[name][1]:
            self.aliases[name] = (target, self.guard)

    def visit_Import(self, node):
        for item in node.names:
            root = item.name.split(".")[0]
            if root not in self.roots:
                continue
            if self.collecting:
                self._bind(item.asname or root, item.name if item.asname else root)
            else:
                self._use(item.name, node)

    def visit_ImportFrom(self, node):
        if node.level or not node.module or node.module.split(".")[0] not in self.roots:
            return
        for item in node.names:
            dotted = node.module if item.name == "*" else "{}.{}".format(node.module, item.name)
            if self.collecting and item.name != "*":
                self._bind(item.asname or item.name, dotted)
            elif not self.collecting:
                self._use(dotted, node)

    # ------------------------------------------------------------------ guards

    def visit_Try(self, node):
        caught = [handler for handler in node.handlers if _catches(handler.type)]
        if caught:
            self._guarded("try/except at line {}".format(caught[0].lineno), node.body)
        else:
            self._guarded(None, node.body)
        self._guarded(None, node.handlers + node.orelse + node.finalbody)

    visit_TryStar = visit_Try

    def visit_If(self, node):
        self.visit(node.test)
        line = _feature_test(node.test)
        reason = "feature test at line {}".format(line) if line else None
        self._guarded(reason, node.body + node.orelse)

    def visit_IfExp(self, node):
        self.visit(node.test)
        line = _feature_test(node.test)
        self._guarded("feature test at line {}".format(line) if line else None, [node.body, node.orelse])

    def visit_BoolOp(self, node):
        # `hasattr(torch, 'compile') and torch.compile(m)`: what follows the test is guarded by it.
        saved = self.guard
        for value in node.values:
            self.visit(value)
            line = _feature_test(value)
            if line and not self.guard:
                self.guard = "feature test at line {}".format(line)
        self.guard = saved

    # ------------------------------------------------------------------ uses

    def visit_Attribute(self, node):
        dotted, alias = self._dotted(node)
        if dotted is None:
            self.generic_visit(node)
            return
        if not isinstance(node.ctx, ast.Load):
            # Assigning a new module attribute works on any version: check only what it hangs from.
            dotted = dotted.rsplit(".", 1)[0]
        if not self.collecting:
            self._use(dotted, node, alias)

    def visit_Call(self, node):
        func = node.func
        if getattr(func, "id", None) == "getattr" and len(node.args) in (2, 3) \
                and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
            dotted, alias = self._dotted(node.args[0])
            if dotted is not None and not self.collecting:
                # getattr(X, 'name', default) is itself the fallback; without a default it is X.name.
                fallback = "getattr with a default at line {}".format(node.lineno) if len(node.args) == 3 else None
                saved, self.guard = self.guard, self.guard or fallback
                self._use("{}.{}".format(dotted, node.args[1].value), node, alias)
                self.guard = saved
            self.generic_visit(node)
            return
        dotted, alias = self._dotted(func)
        if dotted is None:
            self.generic_visit(node)
            return
        if not self.collecting:
            result = self._use(dotted, func, alias) if isinstance(func, ast.Attribute) else walk(self.index, dotted)
            if result.status == "ok" and result.complete:
                keywords = {keyword.arg: keyword for keyword in node.keywords if keyword.arg}  # **kw: unknown
                for keyword in unknown_keywords(result.entry, list(keywords)):
                    # The keyword's own line: in a call spread over lines, that is the line to edit.
                    self._report(keywords[keyword], "{}({}=)".format(dotted, keyword), "missing",
                                 "{} in the device's {} takes no keyword {}".format(
                                     dotted, version(self.index, dotted), keyword))
        for child in node.args + node.keywords:
            self.visit(child)
