"""Load an ImageNet backbone file that a network's authors published (``model.pretrained: FILE``).

The networks of the last few years (PIDNet, DDRNet, PP-LiteSeg's STDC, TopFormer) start from their
authors' own ImageNet files, not torchvision's. Nothing here downloads them: the user puts the file on
disk (the cluster can fetch it, this machine cannot) and names it in ``model.pretrained``. The file is
read through the safe loader (``weights_only=True``: a crafted pickle never runs).

Our networks name their layers as the authors' code does. Where they cannot, the network class says how
in two class attributes (device-side, in ``networks/``):

- ``authors_key_map``: ``(authors' prefix, our prefix)`` pairs, the first match wins, other keys keep
  their name;
- ``authors_ignored``: prefixes of keys in the authors' file that the network does not hold (their
  ImageNet classifier), dropped without a word.

Every other key of the file that the network lacks is named, and so is every network key the file left
as initialised (the segmentation heads, normally). A key whose tensor has another shape is an error.

Example:
    >>> model = networks.create_model("ddrnet23_slim", num_classes=19)  # doctest: +SKIP
    >>> load_authors_file(model, "pretrained/DDRNet23s_imagenet.pth", log=print)  # doctest: +SKIP
"""
from pathlib import Path

from lowpower.paths import REPO_ROOT
from lowpower.safe.load import WeightsFileError, load_matching, load_weights
from lowpower.train.pretrained import name_keys

WHAT = "authors' ImageNet file"
# Top-level entries that training scripts wrap a state dict in (mmcv, timm, the authors' own trainers), in the
# order they are taken: the EMA weights first, which TopFormer's authors publish beside the raw ones and load.
WRAPPERS = ("state_dict_ema", "state_dict", "model", "net")
# Suffixes that make ``model.pretrained`` a file, not a torchvision weights name like IMAGENET1K_V1.
FILE_SUFFIXES = (".pth", ".pt", ".tar", ".pkl", ".bin")


def names_a_file(pretrained):
    """Whether a ``model.pretrained`` value is a file path rather than ``true`` or a torchvision weights name.

    Example:
        >>> names_a_file("pretrained/PIDNet_S_ImageNet.pth.tar"), names_a_file("IMAGENET1K_V1"), names_a_file(True)
        (True, False, False)
    """
    if not isinstance(pretrained, str):
        return False
    return "/" in pretrained or pretrained.lower().endswith(FILE_SUFFIXES)


def pretrained_path(pretrained):
    """``model.pretrained`` as a path; a relative one is taken from the repository root, like ``data.root``.

    Example:
        >>> pretrained_path("/abs/x.pth").as_posix()
        '/abs/x.pth'
    """
    path = Path(pretrained).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def unwrap_state(state):
    """The state dict inside a training script's checkpoint: its 'state_dict_ema', 'state_dict' or 'model'
    entry, and without DataParallel's 'module.' prefix.

    Example:
        >>> unwrap_state({"state_dict": {"module.conv1.weight": 1}, "epoch": 3})
        {'conv1.weight': 1}
    """
    while isinstance(state, dict):
        inner = next((state[key] for key in WRAPPERS if isinstance(state.get(key), dict)), None)
        if inner is None:
            break
        state = inner
    if not isinstance(state, dict):
        return state
    if state and all(str(key).startswith("module.") for key in state):
        state = {str(key)[len("module."):]: value for key, value in state.items()}
    return state


def map_authors_state(model, state):
    """Rename the keys of an authors' state dict to ``model``'s, by the network's ``authors_key_map``.

    Args:
        model: a zoo network (its class may declare ``authors_key_map`` and ``authors_ignored``).
        state: the authors' state dict (unwrapped, see :func:`unwrap_state`).

    Returns:
        ``(mapped, ignored)``: the renamed state dict, and the keys dropped by ``authors_ignored``.

    Example:
        >>> class Net(torch.nn.Module):
        ...     authors_key_map = (("backbone.", "stdc."),)
        ...     authors_ignored = ("fc.",)
        >>> map_authors_state(Net(), {"backbone.x": 1, "fc.weight": 2, "head.y": 3})
        ({'stdc.x': 1, 'head.y': 3}, ['fc.weight'])
    """
    key_map = getattr(type(model), "authors_key_map", ())
    ignored_prefixes = tuple(getattr(type(model), "authors_ignored", ()))
    mapped, ignored = {}, []
    for key, value in state.items():
        key = str(key)
        if ignored_prefixes and key.startswith(ignored_prefixes):
            ignored.append(key)
            continue
        for theirs, ours in key_map:
            if key.startswith(theirs):
                key = ours + key[len(theirs):]
                break
        mapped[key] = value
    return mapped, sorted(ignored)


def check_shapes(model, mapped, path):
    """Refuse a file whose tensors have other shapes than the network's under the same names."""
    own = model.state_dict()
    wrong = ["%s %s (network %s)" % (key, tuple(value.shape), tuple(own[key].shape))
             for key, value in mapped.items() if key in own and hasattr(value, "shape")
             and tuple(value.shape) != tuple(own[key].shape)]
    if wrong:
        raise WeightsFileError("%s %s does not fit %s: %s; is it the file of this network's variant?"
                               % (WHAT, path, type(model).__name__, name_keys(wrong)))


def load_authors_file(model, path, log=None):
    """Load an authors' ImageNet file into ``model`` by name; name what did not match.

    Args:
        model: a zoo network.
        path: the file (``model.pretrained``; relative to the repository root).
        log: called with one line: how many keys came from the file, the network's keys left as
            initialised and the file's keys the network lacks, by name.

    Returns:
        ``(missing, unexpected)``: the network's keys the file did not fill, and the file's keys
        (after the key map, less ``authors_ignored``) that the network lacks.

    Raises:
        WeightsFileError: no such file, not a weights file (or one that would run code), no key in
            common with the network, or a tensor of another shape.

    Example:
        >>> model = networks.create_model("pidnet_s")  # doctest: +SKIP
        >>> load_authors_file(model, "pretrained/PIDNet_S_ImageNet.pth.tar")  # doctest: +SKIP
    """
    path = pretrained_path(path)
    if not path.is_file():
        raise WeightsFileError("%s %s does not exist; put the file there (see the config's comment for where to "
                               "get it) or train from scratch: --set model.pretrained=false" % (WHAT, path))
    state = unwrap_state(load_weights(path, WHAT))
    if not isinstance(state, dict):
        raise WeightsFileError("%s %s holds a %s, not a state dict" % (WHAT, path, type(state).__name__))
    mapped, _ = map_authors_state(model, state)
    check_shapes(model, mapped, path)
    missing, unexpected = load_matching(model, mapped, "the keys of %s %s" % (WHAT, path))
    if log:
        log(describe(path, len(model.state_dict()), missing, unexpected))
    return missing, unexpected


def describe(path, total, missing, unexpected):
    """One log line on an authors' file load.

    Example:
        >>> describe("p.pth", 4, ["head.w"], ["extra.b"]).split("; ")[1:]
        ['left as initialised: head.w', 'in the file but not in the network, ignored: extra.b']
    """
    text = "%s %s: %d of %d network keys loaded" % (WHAT, path, total - len(missing), total)
    if missing:
        text += "; left as initialised: %s" % name_keys(missing)
    if unexpected:
        text += "; in the file but not in the network, ignored: %s" % name_keys(unexpected)
    return text
