"""Read a label PNG exactly as the LPCVC 2023 referee's ``imageio.imread`` does, without imageio.

imageio 2.x reads PNGs through Pillow and converts some modes on the way: a palette PNG becomes its
RGB(A) colours (or 8-bit grey when the palette is grey), 1-bit becomes 0/255, 16-bit stays uint16.
``read_png_like_imageio`` re-states that conversion with Pillow, so the scoring machine needs no
imageio and the arrays are identical. Plain 8-bit greyscale PNGs, where no conversion applies, are
decoded with OpenCV: the same array, twice as fast. Plain ``np.array(Image.open(f))`` (palette
indices, 1-bit booleans) and ``cv2.imread(f, cv2.IMREAD_UNCHANGED)`` (BGR channel order, palettes
expanded to colours) differ from imageio on palette, 1-bit and colour PNGs; see README.md.

Python 3.6 syntax; numpy, OpenCV and Pillow only.

Example (skipped as a doctest: it reads a GT file):
    >>> prepared, raw = read_label('GT/img_001.png')  # doctest: +SKIP
    >>> prepared.shape, prepared.dtype  # doctest: +SKIP
    ((512, 512), dtype('uint8'))
"""
import io
import struct

import cv2
import numpy as np
from PIL import Image

if __package__:
    from . import metrics
    from .contract import OUTPUT_SIZE
else:  # run as a script beside score.py: Python put this folder first on sys.path
    import metrics
    from contract import OUTPUT_SIZE


def _palette_is_grayscale(image):
    """imageio's test: a palette image whose used palette entries are all grey."""
    if image.mode != 'P':
        return False
    if image.info.get('transparency', None):
        return False
    palette = np.asarray(image.getpalette()).reshape((-1, 3))
    start, stop = image.getextrema()
    return bool(np.allclose(np.diff(palette[start:stop + 1]), 0))


def _frame_like_imageio(image, is_gray):
    """imageio 2.x ``pil_get_frame`` for a still image with default arguments."""
    frame = image
    if image.mode == 'P' and is_gray:
        frame = image.convert('L')
    elif image.mode == 'P':
        palette = image.palette
        if image.info.get('transparency', None) is not None:
            frame = image.convert('RGBA')
        elif palette.mode in ('RGB', 'RGBA'):
            colours = np.frombuffer(palette.getdata()[1], np.uint8)
            if hasattr(palette, 'rawmode_saved'):
                palette.rawmode = palette.rawmode_saved
            mode = palette.rawmode if getattr(palette, 'rawmode', None) else palette.mode
            colours = colours.reshape(-1, len(mode))
            if colours.shape[1] == 3 or (colours.shape[1] == 4 and mode[-1] == 'X'):
                colours = np.column_stack(
                    (colours[:, :3], 255 * np.ones(colours.shape[0], colours.dtype)))
            if mode.startswith('BGR'):
                colours = colours[:, [2, 1, 0]] if colours.shape[1] == 3 else colours[:, [2, 1, 0, 3]]
            try:
                frame = colours[np.array(image, np.uint8)]
            except Exception:  # imageio falls back to Pillow here too
                frame = image.convert('RGBA')
        else:
            frame = image.convert('RGBA')
    elif 'A' in image.mode:
        frame = image.convert('RGBA')
    elif image.mode == 'CMYK':
        frame = image.convert('RGB')
    elif image.format == 'GIF' and image.mode == 'RGB':
        frame = image.convert('RGBA')
    if not isinstance(frame, np.ndarray) and frame.mode == '1':
        frame = frame.convert('L')  # 1-bit becomes 0/255
    if image.mode.startswith('I;16'):
        dtype = '>u2' if image.mode.endswith('B') else '<u2'
        if 'S' in image.mode:
            dtype = dtype.replace('u', 'i')
        array = np.frombuffer(frame.tobytes(), dtype).copy()
        return array.reshape(image.size[::-1])
    dtype = 'uint16' if image.format == 'PNG' and image.mode == 'I' else None
    return np.array(frame, dtype=dtype)


PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


def is_plain_grey8_png(data):
    """True for an 8-bit greyscale PNG without a tRNS chunk (the usual label map).

    For these, OpenCV's decoder returns exactly imageio's array (no conversion applies), about
    twice as fast and without holding the GIL.
    """
    if data[:8] != PNG_SIGNATURE or data[12:16] != b'IHDR' or len(data) < 26:
        return False
    if data[24] != 8 or data[25] != 0:  # bit depth, colour type 0 = greyscale
        return False
    position = 8
    while position + 8 <= len(data):
        length = struct.unpack('>I', data[position:position + 4])[0]
        kind = data[position + 4:position + 8]
        if kind == b'IDAT':
            return True
        if kind == b'tRNS':
            return False
        position += 12 + length
    return False


def read_png_like_imageio(path):
    """The array ``imageio.imread(path)`` returns for a PNG (imageio 2.x, Pillow reader).

    Args:
        path: a PNG file.

    Returns:
        numpy array: (H, W) for grey, 1-bit and grey-palette PNGs; (H, W, 3)
        for RGB; (H, W, 4) for RGBA, grey+alpha and colour palettes (the
        palette's colours, not its indices); uint8, or uint16 for 16-bit PNGs.

    Example (skipped as a doctest: it reads a GT file):
        >>> read_png_like_imageio('GT/img_001.png').shape  # doctest: +SKIP
        (512, 512)
    """
    with open(path, 'rb') as handle:
        data = handle.read()
    if is_plain_grey8_png(data):
        array = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if array is not None and array.ndim == 2 and array.dtype == np.uint8:
            return array
    with Image.open(io.BytesIO(data)) as image:
        palette = image.palette
        if palette is not None and getattr(palette, 'dirty', False):
            palette.rawmode_saved = palette.rawmode
        image.load()  # decode now; raises on a truncated file, as imageio does
        is_gray = _palette_is_grayscale(image)
        return _frame_like_imageio(image, is_gray)


def read_label(path, size=OUTPUT_SIZE):
    """Read a label PNG as the referee does: imageio read, uint8, channel 0, resize to size x size.

    Args:
        path: a PNG file (prediction or ground truth).
        size: the side the referee resizes to (INTER_AREA, then INTER_NEAREST).

    Returns:
        (prepared (size, size) uint8 array, raw array as read). The raw array is kept so the
        caller can complain about what the referee would silently fix (size, channels, dtype).
    """
    raw = read_png_like_imageio(path)
    return metrics.referee_prepare(raw, size), raw
