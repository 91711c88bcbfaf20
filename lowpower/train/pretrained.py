"""Load torchvision ImageNet weights into the backbone of a ``networks`` model, through the safe loader.

Workstation side: ``networks/`` never downloads anything, so a freshly built model gets its
pretrained backbone here when a config asks for it (``model.pretrained``). The file lives in torch
hub's cache (``<torch.hub.get_dir()>/checkpoints/resnet18-f37072fd.pth``); its name carries the
first hex digits of its sha256, which are checked before anything in it is read, whether the file
was downloaded just now or put there by hand. It is then read with ``weights_only=True``
(``lowpower.safe.load``), so a crafted file never runs, and a file whose keys match none of the
backbone's is an error, not a log line.

Example:
    >>> model = networks.create_model("deeplabv3_r18")  # doctest: +SKIP
    >>> load_pretrained_backbone(model, "deeplabv3_r18", log=print)  # doctest: +SKIP
    IMAGENET1K_V1 backbone weights: 120 of 120 backbone keys from .../resnet18-f37072fd.pth (sha256 checked)
    ([], [])
"""
from pathlib import Path

import torch
import torchvision.models as tv_models

from lowpower.config import ConfigError
from lowpower.safe.load import WeightsFileError, hub_hash_prefix, load_matching, load_weights

# Registry name -> torchvision weights enum whose network matches model.backbone.
BACKBONE_WEIGHTS = {
    "deeplabv3_r18": "ResNet18_Weights",
    "deeplabv3_r50": "ResNet50_Weights",
    "deeplabv3_r101": "ResNet101_Weights",
    "fanet_r18": "ResNet18_Weights",
    "fcn_r50": "ResNet50_Weights",
    "deeplabv3_mbv3": "MobileNet_V3_Large_Weights",
    "lraspp_mbv3_large": "MobileNet_V3_Large_Weights",
    "lraspp_mbv3_small": "MobileNet_V3_Small_Weights",
}

# Registry name -> prefix of the checkpoint keys that model.backbone holds (with
# the prefix removed); other keys (the ImageNet classifier) are dropped. ResNet
# backbones hold the checkpoint's own key names, less its classifier (RESNET_CLASSIFIER).
BACKBONE_PREFIX = {
    "deeplabv3_mbv3": "features.",
    "lraspp_mbv3_large": "features.",
    "lraspp_mbv3_small": "features.",
}
RESNET_CLASSIFIER = "fc."
WHAT = "ImageNet backbone"  # how messages name the file
NO_PRETRAINED = "or train without pretrained weights: --set model.pretrained=false"


def backbone_weights_url(arch: str, weights: str = "IMAGENET1K_V1") -> str:
    """Return the download URL of the ImageNet weights for ``arch``'s backbone.

    Raises:
        ConfigError: ``arch`` has no pretrained backbone, or ``weights`` is not one of its members.

    Example:
        >>> backbone_weights_url("deeplabv3_r18").rsplit("/", 1)[-1]
        'resnet18-f37072fd.pth'
    """
    if arch not in BACKBONE_WEIGHTS:
        raise ConfigError(
            f"No pretrained backbone weights for model {arch!r}; available for: "
            f"{', '.join(sorted(BACKBONE_WEIGHTS))}. Use --set model.pretrained=false."
        )
    enum = getattr(tv_models, BACKBONE_WEIGHTS[arch])
    if weights not in enum.__members__:
        raise ConfigError(f"Unknown weights {weights!r} for {arch} (model.pretrained); "
                          f"choose from {', '.join(enum.__members__)}")
    return enum[weights].url


def cached_path(url: str) -> Path:
    """Where torch hub keeps the file of ``url``: ``<torch.hub.get_dir()>/checkpoints/<its name>``.

    Example:
        >>> cached_path("https://download.pytorch.org/models/resnet18-f37072fd.pth").name
        'resnet18-f37072fd.pth'
    """
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def fetch_backbone_file(url: str) -> Path:
    """The cached file of ``url``; downloaded into the cache first when it is not there.

    The download is checked against the hash prefix in the file's name before it is moved into
    place (``torch.hub.download_url_to_file``); a cached file is checked when it is read
    (:func:`read_backbone_state`).

    Args:
        url: a torchvision weights URL (:func:`backbone_weights_url`).

    Raises:
        WeightsFileError: not cached and not downloadable; the message says where to put the file
            and that its hash is checked.

    Example:
        >>> fetch_backbone_file(backbone_weights_url("deeplabv3_r18")).name  # doctest: +SKIP
        'resnet18-f37072fd.pth'
    """
    path = cached_path(url)
    if path.is_file():
        return path
    prefix = hub_hash_prefix(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(path), hash_prefix=prefix, progress=False)
    except (OSError, RuntimeError) as exc:  # URLError, timeouts ... are OSErrors; a wrong hash a RuntimeError
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise WeightsFileError(
            f"cannot download {WHAT} {path.name} from {url} ({reason}); download it elsewhere and put it "
            f"at {path} (its sha256 must start with {prefix}: that is checked before the file is read), "
            f"{NO_PRETRAINED}") from None
    return path


