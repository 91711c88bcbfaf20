"""Read one module's source with `ast` into raw, unresolved binding operations.

`extract(source, modname, is_package)` returns {"ops": [...], "all": [...] | None, "classes": {...}}:
- ops, in source order (both branches of every if/try, since either may run on the device):
  ("def", name, function entry), ("class", name, qualified name), ("attr", name),
  ("alias", name, "dotted.expr"), ("import", name, module), ("from", name, module, attr),
  ("star", module), ("del", name);
- all: the literal `__all__` (built by =, +=, .append, .extend), None when absent or not literal;
- classes: qualified name -> {"bases": [dotted | None], "ops": [...], "mod": modname}.
Function entries carry "_fwd" ([module, callee] pairs their **kwargs go to) and "_keys" (keys read from
**kwargs); index_resolve uses and removes them.

Example:
    >>> extract("def f(a, *, b=1, **kw): pass", "m", False)["ops"][0][2]["params"]
    ['a', 'b']
"""
import ast

_KW_METHODS = {"pop", "get", "setdefault"}


def dotted(node):
    """'a.b.c' for a Name/Attribute chain (a Subscript's value for Generic[T]), else None."""
    if isinstance(node, ast.Subscript):
        node = node.value
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id] + parts[::-1])
    return None


def _params(args):
    return [a.arg for a in getattr(args, "posonlyargs", [])] + \
        [a.arg for a in args.args] + [a.arg for a in args.kwonlyargs]


def _kwargs_use(fn, kw, modname):
    """(callees, keys) for a **kw parameter, or (None, keys) when kw is used in a way we cannot follow."""
    parents = {}
    for node in ast.walk(fn):
        for child in ast.iter_child_nodes(node):
            parents[child] = node
    callees, keys, opaque = [], [], False
    for node in ast.walk(fn):
        if not (isinstance(node, ast.Name) and node.id == kw):
            continue
        up = parents.get(node)
        if isinstance(up, ast.keyword) and up.arg is None:
            call = parents.get(up)
            name = dotted(call.func) if isinstance(call, ast.Call) else None
            callees.append([modname, name])  # name None: unknown callee, so any keyword may pass
        elif isinstance(up, ast.Attribute) and up.attr in _KW_METHODS:
            call = parents.get(up)
            if isinstance(call, ast.Call) and call.args and isinstance(call.args[0], ast.Constant):
                keys.append(str(call.args[0].value))
            else:
                opaque = True
        elif isinstance(up, ast.Subscript) and up.value is node:
            if isinstance(up.slice, ast.Constant):
                keys.append(str(up.slice.value))
        elif isinstance(up, ast.Compare) and isinstance(up.left, ast.Constant):
            keys.append(str(up.left.value))
        else:
            opaque = True
    return (None if opaque else callees), keys


def function_entry(fn, modname):
    """The entry of a def: every parameter name, varkw, and where its **kwargs go."""
    entry = {"kind": "function", "params": _params(fn.args), "varkw": fn.args.kwarg is not None,
             "_fwd": None, "_keys": []}
    if fn.args.kwarg is not None:
        entry["_fwd"], entry["_keys"] = _kwargs_use(fn, fn.args.kwarg.arg, modname)
    return entry


def _strings(node):
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.Dict):
        node = ast.Tuple(elts=node.keys)
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
    return []


def getattr_names(fn):
    """The names a module-level `def __getattr__(name)` compares `name` with (PIL.Image's deprecated
    PILLOW_VERSION and categories): those exist; any other name raises AttributeError."""
    if not fn.args.args:
        return []
    param, local, names = fn.args.args[0].arg, {}, []
    for node in ast.walk(fn):
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            local[node.targets[0].id] = _strings(node.value)
    for node in ast.walk(fn):
        if isinstance(node, ast.Compare) and isinstance(node.left, ast.Name) and node.left.id == param:
            for comp in node.comparators:
                names += local.get(comp.id, []) if isinstance(comp, ast.Name) else _strings(comp)
    return names


def _all_literal(value):
    if isinstance(value, (ast.List, ast.Tuple)) and all(
            isinstance(e, ast.Constant) and isinstance(e.value, str) for e in value.elts):
        return [e.value for e in value.elts]
    return None


