"""Image files in, mask files out: decoding any input the way training saw it, writing PNG masks.

Reading: bytes -> ``cv2.imdecode(IMREAD_UNCHANGED)`` (the format comes from the content, so a JPEG
named .png reads), Pillow as a fallback for formats OpenCV lacks; 16-bit scaled to 8 bits, grey
replicated to RGB, alpha dropped; then the train-time evaluation's resize (Pillow's bilinear,
antialiased). Writing: 1-channel uint8 PNG content whatever the file name says.

``read_job`` and ``write_job`` are the thread-pool jobs: they never raise (a bad file must not
stop the run) and add their seconds to a list the caller owns (``list.append`` is atomic).

Device-side code: Python 3.6 syntax; numpy, OpenCV and Pillow only.

Example:
    >>> import numpy as np
    >>> rgb = np.zeros((300, 400, 3), np.uint8)
    >>> resize(rgb, 64).shape
    (64, 64, 3)
"""
import io
import os
import time

import cv2
import numpy as np
from PIL import Image

BILINEAR = getattr(Image, 'Resampling', Image).BILINEAR  # Pillow >= 9.1 moved the constants


def to_rgb8(image, order):
    """Any decoded image array -> HxWx3 uint8 RGB.

    16-bit images are scaled to 8 bits (x * 255 / 65535, rounded), floats are
    taken as [0, 1], grayscale is replicated, alpha is dropped.

    Args:
        image: (H, W), (H, W, 1..4) array of any integer or float dtype.
        order: 'bgr' for OpenCV's arrays, 'rgb' for Pillow's.

    Example:
        >>> to_rgb8(np.full((2, 2), 65535, np.uint16), 'rgb')[0, 0].tolist()
        [255, 255, 255]
    """
    if image.dtype != np.uint8:
        if image.dtype == np.uint16:
            image = cv2.convertScaleAbs(image, alpha=255.0 / 65535.0)
        elif image.dtype.kind == 'f':
            image = cv2.convertScaleAbs(np.nan_to_num(image.astype(np.float32)), alpha=255.0)
        else:
            image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 3 and image.shape[2] in (1, 2):  # gray, gray + alpha
        image = image[:, :, 0]
    if image.ndim == 2:
        return cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_GRAY2RGB)
    if image.ndim != 3:
        raise ValueError('unexpected image shape {}'.format(image.shape))
    if order == 'bgr':
        if image.shape[2] == 4:
            return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
        return cv2.cvtColor(np.ascontiguousarray(image[:, :, :3]), cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(image[:, :, :3])


def decode(data):
    """Encoded bytes -> HxWx3 uint8 RGB, or None when neither OpenCV nor Pillow can read them.

    The format is found from the content, not the file name (a JPEG named .png reads fine).

    Args:
        data: the file's bytes.

    Example:
        >>> decode(b'not an image') is None
        True
    """
    if not data:
        return None
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        image = None
    if image is not None and image.size:
        return to_rgb8(image, 'bgr')
    try:  # formats OpenCV does not read (GIF, ...)
        pil = Image.open(io.BytesIO(data))
        pil.load()
    except Exception:  # noqa: BLE001 -- any failure means unreadable
        return None
    if pil.mode not in ('L', 'RGB', 'RGBA', 'I;16', 'I;16B', 'I;16L'):
        pil = pil.convert('RGB')
    return to_rgb8(np.asarray(pil), 'rgb')


def resize(rgb, size):
    """Bilinear antialiased resize to size x size: the train-time evaluation's resize.

    Pillow's, not OpenCV's: torchvision's ``Resize(antialias=True)`` at train time reproduces
    Pillow's filter to within one grey level, while cv2's INTER_LINEAR / INTER_AREA differ by tens.

    Args:
        rgb: (H, W, 3) uint8.
        size: the model's input side.
    """
    if rgb.shape[0] == size and rgb.shape[1] == size:
        return rgb
    return np.asarray(Image.fromarray(rgb).resize((size, size), BILINEAR))


def read_image(path, size):
    """File -> model-sized uint8 RGB array. Raises ValueError when the file is not an image."""
    with open(path, 'rb') as handle:
        data = handle.read()
    rgb = decode(data)
    if rgb is None:
        raise ValueError('not a readable image ({} bytes)'.format(len(data)))
    return resize(rgb, size)


def broken_link(path):
    """The target of a symbolic link that points nowhere, else None.

    Example:
        >>> broken_link('/') is None
        True
    """
    if os.path.islink(path) and not os.path.exists(path):
        return os.readlink(path)
    return None


def read_job(folder, name, size, seconds):
    """Reader-pool job: (model-sized RGB image or None, the reason it is None).

    Args:
        folder, name: the input file.
        size: the model's input side.
        seconds: a list; the job's duration is appended to it.

    Example:
        >>> read_job('/nowhere', 'a.png', 64, [])[1]
        "FileNotFoundError: [Errno 2] No such file or directory: '/nowhere/a.png'"
    """
    begin = time.perf_counter()
    path = os.path.join(folder, name)
    try:
        target = broken_link(path)
        if target is not None:  # say what is wrong, not just "no such file"
            return None, 'a broken symbolic link to {}'.format(target)
        return read_image(path, size), None
    except Exception as error:  # noqa: BLE001 -- bad input must never kill the run
        return None, '{}: {}'.format(type(error).__name__, error)
    finally:
        seconds.append(time.perf_counter() - begin)


def write_mask(path, mask):
    """Write a uint8 mask as PNG (PNG whatever the file name's extension: the referee reads PNG).

    Args:
        path: the output file.
        mask: (H, W) uint8 class ids.
    """
    ok, encoded = cv2.imencode('.png', mask)
    if not ok:
        raise IOError('PNG encoding failed')
    with open(path, 'wb') as handle:
        handle.write(encoded.tobytes())


def write_job(folder, name, mask, seconds):
    """Writer-pool job: None, or the reason the mask could not be written.

    Args:
        folder, name: where the mask goes.
        mask: (H, W) uint8 class ids.
        seconds: a list; the job's duration is appended to it.
    """
    begin = time.perf_counter()
    try:
        write_mask(os.path.join(folder, name), mask)
        return None
    except Exception as error:  # noqa: BLE001
        return '{}: {}'.format(type(error).__name__, error)
    finally:
        seconds.append(time.perf_counter() - begin)
