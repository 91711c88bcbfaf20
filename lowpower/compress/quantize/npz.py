"""An int8 state dict as plain numpy arrays: what an int8 package's ``weights.npz`` holds (no pickle).

A quantized tensor ``K`` becomes four arrays (the decoder is ``solution/int8.py``, device side)::

    K::int8        its integer values (int_repr): int8 for qint8, uint8 for quint8, int32 for qint32
    K::scale       float64, a scalar (per tensor) or one per channel
    K::zero_point  int64, a scalar or one per channel
    K::axis        int64 scalar: the channel axis, -1 for per-tensor

Every other entry (biases, the scales and zero points modules keep as tensors) is stored as its
plain array, unchanged. An entry that is None (the bias of an int8 conv built without one, e.g. a conv
after a BN-ReLU, as in DDRNet's DAPPM and PIDNet's PAPPM) is ``K::none``, an empty int8 array.

Example:
    >>> arrays = encode_state_dict(int8_model.state_dict())  # doctest: +SKIP
    >>> sorted(k for k in arrays if k.startswith("conv.weight"))  # doctest: +SKIP
    ['conv.weight::axis', 'conv.weight::int8', 'conv.weight::scale', 'conv.weight::zero_point']
"""
import numpy as np
import torch

SEPARATOR = "::"
PARTS = ("int8", "scale", "zero_point", "axis")
NONE_PART = "none"  # marks an entry whose value is None
PER_TENSOR_AXIS = -1


def encode_quantized(key, tensor):
    """The four arrays of one quantized tensor (see the module docstring).

    Raises:
        ValueError: a quantization scheme other than per-tensor or per-channel affine.

    Example:
        >>> q = torch.quantize_per_tensor(torch.ones(2), 0.5, 3, torch.quint8)
        >>> encode_quantized("w", q)["w::int8"].tolist()
        [5, 5]
    """
    scheme = tensor.qscheme()
    values = tensor.int_repr().numpy()
    if scheme in (torch.per_tensor_affine, torch.per_tensor_symmetric):
        scale = np.float64(tensor.q_scale())
        zero_point = np.int64(tensor.q_zero_point())
        axis = PER_TENSOR_AXIS
    elif scheme in (torch.per_channel_affine, torch.per_channel_symmetric):
        scale = tensor.q_per_channel_scales().to(torch.float64).numpy()
        zero_point = tensor.q_per_channel_zero_points().to(torch.int64).numpy()
        axis = int(tensor.q_per_channel_axis())
    else:
        raise ValueError("%s is quantized with %s; only per-tensor and per-channel affine tensors can be "
                         "shipped" % (key, scheme))
    parts = (values, np.asarray(scale, np.float64), np.asarray(zero_point, np.int64), np.int64(axis))
    return {key + SEPARATOR + name: np.asarray(part) for name, part in zip(PARTS, parts)}


def encode_state_dict(state_dict):
    """``{name: array}`` for ``np.savez``: quantized tensors split in four, the rest as they are.

    Args:
        state_dict: an int8 model's ``state_dict()`` (or a float one: nothing is then split).

    Raises:
        ValueError: naming the entry, for a key that contains ``::`` or a value that is not a tensor
            (a quantized Linear's packed-params tuple, for instance).
    """
    arrays = {}
    for key, value in state_dict.items():
        if SEPARATOR in key:
            raise ValueError("state dict key %r contains %r, which the int8 npz layout reserves" % (key, SEPARATOR))
        if value is None:  # a quantized conv's missing bias: its module expects the key, with None
            arrays[key + SEPARATOR + NONE_PART] = np.zeros(0, np.int8)
            continue
        if not isinstance(value, torch.Tensor):
            raise ValueError("state dict entry %s is a %s, not a tensor; an int8 package ships tensors only"
                             % (key, type(value).__name__))
        value = value.detach().cpu()
        if value.is_quantized:
            arrays.update(encode_quantized(key, value))
        else:
            arrays[key] = value.numpy()
    return arrays


def tensors_equal(a, b):
    """Exact equality of two state-dict entries, quantization parameters included (None equals None).

    Example:
        >>> q = torch.quantize_per_tensor(torch.ones(2), 0.5, 3, torch.quint8)
        >>> tensors_equal(q, q.clone()), tensors_equal(q, torch.ones(2)), tensors_equal(None, None)
        (True, False, True)
    """
    if a is None or b is None:
        return a is None and b is None
    if a.is_quantized != b.is_quantized or a.dtype != b.dtype or a.shape != b.shape:
        return False
    if not a.is_quantized:
        return bool(torch.equal(a, b))
    key = "t"
    left, right = encode_quantized(key, a), encode_quantized(key, b)
    return all(np.array_equal(left[name], right[name]) for name in left)


def differences(state_dict, decoded):
    """Keys whose decoded entry is missing, extra or not exactly equal (empty list: a faithful round trip)."""
    missing = sorted(set(state_dict) - set(decoded))
    extra = sorted(set(decoded) - set(state_dict))
    unequal = sorted(key for key in set(state_dict) & set(decoded)
                     if not tensors_equal(_cpu(state_dict[key]), decoded[key]))
    return ["missing %s" % key for key in missing] + ["extra %s" % key for key in extra] + [
        "differs %s" % key for key in unequal]


def _cpu(value):
    return None if value is None else value.detach().cpu()
