"""Device API fidelity: the public API of the device's torch 1.10.2, torchvision 0.11.2, numpy 1.19.5,
Pillow 8.4.0 and imageio 2.15.0, read from their real wheels (never from a hand-written list).

- `lowpower.ship.device_api.fetch`: `fetch_wheels()` downloads the wheels once into a cache folder.
- `lowpower.ship.device_api.index`: `build_index()` / `load_index()` read them as zips with `ast` into the
  index of names and keyword parameters; `lookup(index, "torch.nn.functional.interpolate")` resolves
  one dotted name through modules, re-exports and classes.

Example:
    >>> from lowpower.ship.device_api.index import load_index, lookup
    >>> lookup(load_index(), "torch.compile") is None
    True
"""


class DeviceApiError(Exception):
    """A one-line, user-facing failure (a wheel that did not download, a cache that cannot be read)."""
