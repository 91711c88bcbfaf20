"""Imports written as code: exec, eval, compile, __import__, importlib, runpy. The one home of that rule.

An ``import`` statement is read by ``lowpower.ship.imports.scan_statements``. The same import can be
written so that no ``import`` statement shows it: ``exec("import tensorflow")``,
``eval("__import__('x')")``, ``getattr(importlib, "import_module")("x")``, an alias
(``im = importlib.import_module; im("x")``, ``from importlib import import_module as f``), or a
look-up in the builtins (``__builtins__["__import__"]``, ``__builtins__.__import__``,
``builtins.__import__``). This module follows those forms:

- a call whose function resolves to ``__import__``/``import_module``/``run_module`` with a constant
  module name is an import of that module (``Import`` with ``dynamic=True``): the caller judges it
  as it judges an ``import`` statement, so a package the device lacks is a FAIL;
- ``exec``/``eval``/``compile`` of a constant string: the string is parsed and its imports (and
  imports written as code inside it) are taken, at the line of the call;
- what it cannot resolve is a ``DynamicImport`` (a WARN with file:line): a computed module name or
  code string, a string that does not parse, ``getattr``/``[...]`` with a computed name on importlib
  or the builtins, an import function or importlib passed on as a value, code loaded from a file
  path or a module spec, and the strings ``"__import__"``, ``"import_module"`` and ``"__builtins__"``
  used where it cannot follow them.

``model.eval()`` and ``re.compile(...)`` are not these: ``exec``/``eval``/``compile`` count only as
the builtins (a bare name, or an attribute of ``builtins``/``__builtins__``). The packager's walk of
a model's imports and presubmit take both kinds from ``lowpower.ship.pyz.scan_source``/``scan_folder``.

Example:
    >>> source = "import importlib\\nexec('import tensorflow')\\nf = getattr(importlib, name)\\n"
    >>> imports, dynamic = scan_as_code(ast.parse(source), "m.py")
    >>> [str(item) for item in imports], [str(item) for item in dynamic]
    (['m.py:2 tensorflow'], ['m.py:3 getattr(importlib, name)'])
"""
import ast
from collections import namedtuple

from lowpower.ship.imports import DynamicImport, Import, guarded, in_file_order, parent_map, statement_imports

# Calls that import a module named by their first argument: a constant name can be checked.
IMPORT_BY_NAME = {"import_module", "__import__", "run_module"}
# Calls that load code from a file path: inside a zip there is no such file, so always worth a look.
LOAD_FROM_PATH = {"spec_from_file_location", "spec_from_loader", "SourceFileLoader", "SourcelessFileLoader",
                  "ExtensionFileLoader", "load_source", "load_compiled", "load_dynamic", "load_module",
                  "run_path"}
# Modules whose attributes import or run code; __builtins__ is read as builtins.
WATCHED_MODULES = {"importlib", "importlib.util", "importlib.machinery", "builtins", "runpy", "imp"}
RUN_SOURCE = {"exec", "eval", "compile"}  # only as builtins: model.eval() and re.compile are not these
LOAD_UNSEEN = LOAD_FROM_PATH | {"module_from_spec", "exec_module"}  # the module comes from a spec or a path
# Attributes that are import functions whatever their receiver (sys.modules["builtins"].__import__ too).
ANY_RECEIVER = IMPORT_BY_NAME | LOAD_UNSEEN
FUNCTIONS = ANY_RECEIVER | RUN_SOURCE
BUILTIN_NAMES = RUN_SOURCE | {"__import__"}  # import functions a bare name means without an import
# A string naming one of these, where the check cannot follow it, hides an import from it.
TELLING_STRINGS = {"__import__", "import_module", "__builtins__"}
SHOWN_CALL = 70  # characters of a call quoted in a finding

Ref = namedtuple("Ref", "kind name")  # kind "module" (importlib, builtins ...) or "function" (import_module ...)
Unresolved = namedtuple("Unresolved", "reason")


def _constant(node, kinds=(str,)):
    """The value of a constant node of one of ``kinds``, else None."""
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, kinds) else None


def _argument(call, position, keyword):
    """The call's argument at ``position`` or passed as ``keyword``; None when absent."""
    if len(call.args) > position and not isinstance(call.args[position], ast.Starred):
        return call.args[position]
    return next((item.value for item in call.keywords if item.arg == keyword), None)


def _shown(node):
    text = ast.unparse(node)
    return text if len(text) <= SHOWN_CALL else text[:SHOWN_CALL - 3] + "..."


