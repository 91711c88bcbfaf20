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
    >>> solution_command('python3', 'solution.pyz', 'IMG', 'OUT')
    ['python3', '-I', '-W', 'ignore', 'solution.pyz', '-i', 'IMG', '-o', 'OUT']

Run as a script it prints the run's rules as shell assignments, for evaluate.bash, or prepares a
run's output folder as the referee does:

    python3 evaluation/contract.py --shell
    REFEREE_TIMEOUT=900
    INTERPRETER_FLAGS=(-I -W ignore)
    python3 evaluation/contract.py --prepare-output runs/x/pred
"""
import os
import re
import shlex
import sys

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
# The flags every runner of ours puts between the interpreter and the archive: evaluate.bash (through
# `contract.py --shell`) and lowpower.ship.runner.run_pyz (presubmit, the packager's check, the benches).
# The referee's literal command has only `-W ignore`. We add `-I` (isolated mode: -E and -s, so
# PYTHONPATH, PYTHONHOME, PYTHONWARNINGS and the user's site-packages are ignored) because our runs
# happen on a workstation whose environment the device does not have: with PYTHONPATH pointing at a
# checkout, or a package in ~/.local, an archive that imports something it does not ship passes here
# and fails there. The device is a clean image with nothing in those variables, so `-I` only takes
# away what the referee's run would not have; without it a pass here could be a false pass. The
# archive itself is still first on sys.path in isolated mode, and plain environment variables (not
# PYTHON*) still reach the program. The one cost: a device whose torch were installed with
# `pip install --user` would need the flag dropped here to run evaluate.bash there.
INTERPRETER_FLAGS = ('-I', '-W', 'ignore')
# The referee greps stdout with this pattern. We demand that stdout is exactly one such number:
# a second number or a progress line makes the referee's result invalid.
REFEREE_FLOAT = re.compile(r'[0-9]+\.[0-9]+')
ONLY_A_FLOAT = re.compile(r'\s*([0-9]+\.[0-9]+)\s*\Z')


def solution_command(python, pyz, images_dir, out_dir):
    """The argument list that runs a package: ``python FLAGS PYZ -i IMAGES -o OUT``.

    Args:
        python: the interpreter (``python3.6`` on the device).
        pyz: the package; images_dir: its ``-i``; out_dir: its ``-o`` (all as given: make them
            absolute first when the run has its own working folder).
    """
    return [str(python)] + list(INTERPRETER_FLAGS) + [str(pyz), '-i', str(images_dir), '-o', str(out_dir)]


# The referee creates the -o folder before it runs a solution, and the official 2023 sample writes
# its masks into it without creating it. Both our runners (evaluate.bash through
# `contract.py --prepare-output`, run_pyz through prepare_output) do it here, so they cannot drift.
OUTPUT_FOLDER_CREATED = True


def prepare_output(out_dir):
    """Make a run's ``-o`` folder before the solution starts, as the referee does.

    Nothing in an existing folder is removed or replaced: the folder is created when it is absent
    (with its parents), and left as it is otherwise. With ``OUTPUT_FOLDER_CREATED`` false it does
    nothing, and the solution must make the folder itself.

    Args:
        out_dir: the folder the solution gets as ``-o``.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as run:
        ...     prepare_output(os.path.join(run, 'pred'))
        ...     os.listdir(run)
        ['pred']
    """
    if OUTPUT_FOLDER_CREATED and not os.path.isdir(str(out_dir)):
        os.makedirs(str(out_dir))


def seconds_text(seconds):
    """A number of seconds as `timeout` and the shell take it: ``900`` for 900.0, ``0.5`` as is.

    Example:
        >>> seconds_text(900.0), seconds_text(0.5)
        ('900', '0.5')
    """
    seconds = float(seconds)
    return '%d' % seconds if seconds.is_integer() else repr(seconds)


def shell_assignments():
    """The run's rules as bash assignments (``INTERPRETER_FLAGS`` is an array), one a line."""
    return 'REFEREE_TIMEOUT={}\nINTERPRETER_FLAGS=({})\n'.format(
        shlex.quote(seconds_text(REFEREE_TIMEOUT)), ' '.join(shlex.quote(flag) for flag in INTERPRETER_FLAGS))


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


USAGE = ('usage: python3 contract.py --shell               (prints the run\'s rules as bash assignments)\n'
         '       python3 contract.py --prepare-output DIR  (makes a run\'s -o folder as the referee does)\n')


def main(argv):
    """The script: ``--shell`` or ``--prepare-output DIR``; returns the exit status."""
    if argv == ['--shell']:
        sys.stdout.write(shell_assignments())
        return 0
    if len(argv) == 2 and argv[0] == '--prepare-output':
        try:
            prepare_output(argv[1])
        except OSError as error:
            sys.stderr.write('contract.py: cannot create the output folder {}: {}\n'.format(
                argv[1], error.strerror or error))
            return 1
        return 0
    sys.stderr.write(USAGE)
    return 2


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
