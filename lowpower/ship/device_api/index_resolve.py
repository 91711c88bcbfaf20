"""Turn the raw ops of index_ast into resolved module namespaces and flattened classes.

Phases: (1) module namespaces, run twice so that names a circular import could not see the first time
are found the second; (2) classes, with the members of every base found in the index (an "open" class
has a base outside it, so unknown members may exist); (3) class and **kwargs signatures: a function
whose **kwargs only go on to known callables accepts their keywords and nothing more
(torchvision's resnet18(**kwargs) -> ResNet(...)), since passing an unknown one fails at run time.

Example:
    >>> r = Resolver({"m": extract("def f(a): pass", "m", False)})   # doctest: +SKIP
    >>> r.run()["modules"]["m"]["f"]["params"]                         # doctest: +SKIP
    ['a']
"""
from collections import defaultdict

ATTR = {"kind": "attribute"}
_PRIVATE = ("_fwd", "_keys")


def _union(a, b):
    """One function entry accepting what either accepts (overloads, .py + .pyi, if/else defs)."""
    fwd = []
    for e in (a, b):
        if e["varkw"]:
            fwd = None if (fwd is None or e.get("_fwd") is None) else fwd + e["_fwd"]
    params = list(a["params"]) + [p for p in b["params"] if p not in a["params"]]
    return {"kind": "function", "params": params, "varkw": a["varkw"] or b["varkw"],
            "_fwd": fwd, "_keys": a.get("_keys", []) + b.get("_keys", [])}


def _set(ns, name, entry):
    old = ns.get(name)
    if old is not None and old is not entry:
        if old["kind"] == "function" and entry["kind"] == "function":
            entry = _union(old, entry)
        elif entry["kind"] == "attribute" and old["kind"] != "attribute":
            return  # `x: Callable` in a stub, or a rebinding we cannot follow: keep what we know
    ns[name] = entry


