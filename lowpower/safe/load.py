"""One safe loader for weight files: ``weights_only=True``, the expected hash, one-line refusals.

``torch.load`` without ``weights_only`` unpickles arbitrary objects, so a crafted file runs its code
as it loads. Every weight file a lowpower command reads goes through :func:`load_weights`, and weights
go into a module through :func:`load_matching`, which names the keys that did not match.

Example:
    >>> state = load_weights("runs/demo/best.pt", what="checkpoint")  # doctest: +SKIP
"""
import hashlib
import pickle
import re
from pathlib import Path

import torch

from lowpower.safe import UserError

# torch hub's naming rule: a file called NAME-<hex>.ext carries the first hex digits of its sha256.
HUB_HASH = re.compile(r"-([a-f0-9]{6,})\.")


class WeightsFileError(UserError, ValueError):
    """A weight file that is missing, unreadable, not what its name promises, or holds code."""


def sha256_of(path):
    """The sha256 hex digest of a file's bytes."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def hub_hash_prefix(path):
    """The sha256 prefix a torch hub file name carries (``resnet18-f37072fd.pth`` -> ``f37072fd``), or None.

    Example:
        >>> hub_hash_prefix("resnet18-f37072fd.pth")
        'f37072fd'
    """
    match = HUB_HASH.search(Path(path).name)
    return match.group(1) if match else None


def _first_line(error):
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:200]


def load_weights(path, what="weights file", sha256_prefix=None, map_location="cpu"):
    """Read a torch file with ``weights_only=True``; refuse it in one line when it is not plain weights.

    Args:
        path: the file.
        what: what it is, for the messages ("checkpoint", "teacher checkpoint", "ImageNet backbone").
        sha256_prefix: when given, the file's sha256 must start with it (torch hub files carry one in
            their name); a mismatch is refused before anything is unpickled.
        map_location: as for ``torch.load``.

    Raises:
        WeightsFileError: missing, hash mismatch, pickled objects beyond tensors and containers
            (never run), or not a torch file.

    Example:
        >>> load_weights("resnet18-f37072fd.pth", "ImageNet backbone", sha256_prefix="f37072fd")  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsFileError("%s %s does not exist" % (what, path))
    if sha256_prefix:
        digest = sha256_of(path)
        if not digest.startswith(sha256_prefix):
            raise WeightsFileError("%s %s has sha256 %s..., not the expected %s...: it is not the published "
                                   "file; delete it and fetch the original" % (what, path, digest[:12], sha256_prefix))
    try:
        return torch.load(str(path), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        reason = _unpickler_reason(error)
        if "Unsupported global" in reason:  # a class or function to call: what a crafted file needs
            raise WeightsFileError("refused %s %s: it holds pickled Python objects beyond tensors and containers, "
                                   "which could run code, so it is not loaded (%s)" % (what, path, reason)) from None
        raise WeightsFileError("cannot read %s %s: truncated, or not a torch file (%s)"
                               % (what, path, reason)) from None
    except Exception as error:  # noqa: BLE001 -- a truncated zip, an empty file ...: all mean "not readable"
        detail = type(error).__name__ + (": " + _first_line(error) if str(error).strip() else "")
        raise WeightsFileError("cannot read %s %s: truncated, or not a torch file (%s)"
                               % (what, path, detail)) from None


def _unpickler_reason(error):
    """The line of torch's weights-only refusal that says what it met (its first lines are advice)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for index, line in enumerate(lines):
        if "WeightsUnpickler error:" in line:
            rest = line.split("WeightsUnpickler error:", 1)[1].strip()
            rest = rest or (lines[index + 1] if index + 1 < len(lines) else "")
            return rest.split(". Please use")[0][:200]
    return _first_line(error)


def _examples(keys, count=3):
    keys = sorted(keys)
    return ", ".join(keys[:count]) + (" ... (%d in all)" % len(keys) if len(keys) > count else "")


def load_matching(module, state_dict, what):
    """Load ``state_dict`` into ``module`` by name; refuse it when no key matches.

    Shapes must agree for the keys that match (``load_state_dict`` raises otherwise).

    Args:
        module: the ``torch.nn.Module`` to fill.
        state_dict: name -> tensor.
        what: what the weights are, for the message.

    Returns:
        ``(missing, unexpected)``: the module's keys the file lacks, and the file's keys the module lacks.

    Raises:
        WeightsFileError: none of the file's keys is one of the module's.

    Example:
        >>> load_matching(torch.nn.Linear(2, 2), {"weight": torch.zeros(2, 2)}, "test weights")
        (['bias'], [])
    """
    expected = set(module.state_dict())
    if not expected & set(state_dict):
        raise WeightsFileError("%s match none of the network's keys: the file has %s; the network expects %s"
                               % (what, _examples(state_dict) or "no keys", _examples(expected)))
    result = module.load_state_dict(state_dict, strict=False)
    return sorted(result.missing_keys), sorted(result.unexpected_keys)