class _Reader:
    def __init__(self, modname, is_package):
        self.mod = modname
        self.package = modname if is_package else modname.rpartition(".")[0]
        self.classes = {}
        self.all = None
        self.all_dynamic = False
        self.all_edits = 0

    def absolute(self, module, level):
        if not level:
            return module
        base = self.package.split(".")
        base = base[:len(base) - (level - 1)] if level > 1 else base
        return ".".join(base + ([module] if module else []))

    def body(self, stmts, ops, qual):
        for st in stmts:
            self.stmt(st, ops, qual)

    def _all_op(self, st):
        """Track `__all__` edits; True when the statement was one."""
        if isinstance(st, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__"
                                              for t in st.targets):
            names = _all_literal(st.value)
            self.all, self.all_dynamic = names, self.all_dynamic or names is None
        elif isinstance(st, ast.AugAssign) and isinstance(st.target, ast.Name) \
                and st.target.id == "__all__":
            names = _all_literal(st.value)
            self.all = (self.all or []) + (names or [])
            self.all_dynamic = self.all_dynamic or names is None
        elif isinstance(st, ast.Expr) and isinstance(st.value, ast.Call) \
                and dotted(st.value.func) in ("__all__.append", "__all__.extend"):
            arg = st.value.args[0] if st.value.args else None
            if dotted(st.value.func).endswith("append"):
                names = [arg.value] if isinstance(arg, ast.Constant) else None
            else:
                names = _all_literal(arg)
            self.all = (self.all or []) + (names or [])
            self.all_dynamic = self.all_dynamic or names is None
        else:
            return False
        self.all_edits += 1
        return True

    def stmt(self, st, ops, qual):
        if qual is None and self._all_op(st):
            return
        if isinstance(st, ast.FunctionDef) and qual is None and st.name == "__getattr__" \
                and getattr_names(st):
            ops.extend(("attr", name) for name in getattr_names(st))
        elif isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef)):
            decos = {dotted(d) for d in st.decorator_list}
            if decos & {"property", "cached_property", "functools.cached_property"} \
                    or any(d and d.endswith((".setter", ".getter", ".deleter")) for d in decos):
                ops.append(("attr", st.name))
            else:
                ops.append(("def", st.name, function_entry(st, self.mod)))
            if qual is not None:  # self.x = ... inside methods: instance attributes
                for node in ast.walk(st):
                    for t in getattr(node, "targets", [getattr(node, "target", None)]):
                        if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) \
                                and t.value.id == "self":
                            ops.append(("iattr", t.attr))
        elif isinstance(st, ast.ClassDef):
            cq = (qual or self.mod) + "." + st.name
            cops = []
            self.body(st.body, cops, cq)
            self.classes[cq] = {"bases": [dotted(b) for b in st.bases], "ops": cops, "mod": self.mod}
            ops.append(("class", st.name, cq))
        elif isinstance(st, ast.Import):
            for a in st.names:
                if a.asname:
                    ops.append(("import", a.asname, a.name))
                else:
                    top = a.name.split(".")[0]
                    ops.append(("import", top, top))
        elif isinstance(st, ast.ImportFrom):
            module = self.absolute(st.module, st.level)
            for a in st.names:
                if a.name == "*":
                    ops.append(("star", module))
                else:
                    ops.append(("from", a.asname or a.name, module, a.name))
        elif isinstance(st, (ast.Assign, ast.AnnAssign)):
            targets = st.targets if isinstance(st, ast.Assign) else [st.target]
            src = dotted(st.value) if st.value is not None else None
            for t in targets:
                for name in self._names(t):
                    ops.append(("alias", name, src) if src else ("attr", name))
        elif isinstance(st, ast.AugAssign):
            for name in self._names(st.target):
                ops.append(("attr", name))
        elif isinstance(st, ast.Delete):
            for t in st.targets:
                if isinstance(t, ast.Name):
                    ops.append(("del", t.id))
        elif isinstance(st, (ast.If, ast.For, ast.While, ast.With, ast.AsyncWith, ast.AsyncFor)):
            self.body(st.body, ops, qual)
            self.body(getattr(st, "orelse", []), ops, qual)
        elif isinstance(st, ast.Try):
            self.body(st.body, ops, qual)
            for h in st.handlers:
                self.body(h.body, ops, qual)
            self.body(st.orelse, ops, qual)
            self.body(st.finalbody, ops, qual)

    @staticmethod
    def _names(t):
        if isinstance(t, ast.Name):
            return [t.id]
        if isinstance(t, (ast.Tuple, ast.List)):
            return [n for e in t.elts for n in _Reader._names(e)]
        if isinstance(t, ast.Starred):
            return _Reader._names(t.value)
        return []


def extract(source, modname, is_package):
    """Raw binding operations of one module (see the module docstring).

    Args:
        source: the module's text (.py or .pyi).
        modname: its dotted name, e.g. "torch.nn.functional".
        is_package: True for an __init__ file (relative imports start from the module itself).
    Raises:
        SyntaxError: the source does not parse under this Python.
    """
    reader = _Reader(modname, is_package)
    ops = []
    tree = ast.parse(source)
    reader.body(tree.body, ops, None)
    # __all__ touched anywhere else (numpy's extend_all() appends to it in a function) cannot be
    # followed: then a star import takes every public name, as too many beats too few here.
    uses = sum(isinstance(n, ast.Name) and n.id == "__all__" for n in ast.walk(tree))
    dynamic = reader.all_dynamic or uses > reader.all_edits
    return {"ops": ops, "all": None if dynamic else reader.all, "classes": reader.classes}
