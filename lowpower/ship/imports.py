"""What an import is, and the import statements of a source.

``Import`` is one imported module (an ``import`` statement, or an import written as code that
``lowpower.ship.imports_as_code`` resolved); ``DynamicImport`` is an import written as code whose
target the source does not show; ``Scan`` is what a folder holds. ``scan_statements`` reads the
``import``/``from ... import`` statements of a parsed module; the whole scan of a file or a package
(statements plus imports written as code) is ``lowpower.ship.pyz.scan_source``/``scan_folder``.

Example:
    >>> import ast
    >>> [str(item) for item in scan_statements(ast.parse("import os\\nfrom .blocks import conv\\n"), "m.py")]
    ['m.py:1 os', 'm.py:2 .blocks']
"""
import ast
from dataclasses import dataclass, field

# What an except clause must name for the import above it to be optional.
CATCHES_IMPORT_ERROR = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}


@dataclass(frozen=True)
class Import:
    """One imported module: ``from .blocks import conv`` is module ``blocks``, level 1, names ``("conv",)``.

    Example:
        >>> item = Import("m.py", 3, "timm.models", dynamic=True)
        >>> item.top, str(item)
        ('timm', 'm.py:3 timm.models')
    """
    file: str
    line: int
    module: str
    names: tuple = ()
    level: int = 0
    guarded: bool = False  # in the body of a try whose handler catches ImportError
    dynamic: bool = False  # written as code: exec("import x"), importlib.import_module("x") and the like

    @property
    def top(self):
        return self.module.split(".")[0]

    def __str__(self):
        return "{}:{} {}".format(self.file, self.line, "." * self.level + self.module)


@dataclass(frozen=True)
class DynamicImport:
    """An import written as code whose target the source does not show, e.g. ``import_module("ti" + "mm")``.

    Example:
        >>> str(DynamicImport("m.py", 2, "__import__(name)", "the module name is computed at run time"))
        'm.py:2 __import__(name)'
    """
    file: str
    line: int
    call: str
    reason: str

    def __str__(self):
        return "{}:{} {}".format(self.file, self.line, self.call)


@dataclass
class Scan:
    """What ``lowpower.ship.pyz.scan_folder`` found: the files, their imports (statements and the ones
    written as code it resolved), the dynamic imports it could not resolve, and the files that do not
    parse (``"file: message"``)."""
    files: list = field(default_factory=list)
    imports: list = field(default_factory=list)
    dynamic: list = field(default_factory=list)
    unparsable: list = field(default_factory=list)


def parent_map(tree):
    """``{child: parent}`` for every node of ``tree``.

    Example:
        >>> tree = ast.parse("import os")
        >>> parent_map(tree)[tree.body[0]] is tree
        True
    """
    return {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}


def _catches_import_error(handler):
    if handler.type is None:  # a bare except catches it too
        return True
    caught = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
    return bool({getattr(item, "id", getattr(item, "attr", "")) for item in caught} & CATCHES_IMPORT_ERROR)


def guarded(node, parents):
    """True when ``node`` sits in the body of a ``try`` whose handlers catch ImportError.

    Only the body counts: an import in the handler, ``else`` or ``finally`` has no fallback.

    Args:
        node: an ``ast`` node.
        parents: ``{child: parent}`` for the whole tree (see ``parent_map``).

    Example:
        >>> tree = ast.parse("try:\\n    import yaml\\nexcept ImportError:\\n    yaml = None\\n")
        >>> guarded(tree.body[0].body[0], parent_map(tree))
        True
    """
    child = node
    while child in parents:
        parent = parents[child]
        if isinstance(parent, ast.Try) and any(child is statement for statement in parent.body):
            if any(_catches_import_error(handler) for handler in parent.handlers):
                return True
        child = parent
    return False


def statement_imports(node, filename, guard, line=None, dynamic=False):
    """The ``Import`` items of one ``import``/``from ... import`` statement.

    Args:
        node: an ``ast.Import`` or ``ast.ImportFrom``.
        filename: the name the items carry.
        guard: whether the statement is guarded by ``try/except ImportError``.
        line: the line the items carry (an import inside an ``exec`` string: the ``exec``'s); None:
            the statement's own.
        dynamic: the statement is written as code (inside a string that ``exec`` runs).

    Example:
        >>> node = ast.parse("from .blocks import conv, norm").body[0]
        >>> item, = statement_imports(node, "m.py", False)
        >>> item.module, item.level, item.names
        ('blocks', 1, ('conv', 'norm'))
    """
    line = node.lineno if line is None else line
    if isinstance(node, ast.Import):
        return [Import(filename, line, alias.name, guarded=guard, dynamic=dynamic) for alias in node.names]
    return [Import(filename, line, node.module or "", tuple(alias.name for alias in node.names), node.level,
                   guard, dynamic)]


def scan_statements(tree, filename="<source>"):
    """Every ``import``/``from ... import`` statement of a parsed module, in file order.

    Args:
        tree: the parsed module.
        filename: the name the items carry.

    Example:
        >>> source = "try:\\n    import yaml\\nexcept ImportError:\\n    pass\\n"
        >>> [(item.module, item.guarded) for item in scan_statements(ast.parse(source))]
        [('yaml', True)]
    """
    parents = parent_map(tree)
    found = [item for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
             for item in statement_imports(node, filename, guarded(node, parents))]
    return sorted(found, key=in_file_order)


def in_file_order(item):
    """Sort key of an ``Import``/``DynamicImport``: ``ast.walk`` is breadth-first, reports read in file order."""
    return item.line, str(item)