class Resolver:
    """Resolve {module: raw} (from index_ast.extract, .py and .pyi ops concatenated) into the index."""

    def __init__(self, raw):
        self.raw = raw
        self.children = defaultdict(list)
        for mod in sorted(raw):
            if "." in mod:
                self.children[mod.rpartition(".")[0]].append(mod)
        self.class_raw = {q: c for r in raw.values() for q, c in r["classes"].items()}
        self.class_entries = {}
        self.ns, self.prev, self.done = {}, {}, set()
        self.members, self.open, self.memo = {}, set(), {}

    # ---- phase 1: namespaces
    def namespace(self, mod):
        if mod in self.ns:
            return self.ns[mod] if mod in self.done else self.prev.get(mod, self.ns[mod])
        ns = self.ns[mod] = {}
        for op in self.raw[mod]["ops"]:
            self.apply(ns, op, mod, None)
        for child in self.children[mod]:
            ns.setdefault(child.rpartition(".")[2], {"kind": "module", "target": child})
        self.done.add(mod)
        return ns

    def module_entry(self, mod):
        return {"kind": "module", "target": mod} if mod in self.raw else ATTR

    def class_entry(self, qual):
        return self.class_entries.setdefault(qual, {"kind": "class", "target": qual})

    def attr_of(self, mod, name):
        if mod in self.raw:
            ns = self.namespace(mod)
            if name in ns:
                return ns[name]
        return self.module_entry(mod + "." + name)

    def star(self, mod):
        if mod not in self.raw:
            return {}  # an extension module without a stub: its names cannot be known
        names = self.raw[mod]["all"]
        if names is not None:
            return {n: self.attr_of(mod, n) for n in names}
        return {n: e for n, e in self.namespace(mod).items() if not n.startswith("_")}

    def apply(self, ns, op, mod, scope):
        kind, name = op[0], op[1]
        if kind == "def":
            _set(ns, name, op[2])
        elif kind == "class":
            _set(ns, name, self.class_entry(op[2]))
        elif kind in ("attr", "iattr"):
            _set(ns, name, ATTR)
        elif kind == "alias":
            found = (scope or {}).get(op[2]) if "." not in op[2] else None
            _set(ns, name, found or self.resolve(op[2], self.namespace(mod), False) or ATTR)
        elif kind == "import":
            _set(ns, name, self.module_entry(op[2]))
        elif kind == "from":
            _set(ns, name, self.attr_of(op[2], op[3]))
        elif kind == "star":
            for n, e in sorted(self.star(name).items()):
                _set(ns, n, e)
        elif kind == "del":
            ns.pop(name, None)

    def resolve(self, dotted, ns, classes=True):
        """The entry `dotted` names from namespace ns, or None."""
        parts = dotted.split(".")
        entry = ns.get(parts[0])
        for part in parts[1:]:
            if entry is None:
                return None
            if entry["kind"] == "module" and entry["target"] in self.raw:
                sub = self.namespace(entry["target"])
                entry = sub[part] if part in sub else self.module_entry(entry["target"] + "." + part)
                entry = None if entry is ATTR and part not in sub else entry
            elif entry["kind"] == "class" and classes:
                entry = self.class_members(entry["target"]).get(part)
            else:
                return None
        return entry

    # ---- phase 2: classes
    def class_members(self, qual):
        """Members of a class, its bases' first (later bases lose to earlier ones, as in the MRO)."""
        if qual in self.members:
            return self.members[qual]
        members = self.members[qual] = {}
        raw = self.class_raw.get(qual)
        if raw is None:
            self.open.add(qual)
            return members
        ns = self.namespace(raw["mod"])
        for base in reversed(raw["bases"]):
            if base == "object":
                continue
            entry = self.resolve(base, ns) if base else None
            if entry is not None and entry["kind"] == "class" and entry["target"] in self.class_raw:
                members.update(self.class_members(entry["target"]))
                if entry["target"] in self.open:
                    self.open.add(qual)
            else:
                self.open.add(qual)
        own = {}
        for op in raw["ops"]:
            self.apply(own, op, raw["mod"], own)
        members.update(own)
        raw["own_init"] = "__init__" in own or "__new__" in own
        return members

    # ---- phase 3: signatures
    def effective(self, entry):
        """Fill a function entry's params/varkw, following where its **kwargs go."""
        key = id(entry)
        if key in self.memo:
            return self.memo[key]
        self.memo[key] = entry  # a recursion through itself adds nothing
        fwd = entry.pop("_fwd", None)
        keys = entry.pop("_keys", [])
        if entry["kind"] != "function" or not entry["varkw"] or not fwd:
            return entry
        params, varkw = list(entry["params"]), False
        for name in keys:
            if name not in params:
                params.append(name)
        for mod, callee in fwd:
            target = self.resolve(callee, self.namespace(mod)) if callee else None
            if target is not None and target["kind"] == "class":
                target = self.class_signature(target)
            elif target is not None and target["kind"] == "function":
                target = self.effective(target)
            if target is None or target.get("params") is None:
                varkw = True
                break
            params += [p for p in target["params"] if p not in params]
            varkw = varkw or target["varkw"]
        if not varkw:
            entry["params"], entry["varkw"] = params, False
        return entry

    def class_signature(self, entry):
        """Set a class entry's params (__init__'s, else __new__'s, without self) or None if unknown."""
        if "params" in entry or id(entry) in self.memo:
            return entry
        self.memo[id(entry)] = entry
        qual = entry["target"]
        members = self.class_members(qual)
        raw = self.class_raw.get(qual, {})
        init = members.get("__init__") or members.get("__new__")
        if qual in self.open:
            entry["open"] = True
        if init is None or init["kind"] != "function" or (qual in self.open and not raw.get("own_init")):
            entry["params"], entry["varkw"] = None, True
        else:
            init = self.effective(init)
            entry["params"], entry["varkw"] = list(init["params"][1:]), init["varkw"]
        return entry

    def run(self):
        """{"modules": {...}, "classes": {...}} as index.py writes them."""
        mods = sorted(self.raw)
        for mod in mods:
            self.namespace(mod)
        # second pass: an import cycle's partial namespaces are now known in full
        self.prev, self.ns, self.done = self.ns, {}, set()
        for mod in mods:
            self.namespace(mod)
        self.prev = {}
        for qual in sorted(self.class_raw):
            self.class_members(qual)
        for qual in sorted(self.class_entries):
            self.class_signature(self.class_entries[qual])
        for table in (self.ns, self.members):
            for ns in table.values():
                for entry in ns.values():
                    if entry["kind"] == "function":
                        self.effective(entry)
        for table in (self.ns, self.members):
            for ns in table.values():
                for entry in ns.values():
                    for key in _PRIVATE:
                        entry.pop(key, None)
        return {"modules": self.ns, "classes": {q: m for q, m in self.members.items()
                                                if q in self.class_raw}}
