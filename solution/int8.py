"""The int8 model of an int8 package: weights.npz decoded to quantized tensors, loaded into the network.

weights.npz holds plain arrays (the encoder is lowpower/quantize/npz.py): a quantized tensor K is
K::int8 (its integer values), K::scale (float64), K::zero_point (int64) and K::axis (int64, -1 for
per-tensor); K::none (an empty array) is an entry whose value is None (an int8 conv without bias);
everything else is the plain tensor. The network is rebuilt from the shipped
``networks`` source, given the int8 structure with ``networks.quant.int8_skeleton`` and loaded
strictly. The manifest's ``quant.engine`` is the engine it was calibrated for; when the torch here
lacks it, ``networks.quant.select_engine`` picks another and one warning goes to stderr.

Device-side code: Python 3.6 syntax; the torch 1.10 and 2.x APIs (the private constructors
``torch._make_per_tensor_quantized_tensor`` and ``torch._make_per_channel_quantized_tensor`` exist
in both); numpy and torch only.

Example (skipped as a doctest: it needs the manifest and weights.npz of an int8 package):
    >>> state = decode_state_dict(tensors)  # doctest: +SKIP
    >>> model = build_int8_model(manifest, tensors)  # doctest: +SKIP
"""
import sys

import torch

SEPARATOR = '::'
PARTS = ('int8', 'scale', 'zero_point', 'axis')
NONE_PART = 'none'  # K::none: the entry K is None
INTEGER_DTYPES = (torch.int8, torch.uint8, torch.int32)  # qint8, quint8, qint32


class Int8WeightsError(ValueError):
    """weights.npz does not follow the int8 layout; the message names the entry."""


def split_key(key):
    """('conv.weight', 'scale') for 'conv.weight::scale'; (key, None) for a plain entry."""
    name, separator, part = key.rpartition(SEPARATOR)
    if not separator:
        return key, None
    if part not in PARTS and part != NONE_PART:
        raise Int8WeightsError('weights.npz entry {} has an unknown part {!r} (expected one of {})'.format(
            key, part, ', '.join(PARTS)))
    return name, part


def group_entries(tensors):
    """({name: tensor} of plain entries, {name: {part: tensor}} of quantized ones)."""
    plain, quantized = {}, {}
    for key, value in tensors.items():
        name, part = split_key(key)
        if part is None:
            plain[name] = value
        else:
            quantized.setdefault(name, {})[part] = value
    return plain, quantized


def quantized_tensor(name, parts):
    """One quantized tensor from its four parts (tensors or numpy arrays).

    Raises:
        Int8WeightsError: a part is missing or has the wrong type or shape.

    Example:
        >>> q = quantized_tensor('w', {'int8': torch.tensor([5], dtype=torch.uint8),
        ...     'scale': torch.tensor(0.5, dtype=torch.float64), 'zero_point': torch.tensor(3),
        ...     'axis': torch.tensor(-1)})
        >>> q.dequantize().tolist()
        [1.0]
    """
    missing = [part for part in PARTS if part not in parts]
    if missing:
        raise Int8WeightsError('weights.npz lacks {} for the quantized tensor {}'.format(
            ', '.join(name + SEPARATOR + part for part in missing), name))
    values, scale, zero_point, axis = [torch.as_tensor(parts[part]) for part in PARTS]
    if values.dtype not in INTEGER_DTYPES:
        raise Int8WeightsError('weights.npz entry {}::int8 is {}, not int8, uint8 or int32'.format(name, values.dtype))
    axis = int(axis)
    if axis < 0:
        if scale.numel() != 1 or zero_point.numel() != 1:
            raise Int8WeightsError('{}: a per-tensor entry (axis -1) needs one scale and one zero point'.format(name))
        return torch._make_per_tensor_quantized_tensor(values, float(scale), int(zero_point))
    if axis >= values.dim() or scale.numel() != values.shape[axis] or zero_point.numel() != values.shape[axis]:
        raise Int8WeightsError('{}: axis {} does not fit values of shape {} with {} scales and {} zero '
                               'points'.format(name, axis, tuple(values.shape), scale.numel(), zero_point.numel()))
    return torch._make_per_channel_quantized_tensor(
        values, scale.reshape(-1).double(), zero_point.reshape(-1).long(), axis)


def decode_state_dict(tensors):
    """The state dict with quantized tensors from weights.npz's entries.

    Args:
        tensors: ``{key: tensor or numpy array}`` as read from weights.npz.

    Raises:
        Int8WeightsError: naming the entry that breaks the layout.
    """
    plain, quantized = group_entries(tensors)
    nones = sorted(name for name, parts in quantized.items() if list(parts) == [NONE_PART])
    clash = sorted(set(plain) & set(quantized))
    if clash:
        raise Int8WeightsError('weights.npz holds {} both plain and quantized'.format(clash[0]))
    # the float islands' weights are stored in fp16: back to the model's fp32
    state = dict((name, _float32_if_half(torch.as_tensor(value))) for name, value in plain.items())
    for name, parts in quantized.items():
        state[name] = None if name in nones else quantized_tensor(name, parts)
    return state


def _float32_if_half(tensor):
    return tensor.float() if tensor.dtype == torch.float16 else tensor


def choose_engine(manifest, warn=None):
    """Set the quantized engine the manifest names, or the fallback; returns the engine set.

    Args:
        manifest: the package's manifest (``quant.engine``).
        warn: called with one line when the engine differs (default: a line on stderr).
    """
    from networks import quant  # shipped in every int8 package
    wanted = (manifest.get('quant') or {}).get('engine')
    engine, warning = quant.select_engine(wanted)
    if warning:
        (warn or _stderr)(warning)
    return engine


def _stderr(message):
    sys.stderr.write('solution: warning: {}\n'.format(message))
    sys.stderr.flush()


def build_int8_model(manifest, tensors, warn=None):
    """The int8 network of the manifest with the decoded weights, in eval mode, on the CPU.

    Args:
        manifest: ``arch``, ``arch_kwargs`` and ``quant`` (``engine``).
        tensors: weights.npz's entries (``{key: tensor or array}``).
        warn: receives the engine fallback warning (default: stderr).
    """
    import networks  # the generated registry of the one shipped model
    from networks import quant
    engine = choose_engine(manifest, warn)
    model = networks.create_model(manifest['arch'], **manifest['arch_kwargs'])
    model = quant.int8_skeleton(model, engine)
    model.load_state_dict(decode_state_dict(tensors), strict=True)
    return model.eval()
