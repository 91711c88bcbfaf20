"""Prediction panels a person can read: titled columns and a legend of the class colours.

A panel is one PNG per image::

    +-----------+--------------+------------+---------+
    |   input   | ground truth | prediction | overlay |   <- title band
    +-----------+--------------+------------+---------+
    |  tiles, each at least MIN_TILE pixels wide       |
    +--------------------------------------------------+
    | [#] background   [#] avalanche   [#] ...         |   <- legend, every class of the data set
    +--------------------------------------------------+

Tiles smaller than ``MIN_TILE`` are enlarged (nearest neighbour, so label edges stay sharp) so that
the titles and the legend stay legible on the small crops of the demo.

Example:
    >>> image = np.zeros((32, 32, 3), np.uint8); mask = np.zeros((32, 32), np.uint8)
    >>> panel = compose_panel(image, mask, mask, ("background", "water"))
    >>> panel.shape[1] == 4 * MIN_TILE
    True
"""
import cv2
import numpy as np

from lowpower.data.colors import colorize, overlay

COLUMNS = ("input", "ground truth", "prediction", "overlay")
MIN_TILE = 160
FONT = cv2.FONT_HERSHEY_SIMPLEX
FONT_SCALE = 0.45
TEXT_COLOUR = (20, 20, 20)
PAPER = (255, 255, 255)
BAND = 24  # pixels: the height of the title band and of one legend row
SWATCH = 14


def _text(canvas, text, x, y):
    cv2.putText(canvas, text, (int(x), int(y)), FONT, FONT_SCALE, TEXT_COLOUR, 1, cv2.LINE_AA)


def _text_width(text):
    return cv2.getTextSize(text, FONT, FONT_SCALE, 1)[0][0]


def title_band(tile_width):
    """A white band with one centred title per column.

    Args:
        tile_width: width of one column in pixels.
    """
    band = np.full((BAND, tile_width * len(COLUMNS), 3), PAPER, np.uint8)
    for index, title in enumerate(COLUMNS):
        _text(band, title, index * tile_width + (tile_width - _text_width(title)) / 2, BAND - 8)
    return band


def legend(class_names, width):
    """Rows of colour swatches with the class names, wrapped to ``width`` pixels.

    Args:
        class_names: the data set's class names, indexed by class id.
        width: the panel's width in pixels.
    """
    entry_width = SWATCH + 10 + max(_text_width("%d %s" % (i, n)) for i, n in enumerate(class_names)) + 16
    per_row = max(1, width // entry_width)
    rows = -(-len(class_names) // per_row)
    canvas = np.full((rows * BAND + 6, width, 3), PAPER, np.uint8)
    colours = colorize(np.arange(len(class_names)).reshape(1, -1))[0]
    for class_id, name in enumerate(class_names):
        row, column = divmod(class_id, per_row)
        x, y = 6 + column * entry_width, 4 + row * BAND
        canvas[y + 3:y + 3 + SWATCH, x:x + SWATCH] = colours[class_id]
        cv2.rectangle(canvas, (x, y + 3), (x + SWATCH - 1, y + 2 + SWATCH), TEXT_COLOUR, 1)
        _text(canvas, "%d %s" % (class_id, name), x + SWATCH + 6, y + 3 + SWATCH - 2)
    return canvas


def _enlarge(tile, side):
    if tile.shape[0] >= side:
        return tile
    scale = -(-side // tile.shape[0])
    return cv2.resize(tile, (tile.shape[1] * scale, tile.shape[0] * scale), interpolation=cv2.INTER_NEAREST)


def compose_panel(image, truth, prediction, class_names):
    """The four tiles side by side under their titles, with the legend below.

    Args:
        image: ``HxWx3`` uint8 RGB input, already at the prediction's size.
        truth: ``HxW`` ground-truth ids (ignored pixels, e.g. 255, are drawn black).
        prediction: ``HxW`` predicted ids.
        class_names: names indexed by class id, for the legend.

    Returns:
        An RGB uint8 array.
    """
    truth, prediction = truth.astype(np.uint8), prediction.astype(np.uint8)
    tiles = [image, colorize(truth), colorize(prediction), overlay(image, prediction)]
    tiles = [_enlarge(tile, MIN_TILE) for tile in tiles]
    row = np.concatenate(tiles, axis=1)
    return np.concatenate([title_band(tiles[0].shape[1]), row, legend(class_names, row.shape[1])], axis=0)
