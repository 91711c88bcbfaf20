"""The index of the device's public API, read from the real wheels with `ast` (format: /tmp/format.md).

Public functions:
- `build_index(cache=DEFAULT_CACHE) -> dict`: read CACHE/wheels/*.whl as zips (never installed or
  imported) and return the index.
- `load_index(cache=DEFAULT_CACHE, fetch=True, progress=True) -> dict`: CACHE/index.json, rebuilt
  (and the wheels fetched) when missing or when the wheels' sha256 changed.
- `lookup(index, dotted) -> dict | None`: the entry of one dotted name, through modules, re-exports
  ("target") and classes. None when the device's versions lack it. When the chain passes an entry
  whose members cannot be known (an "attribute", a function, a class marked "open" because a base is
  outside the index, a module outside the index), that entry is returned: the rest cannot be checked.

What is read, and why:
- `.py` and `.pyi` of a module are both read and unioned: stubs name C-level functions the `.py`
  cannot show, but some are stale (torch/nn/functional.pyi's interpolate lacks the
  recompute_scale_factor that functional.py, the code that runs, accepts).
- torch copies every name of torch._C._VariableFunctions into `torch` at run time, so module
  torch star-imports torch/_C/_VariableFunctions.pyi; Tensor's members are those of
  torch._C._TensorBase (torch/_C/__init__.pyi) and torch._tensor.Tensor, also under "torch.Tensor".
- numpy 1.19 ships no stubs: its C-level names are unknown, hence "partial": ["numpy"].

Example:
    >>> index = load_index()                                     # doctest: +SKIP
    >>> lookup(index, "torch.nn.functional.interpolate")["params"][:2]   # doctest: +SKIP
    ['input', 'size']
    >>> lookup(index, "torch.compile") is None                    # doctest: +SKIP
    True
"""
import hashlib
import json
import os
import sys
import zipfile
from pathlib import Path

from lowpower.ship.device_api import DeviceApiError
from lowpower.ship.device_api.fetch import DEFAULT_CACHE, WHEELS, _present, _sha256, fetch_wheels
from lowpower.ship.device_api.index_ast import extract
from lowpower.ship.device_api.index_resolve import Resolver

FORMAT = 1
PACKAGES = ("torch", "torchvision", "numpy", "PIL", "imageio")
_DIST_TO_IMPORT = {"Pillow": "PIL"}
_SKIP_DIRS = {"tests", "test", "testing_data"}  # test suites are not API and are half the .py files


def indexer_version():
    """sha256 (16 hex) of the indexing code: an index.json built by other code is rebuilt."""
    h = hashlib.sha256()
    for name in ("index.py", "index_ast.py", "index_resolve.py"):
        h.update((Path(__file__).parent / name).read_bytes())
    return h.hexdigest()[:16]


def module_name(path, packages=PACKAGES):
    """("torch.nn", True) for 'torch/nn/__init__.py', None for files outside packages or in tests."""
    parts = path.split("/")
    if parts[0] not in packages or not path.endswith((".py", ".pyi")) or _SKIP_DIRS & set(parts[:-1]):
        return None
    parts[-1] = parts[-1].rsplit(".", 1)[0]
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def _merge(old, new):
    """A module read from both .py and .pyi: all ops, both __all__s, both views of each class."""
    for qual, cls in new["classes"].items():
        if qual in old["classes"]:
            mine = old["classes"][qual]
            mine["ops"] += cls["ops"]
            mine["bases"] = mine["bases"] or cls["bases"]
        else:
            old["classes"][qual] = cls
    names = None if old["all"] is None and new["all"] is None else \
        (old["all"] or []) + [n for n in (new["all"] or []) if n not in (old["all"] or [])]
    return {"ops": old["ops"] + new["ops"], "all": names, "classes": old["classes"]}


def read_wheel(path, raw, unparsed, packages=PACKAGES):
    """Add every module of one wheel to raw ({module: extract(...)}); sources that fail to parse go
    to unparsed. Files are read in sorted order so that the index is the same on every build.

    Args:
        path: a wheel (any zip).
        raw: {module: raw ops}, filled in place.
        unparsed: list of the files that did not parse, filled in place.
        packages: the top-level folders read.
    """
    with zipfile.ZipFile(path) as zf:
        for name in sorted(zf.namelist()):
            mod = module_name(name, packages)
            if mod is None:
                continue
            try:
                found = extract(zf.read(name).decode("utf-8", "replace"), mod[0], mod[1])
            except SyntaxError:
                unparsed.append(name)
                continue
            # .py sorts before .pyi, so the stub's ops come last and add to the .py's
            raw[mod[0]] = _merge(raw[mod[0]], found) if mod[0] in raw else found


