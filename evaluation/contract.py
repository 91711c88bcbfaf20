"""The referee's and the device's rules: the one home for them (LPCVC 2023 segmentation track).

Everything that needs one of these facts imports it from here: the scorer and metrics beside this
file, the data loaders and losses, the packager, presubmit and the tests. The shipped program gets
what it needs through the manifest that the packager writes from these values.

Python 3.6 syntax and the standard library only: it runs on the scoring machine and the device.

Example:
    >>> NUM_CLASSES, OUTPUT_SIZE, IGNORE_INDEX
    (14, 512, 255)
    >>> only_a_float('12.5\\n')
    12.5
    >>> print(only_a_float('12.5 s\\n'))
    None
"""
import re

# ----------------------------------------------------------------------------- the task
CLASS_NAMES = (
    'background', 'avalanche', 'building_undamaged', 'building_damaged',
    'cracks/fissure/subsidence', 'debris/mud/rock_flow', 'fire/flare',
    'flood/water/river/sea', 'ice_jam_flow', 'lava_flow', 'person',
    'pyroclastic_flow', 'road/railway/bridge', 'vehicle',
)
NUM_CLASSES = len(CLASS_NAMES)  # the referee's confusion matrix is 14x14; a larger id crashes it
OUTPUT_SIZE = 512  # every mask is scored at 512x512 (INTER_AREA, then INTER_NEAREST)
IGNORE_INDEX = 255  # label id for pixels that neither train nor score (GT ids >= 14 never count)

# ----------------------------------------------------------------------------- the referee's run
REFEREE_IMAGES = 600  # the private test set; the referee hard-codes this count
REFEREE_TIMEOUT = 900.0  # seconds: `timeout 900 python3.6 -W ignore solution.pyz -i IMG -o OUT`
# The referee greps stdout with this pattern. We demand that stdout is exactly one such number:
# a second number or a progress line makes the referee's result invalid.
REFEREE_FLOAT = re.compile(r'[0-9]+\.[0-9]+')
ONLY_A_FLOAT = re.compile(r'\s*([0-9]+\.[0-9]+)\s*\Z')


def only_a_float(stdout):
    """The seconds a solution printed, when its stdout is exactly one referee float; else None.

    Args:
        stdout: the whole of the solution's standard output, as text.
    """
    match = ONLY_A_FLOAT.match(stdout)
    return float(match.group(1)) if match else None


# ----------------------------------------------------------------------------- the device
# What the Jetson Nano image has besides Python 3.6's standard library (DESIGN.md section 2):
# the pip packages, setuptools' pkg_resources (the official sample imports it) and TensorRT.
DEVICE_PACKAGES = frozenset([
    'torch', 'torchvision', 'numpy', 'cv2', 'PIL', 'imageio', 'dataclasses', 'typing_extensions',
    'pkg_resources', 'setuptools', 'tensorrt'])
DEVICE_PYTHON = (3, 6)
# vermin: the oldest Python the code must run on; the device has the dataclasses backport
# installed, so using it is not a 3.7 requirement.
VERMIN_FLAGS = ('--target=3.6-', '--violations', '--no-tips', '--eval-annotations',
                '--backport', 'dataclasses')
