"""Walk a dotted name through the device API index: found, missing, or not knowable.

The index format is in the FETCH half (``lowpower.ship.device_api.index``): ``modules`` maps a dotted
module name to its public names, ``classes`` a qualified class name to its members (its bases'
included), and every ``module``/``class`` entry carries a ``target`` naming where its own names
are, so re-exports and aliases resolve. A class entry marked ``"open"`` has a base outside the
index, and a module whose names include ``__getattr__`` may supply any name: both are unknowable
past what is listed, as in ``index.lookup``.

This walker needs more than lookup's entry-or-None: it must tell a name the device lacks
("missing") from one the index cannot know ("unverified": a partial package such as numpy, whose
C-level names are in no ``.py`` file), and it must stop, without guessing, where the
chain goes on into a function or an attribute value.

Example:
    >>> index = {"packages": {"torch": "1.10.2"}, "partial": [], "classes": {},
    ...          "modules": {"torch": {"nn": {"kind": "module", "target": "torch.nn"}}, "torch.nn": {}}}
    >>> walk(index, "torch.compile").status
    'missing'
    >>> walk(index, "torch.nn").status
    'ok'
"""
from typing import NamedTuple, Optional


class Walk(NamedTuple):
    """Where a dotted name led.

    status: "ok" (``entry`` is the last name's entry when ``complete``), "missing" (``name`` is the
    prefix the device lacks) or "unverified" (the index cannot say; ``reason`` tells why).
    complete: False when the walk stopped early at a function or attribute, whose value is unknown.
    """
    status: str
    name: str
    reason: str = ""
    entry: Optional[dict] = None
    complete: bool = True


def version(index, dotted):
    """The device's ``"torch 1.10.2"`` for any name under torch (``"torch"`` if unlisted)."""
    root = dotted.split(".")[0]
    found = index.get("packages", {}).get(root)
    return "{} {}".format(root, found) if found else root


def walk(index, dotted):
    """Resolve ``dotted`` (e.g. ``"torch.nn.functional.interpolate"``) against ``index``.

    Args:
        index: the loaded index dict.
        dotted: a name rooted at a top-level package.

    Returns:
        A ``Walk``. Example: ``walk(index, "PIL.Image.Resampling").status == "missing"`` for Pillow 8.4.
    """
    modules, classes = index.get("modules", {}), index.get("classes", {})
    parts = dotted.split(".")
    root = parts[0]
    partial = root in index.get("partial", ())
    if root not in modules:
        return Walk("unverified", root, "the index has no package {}".format(root))
    entry = {"kind": "module", "target": root}
    for depth, attr in enumerate(parts[1:], 2):
        here = ".".join(parts[:depth])
        kind, target = entry.get("kind"), entry.get("target")
        if kind == "module":
            names = modules.get(target)
            if names is None:
                return Walk("unverified", here, "the index does not list the names of module {}".format(target))
            found = names.get(attr)
            if found is None and "{}.{}".format(target, attr) in modules:
                # A submodule is an attribute once imported, whether or not __init__ names it.
                found = {"kind": "module", "target": "{}.{}".format(target, attr)}
            if found is None and "__getattr__" in names:
                return Walk("unverified", here, "module {} has a __getattr__, which may supply {}".format(
                    target, attr))
            if found is None:
                if partial:
                    return Walk("unverified", here, "{} is partial: its C-level names are in no .py file, "
                                "so {} cannot be checked".format(root, here))
                return Walk("missing", here, "the device's {} has no {}".format(version(index, root), here))
        elif kind == "class":
            members = classes.get(target)
            found = None if members is None else members.get(attr)
            if found is None and (members is None or entry.get("open")):
                # An "open" class has a base outside the index, whose members cannot be known.
                return Walk("unverified", here, "class {} has a base outside the index, so {} cannot be "
                            "checked".format(target, here))
            if found is None:
                # A closed class's members include everything its bases define.
                return Walk("missing", here, "the device's {} has no {}".format(version(index, root), here))
        else:
            # A function's return value or an attribute's value: the index does not know its type.
            return Walk("ok", ".".join(parts[:depth - 1]), entry=entry, complete=False)
        entry = found
    return Walk("ok", dotted, entry=entry)


def unknown_keywords(entry, keywords):
    """The keywords a callable entry does not accept; none when its signature is open or unknown.

    Example:
        >>> unknown_keywords({"kind": "function", "params": ["input", "size"], "varkw": False}, ["size", "antialias"])
        ['antialias']
    """
    if not entry or entry.get("kind") not in ("function", "class"):
        return []
    params = entry.get("params")
    if params is None or entry.get("varkw"):
        return []
    return [name for name in keywords if name not in params]