def build_index(cache=DEFAULT_CACHE):
    """Build the index from the wheels in CACHE/wheels (fetch them first).

    Args:
        cache: the cache folder fetch_wheels filled.
    Returns:
        the index dict of /tmp/format.md ("format", "packages", "wheels", "partial", "modules",
        "classes"), plus "indexer" (indexer_version()) and, when any, "unparsed" (sources that did
        not parse).
    Raises:
        DeviceApiError: a wheel is missing.
    Example:
        >>> build_index()["modules"]["torch"]["nn"]                 # doctest: +SKIP
        {'kind': 'module', 'target': 'torch.nn'}
    """
    folder = Path(cache) / "wheels"
    raw, unparsed, wheels, packages = {}, [], {}, {}
    for spec in WHEELS:
        found = _present(folder, spec[5])
        if not found:
            raise DeviceApiError("no %s wheel in %s: run `lowpower device-api fetch`"
                                 % (spec[0], folder))
        wheels[found[-1].name] = _sha256(found[-1])
        dist, version = spec[0].split("==")
        packages[_DIST_TO_IMPORT.get(dist, dist)] = version
        read_wheel(found[-1], raw, unparsed)
    torch_ops = raw["torch"]["ops"]
    # torch/__init__.py copies dir(torch._C._VariableFunctions) into globals() in a loop; the
    # TYPE_CHECKING star import usually says so already, this makes sure.
    if ("star", "torch._C._VariableFunctions") not in torch_ops:
        torch_ops.insert(0, ("star", "torch._C._VariableFunctions"))
    resolved = Resolver(raw).run()
    classes = resolved["classes"]
    if "torch._tensor.Tensor" in classes:
        classes["torch.Tensor"] = classes["torch._tensor.Tensor"]
    index = {"format": FORMAT, "indexer": indexer_version(), "packages": packages,
             "wheels": wheels, "partial": ["numpy"],
             "modules": resolved["modules"], "classes": classes}
    if unparsed:
        index["unparsed"] = unparsed
    return index


def dumps(index):
    """The index as JSON text; sorted keys, so equal indexes give equal text."""
    return json.dumps(index, sort_keys=True, separators=(",", ":")) + "\n"


def write_index(index, cache=DEFAULT_CACHE):
    """Write CACHE/index.json atomically (a temporary file, then os.replace)."""
    path = Path(cache) / "index.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name("index.json.%d.tmp" % os.getpid())
    tmp.write_text(dumps(index))
    os.replace(tmp, path)
    return path


def load_index(cache=DEFAULT_CACHE, fetch=True, progress=True):
    """The cached index, rebuilt when missing, of another format, or built from other wheels or
    by other indexing code.

    Args:
        cache: the cache folder.
        fetch: download missing wheels first; False uses CACHE/wheels.json as it is.
        progress: show downloads and a line when the index is (re)built.
    Raises:
        DeviceApiError: no wheels (fetch=False and never fetched), or a download failed.
    """
    cache = Path(cache)
    if fetch:
        shas = fetch_wheels(cache, progress)
    else:
        try:
            shas = json.loads((cache / "wheels.json").read_text())
        except (OSError, ValueError):
            raise DeviceApiError("no wheels in %s: run `lowpower device-api fetch`"
                                 % cache) from None
    try:
        index = json.loads((cache / "index.json").read_text())
        if index.get("format") == FORMAT and index.get("wheels") == shas \
                and index.get("indexer") == indexer_version():
            return index
    except (OSError, ValueError):
        pass
    if progress:
        print("device_api: indexing %s" % ", ".join(sorted(shas)), file=sys.stderr, flush=True)
    index = build_index(cache)
    write_index(index, cache)
    return json.loads(dumps(index))  # the same plain, unshared dicts a cached load gives


def lookup(index, dotted):
    """The index entry for a dotted name, or None when the device's versions lack it.

    Args:
        index: a dict from load_index/build_index.
        dotted: e.g. "torch.nn.functional.interpolate", "torch.Tensor.view", "PIL.Image.BILINEAR".
    Returns:
        the entry ({"kind": ..., ...}); for a chain through something whose members cannot be known
        (see the module docstring), that entry; None when a name is missing.
    Example:
        >>> lookup(load_index(), "PIL.Image.Resampling") is None    # doctest: +SKIP
        True
    """
    modules, classes = index["modules"], index["classes"]
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        if ".".join(parts[:cut]) in modules:
            break
    else:
        return None
    entry = {"kind": "module", "target": ".".join(parts[:cut])}
    for part in parts[cut:]:
        target = entry.get("target")
        if entry["kind"] == "module" and target in modules:
            names = modules[target]
            if part not in names and "__getattr__" in names:
                return entry  # a module-level __getattr__ may supply any name
            entry = names.get(part)
        elif entry["kind"] == "class" and target in classes:
            found = classes[target].get(part)
            if found is None and entry.get("open"):
                return entry
            entry = found
        else:
            return entry
        if entry is None:
            return None
    return entry