class _Reader:
    """One module's (or one code string's) imports written as code.

    Args:
        tree: the parsed module (or ``ast.Expression`` of an ``eval`` string).
        filename: the name findings carry.
        bindings: names already bound to modules and import functions (a code string run by
            ``exec`` sees the caller's); None: none.
        line: the line every finding carries (a code string's: the line of its ``exec``); None:
            each node's own.
        guard: the findings are guarded by ``try/except ImportError`` (the ``exec`` that runs it is).
    """

    def __init__(self, tree, filename, bindings=None, line=None, guard=False):
        self.tree, self.filename, self.line, self.guard = tree, filename, line, guard
        self.parents = parent_map(tree)
        self.bindings = dict(bindings or {})
        self.consumed = set()  # constant strings the resolution used (getattr names, subscript keys)
        self.imports, self.dynamic = [], []
        self._bind()

    # ------------------------------------------------------------------------- what names mean
    def _bind(self):
        """Names bound by imports and by plain assignments (``im = importlib.import_module``)."""
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in WATCHED_MODULES:
                        # import importlib.util binds importlib; import importlib.util as u binds u
                        bound = alias.name if alias.asname else alias.name.split(".")[0]
                        self.bindings[alias.asname or bound] = Ref("module", bound)
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module in WATCHED_MODULES:
                for alias in node.names:
                    if alias.name == "*":
                        self.bindings.update((name, Ref("function", name)) for name in FUNCTIONS)
                    else:
                        self.bindings[alias.asname or alias.name] = self._member(Ref("module", node.module),
                                                                                 alias.name)
        assignments = [node for node in ast.walk(self.tree) if isinstance(node, ast.Assign)
                       and all(isinstance(target, ast.Name) for target in node.targets)]
        for _ in range(len(assignments) + 1):  # chains of aliases: a = importlib; b = a.import_module
            changed = False
            for node in assignments:
                found = self.resolve(node.value)
                for target in node.targets:
                    if isinstance(found, Ref) and self.bindings.get(target.id) != found:
                        self.bindings[target.id], changed = found, True
            if not changed:
                break
        self.consumed.clear()  # the binding passes resolved nodes that the scan resolves again

    @staticmethod
    def _member(module, name):
        """What ``module.name`` is: a watched submodule, an import function, or None."""
        dotted = "{}.{}".format(module.name, name)
        if dotted in WATCHED_MODULES:
            return Ref("module", dotted)
        return Ref("function", name) if name in FUNCTIONS else None

    def resolve(self, node):
        """A ``Ref`` for an expression naming a watched module or an import function, an
        ``Unresolved`` for one that looks one up with a computed name, else None."""
        if isinstance(node, ast.Name):
            if node.id in self.bindings:
                return self.bindings[node.id]
            if node.id == "__builtins__":
                return Ref("module", "builtins")
            return Ref("function", node.id) if node.id in BUILTIN_NAMES else None
        if isinstance(node, ast.Attribute):
            if node.attr == "__dict__":  # builtins.__dict__["__import__"] is builtins.__import__
                base = self.resolve(node.value)
                return base if isinstance(base, Ref) and base.kind == "module" else None
            return self._attribute(self.resolve(node.value), node.attr, None)
        if isinstance(node, ast.Subscript):
            return self._attribute(self.resolve(node.value), _constant(node.slice), node.slice)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "vars"):
            if not node.args:
                return None
            base = self.resolve(node.args[0])
            if node.func.id == "vars":  # vars(builtins)["__import__"]
                return base if isinstance(base, Ref) and base.kind == "module" else None
            if len(node.args) < 2:
                return None
            return self._attribute(base, _constant(node.args[1]), node.args[1])
        return None

    def _attribute(self, base, name, name_node):
        """``base.name`` (or ``getattr(base, name)``/``base[name]``; ``name`` None when computed)."""
        watched = isinstance(base, Ref) and base.kind == "module"
        if name is None:
            if watched:
                return Unresolved("looks up {} with a computed name".format(base.name))
            return None
        if watched:
            found = self._member(base, name)
        else:  # any receiver: self.loader.exec_module, sys.modules["builtins"].__import__
            found = Ref("function", name) if name in ANY_RECEIVER else None
        if found is not None and name_node is not None:
            self.consumed.add(name_node)
        return found

    # ------------------------------------------------------------------------- the scan
    def _where(self, node):
        return self.line or node.lineno

    def warn(self, node, reason):
        self.dynamic.append(DynamicImport(self.filename, self._where(node), _shown(node), reason))

    def scan(self):
        """Fill ``imports`` and ``dynamic``; returns ``self``."""
        values = self._value_positions()
        for node in ast.walk(self.tree):
            if self.line is not None and isinstance(node, (ast.Import, ast.ImportFrom)):
                self._statement(node)  # an import inside a code string: no import statement shows it
            # a name or attribute being assigned is bound (see _bind), not used
            used = isinstance(node, ast.expr) and isinstance(getattr(node, "ctx", ast.Load()), ast.Load)
            found = self.resolve(node) if used else None
            if isinstance(found, Unresolved):
                self.warn(node, found.reason)
            elif isinstance(found, Ref) and node not in values:
                self.warn(node, "{} {} is passed on as a value, so what it imports cannot be seen".format(
                    "module" if found.kind == "module" else "import function", found.name))
            if isinstance(node, ast.Call):
                called = self.resolve(node.func)
                if isinstance(called, Ref) and called.kind == "function":
                    self._call(node, called.name)
        for node in ast.walk(self.tree):
            if _constant(node) in TELLING_STRINGS and node not in self.consumed:
                self.warn(node, "names {} in a string the check cannot follow".format(node.value))
        return self

    def _value_positions(self):
        """Nodes where a module or import function is used, not passed on: called, an attribute's or
        subscript's owner, getattr's/vars' first argument, an alias's value."""
        positions = set()
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Call):
                positions.add(node.func)
                if isinstance(node.func, ast.Name) and node.func.id in ("getattr", "vars", "hasattr") and node.args:
                    positions.add(node.args[0])
            elif isinstance(node, (ast.Attribute, ast.Subscript)):
                positions.add(node.value)
            elif isinstance(node, ast.Assign) and all(isinstance(target, ast.Name) for target in node.targets):
                positions.add(node.value)
        return positions

    def _guarded(self, node):
        return self.guard or guarded(node, self.parents)

    def _statement(self, node):
        self.imports += statement_imports(node, self.filename, self._guarded(node), self.line, dynamic=True)

    def _call(self, node, name):
        """One call of an import function: resolved into imports, or a warning saying why not."""
        if name in IMPORT_BY_NAME:
            target = _constant(_argument(node, 0, "mod_name" if name == "run_module" else "name"))
            if target is None:
                self.warn(node, "the module name is computed at run time")
                return
            stripped = target.lstrip(".")
            self.imports.append(Import(self.filename, self._where(node), stripped, level=len(target) - len(stripped),
                                       guarded=self._guarded(node), dynamic=True))
        elif name in RUN_SOURCE:
            self._run_source(node, name)
        else:
            self.warn(node, "loads code from a file path or a module spec, which the check cannot see "
                            "(inside the zip there is no such file on the device)")

    def _run_source(self, node, name):
        """``exec``/``eval``/``compile`` of a constant string: its imports are taken from its parse."""
        argument = _argument(node, 0, "source")
        source = _constant(argument, (str, bytes))
        if source is None:
            if name == "compile" or self._compiled_constant(argument):
                return  # compile(computed): what runs it warns; exec(compile("...")): read at the compile
            self.warn(node, "runs code built at run time, so its imports cannot be seen")
            return
        mode = {"exec": "exec", "eval": "eval"}.get(name) or _constant(_argument(node, 2, "mode")) or "exec"
        try:
            tree = ast.parse(source, mode=mode if mode in ("exec", "eval", "single") else "exec")
        except (SyntaxError, ValueError) as error:
            self.warn(node, "runs a string that does not parse ({}), so its imports cannot be seen".format(
                getattr(error, "msg", error)))
            return
        inner = _Reader(tree, self.filename, self.bindings, self._where(node), self._guarded(node)).scan()
        self.imports += inner.imports
        self.dynamic += inner.dynamic

    def _compiled_constant(self, node):
        """True for ``compile("constant", ...)``: the compile call's own scan reads the string."""
        if not isinstance(node, ast.Call):
            return False
        source = _constant(_argument(node, 0, "source"), (str, bytes))
        return self.resolve(node.func) == Ref("function", "compile") and source is not None


def scan_as_code(tree, filename="<source>"):
    """``(imports, dynamic)`` written as code in one parsed module.

    Args:
        tree: the parsed module (``ast.parse``).
        filename: the name findings carry.

    Returns:
        ``imports``: ``Import`` (``dynamic=True``) for each import the code makes by a resolvable
        name; ``dynamic``: ``DynamicImport`` for each use it cannot resolve. Both in line order.

    Example:
        >>> tree = ast.parse("im = importlib.import_module\\nim('yaml')\\nim(name)\\n")
        >>> imports, dynamic = scan_as_code(tree)
        >>> [str(item) for item in imports], [item.reason for item in dynamic]
        (['<source>:2 yaml'], ['the module name is computed at run time'])
    """
    reader = _Reader(tree, filename).scan()
    return sorted(set(reader.imports), key=in_file_order), sorted(set(reader.dynamic), key=in_file_order)
