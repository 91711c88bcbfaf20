"""Checks of an exported ONNX file: the checker, its Resize nodes, and onnxruntime against PyTorch.

Used by :mod:`lowpower.ship.export`; each function works on its own too.

Example:
    >>> check_onnx("m.onnx")  # doctest: +SKIP
    >>> resize_modes(onnx.load("m.onnx"))  # doctest: +SKIP
    ['linear/half_pixel', 'linear/half_pixel']
    >>> compare_with_onnxruntime(model, "m.onnx", 256)  # doctest: +SKIP
    {'agreement': 1.0, 'max_diff': 3.1e-06, 'pixels': 262144}
"""
import math

import numpy as np
import torch

# Resize coordinate modes that reproduce F.interpolate(..., align_corners=False) / (align_corners=True).
# half_pixel and pytorch_half_pixel differ only for an output side of 1; TensorRT 8.2 reads both
# half_pixel and align_corners. "asymmetric" on a linear Resize is the opset-9 Upsample semantics that
# shifts every pixel by half a source pixel against PyTorch: the complaint users of this path hit.
PYTORCH_LINEAR_MODES = {"half_pixel", "pytorch_half_pixel", "align_corners"}


def check_onnx(path):
    """Run ``onnx.checker.check_model`` on the file (raises ``onnx.checker.ValidationError``).

    Args:
        path: the .onnx file; passed by name so files over 2 GB work as well.
    """
    import onnx

    onnx.checker.check_model(str(path), full_check=True)


def resize_modes(model):
    """The ``mode/coordinate_transformation_mode`` of every Resize node, in graph order.

    Args:
        model: an ``onnx.ModelProto``.

    Example:
        >>> resize_modes(onnx.load("m.onnx"))  # doctest: +SKIP
        ['linear/half_pixel']
    """
    import onnx

    modes = []
    for node in model.graph.node:
        if node.op_type == "Resize":
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            mode = attrs.get("mode", b"nearest").decode()
            coords = attrs.get("coordinate_transformation_mode", b"half_pixel").decode()
            modes.append("%s/%s" % (mode, coords))
    return modes


def resize_problems(modes):
    """The Resize modes of ``modes`` (from :func:`resize_modes`) that PyTorch's bilinear would not match.

    Example:
        >>> resize_problems(["linear/half_pixel", "linear/asymmetric"])
        ['linear/asymmetric']
    """
    return [m for m in modes if m.split("/")[0] == "linear" and m.split("/")[1] not in PYTORCH_LINEAR_MODES]


def summarise_modes(modes):
    """``['linear/half_pixel', 'linear/half_pixel']`` -> ``'linear/half_pixel x2'``; ``'-'`` when none."""
    if not modes:
        return "-"
    return ", ".join("%s x%d" % (m, modes.count(m)) for m in sorted(set(modes)))


def probe_images(size, seed=0, random=2, smooth=2):
    """Seeded test inputs, (1, 3, size, size) each, on the scale of normalised images.

    Random normal images exercise every path; smooth ones (sinusoids and a ramp) look more like
    photographs, with large regions where one class wins, so an argmax flip there means a real error.

    Args:
        size: image side.
        seed: seed of the random images.
        random, smooth: how many of each.
    """
    generator = torch.Generator().manual_seed(seed)
    images = [torch.randn(1, 3, size, size, generator=generator) for _ in range(random)]
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    for k in range(smooth):
        f = 1.0 + k  # a different spatial frequency per image
        channels = [torch.sin(2 * math.pi * f * x + c) * torch.cos(2 * math.pi * f * y - c) for c in range(3)]
        channels[k % 3] = 4 * (x + y) / 2 - 2  # one channel a ramp from -2 to 2
        images.append(2 * torch.stack(channels)[None])
    return images


def onnx_session(path, threads=None):
    """An onnxruntime CPU session for ``path`` (``threads`` intra-op threads, default torch's count)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    # The machine is shared: use the same thread budget as torch rather than every core.
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.log_severity_level = 3  # errors only: ORT's warnings about unused initialisers are noise here
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@torch.inference_mode()
def compare_with_onnxruntime(model, path, size, seed=0, threads=None):
    """Run PyTorch and onnxruntime (CPU) on :func:`probe_images` and compare.

    Args:
        model: the eval-mode module that was exported.
        path: the exported .onnx file (input ``image``, batch 1).
        size: the exported input side.
        seed: seed of the random inputs.
        threads: onnxruntime intra-op threads.

    Returns:
        ``{"agreement": share of argmax pixels equal, "max_diff": max |logit difference|, "pixels": n}``.
    """
    session = onnx_session(path, threads)
    name = session.get_inputs()[0].name
    same = pixels = 0
    max_diff = 0.0
    for image in probe_images(size, seed):
        expected = model(image).float().numpy()
        got = session.run(None, {name: image.numpy()})[0]
        if got.shape != expected.shape:
            raise ValueError("onnxruntime output shape %s != PyTorch %s" % (got.shape, expected.shape))
        max_diff = max(max_diff, float(np.abs(got - expected).max()))
        same += int((got.argmax(1) == expected.argmax(1)).sum())
        pixels += expected.shape[0] * expected.shape[2] * expected.shape[3]
    return {"agreement": same / pixels, "max_diff": max_diff, "pixels": pixels}