def name_keys(keys, count=3):
    """A few of ``keys`` for a message, and how many there are.

    Example:
        >>> name_keys(["a", "b", "c", "d"], 2)
        'a, b ... (4 in all)'
    """
    keys = sorted(keys)
    return ", ".join(keys[:count]) + (" ... (%d in all)" % len(keys) if len(keys) > count else "")


def backbone_state_dict(state_dict: dict, arch: str) -> dict:
    """Rename an ImageNet checkpoint's keys to those of ``arch``'s ``model.backbone``.

    MobileNetV3 checkpoints keep their ``features.`` entries with the prefix
    removed; ResNet checkpoints keep their names. The classifier is dropped.

    Example:
        >>> sorted(backbone_state_dict({"features.0.0.weight": 1, "classifier.0.bias": 2}, "lraspp_mbv3_small"))
        ['0.0.weight']
        >>> sorted(backbone_state_dict({"conv1.weight": 1, "fc.bias": 2}, "deeplabv3_r18"))
        ['conv1.weight']
    """
    prefix = BACKBONE_PREFIX.get(arch)
    if prefix is None:
        return {key: value for key, value in state_dict.items() if not str(key).startswith(RESNET_CLASSIFIER)}
    return {key[len(prefix):]: value for key, value in state_dict.items() if str(key).startswith(prefix)}


def read_backbone_state(arch: str, weights: str = "IMAGENET1K_V1"):
    """The ImageNet weights of ``arch``'s backbone, under its key names, from the hub cache.

    Returns:
        ``(path, state_dict)``: the file read and its backbone entries.

    Raises:
        ConfigError: no such weights for ``arch``.
        WeightsFileError: not cached and not downloadable, a wrong hash (refused before it is
            unpickled), pickled code (never run), not a state dict, or no backbone keys in it.

    Example:
        >>> path, state = read_backbone_state("lraspp_mbv3_small")  # doctest: +SKIP
    """
    path = fetch_backbone_file(backbone_weights_url(arch, weights))
    fix = f"delete {path} so that the published file is fetched, {NO_PRETRAINED}"
    try:  # the hash first, then weights_only: a file that is not the published one is never unpickled
        state = load_weights(path, WHAT, sha256_prefix=hub_hash_prefix(path))
    except WeightsFileError as error:
        raise WeightsFileError(f"{error}; to train without it: --set model.pretrained=false") from None
    if not isinstance(state, dict):
        raise WeightsFileError(f"{WHAT} {path} holds a {type(state).__name__}, not a state dict; {fix}")
    renamed = backbone_state_dict(state, arch)
    if not renamed:
        raise WeightsFileError(f"{WHAT} {path} has no {BACKBONE_PREFIX.get(arch, 'backbone')} keys for {arch} "
                               f"(it has {name_keys(map(str, state)) or 'no keys'}); {fix}")
    return path, renamed


def load_pretrained_backbone(model: torch.nn.Module, arch: str, weights: str = "IMAGENET1K_V1", log=None):
    """Load torchvision ImageNet weights (ResNet or MobileNetV3) into ``model.backbone``.

    Args:
        model: a model built by ``networks.create_model(arch, ...)``.
        arch: its registry name, e.g. ``"deeplabv3_r18"``.
        weights: the torchvision weights member, e.g. ``"IMAGENET1K_V1"``.
        log: called with one line: how many backbone keys came from which file, and the names of
            the missing and unexpected ones when there are any.

    Returns:
        ``(missing, unexpected)``: backbone keys the file did not provide, and its keys the backbone
        lacks (both empty for the published file; its ImageNet classifier is dropped first).

    Raises:
        ConfigError: ``arch`` has no pretrained backbone.
        WeightsFileError: see :func:`read_backbone_state`; also a file whose keys match none of the
            backbone's, or whose tensors have other shapes.

    Example:
        >>> model = networks.create_model("deeplabv3_r18")  # doctest: +SKIP
        >>> load_pretrained_backbone(model, "deeplabv3_r18")  # doctest: +SKIP
        ([], [])
    """
    path, state = read_backbone_state(arch, weights)
    fix = f"delete {path} so that the published file is fetched, {NO_PRETRAINED}"
    try:
        missing, unexpected = load_matching(model.backbone, state, f"the keys of {WHAT} {path}")
    except WeightsFileError as error:
        raise WeightsFileError(f"{error}; {fix}") from None
    except RuntimeError as error:  # load_state_dict: size mismatches, one per line
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        raise WeightsFileError(f"{WHAT} {path} does not fit {arch}'s backbone ({lines[-1][:200]}); {fix}") from None
    if log:
        log(describe_load(weights, path, len(model.backbone.state_dict()), missing, unexpected))
    return missing, unexpected


def describe_load(weights, path, total, missing, unexpected):
    """One log line on a backbone load: keys loaded, and the missing and unexpected ones by name.

    Example:
        >>> describe_load("IMAGENET1K_V1", "r.pth", 3, ["a"], ["b"]).split("; ")[1:]
        ['missing from the file, left as initialised: a', 'in the file but not in the backbone, ignored: b']
    """
    text = "%s backbone weights: %d of %d backbone keys from %s (sha256 checked)" % (
        weights, total - len(missing), total, path)
    if missing:
        text += "; missing from the file, left as initialised: %s" % name_keys(missing)
    if unexpected:
        text += "; in the file but not in the backbone, ignored: %s" % name_keys(unexpected)
    return text
