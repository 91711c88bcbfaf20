"""The limits of the measuring commands' numbers: one argparse type per kind of number, each with its reason.

Every ``lowpower bench`` command takes its numeric arguments through these (``lowpower.safe.bounds``),
so a size, a count or a timeout means the same, and is refused for the same reason, everywhere.

The input side is the one that costs memory. Measured here (``lowpower bench models --size 2048
--repeats 1 --warmup 0 --threads 1``): one forward pass at 2048x2048 took 285 MB above the process's
base for lraspp_mbv3_small and 4.05 GB (and 42 s) for unet_light, and memory grows with the square
of the side: ``bench sweep --sizes 10000`` grew to 23.7 GB and was killed by the kernel.

Example:
    >>> SIDES("128,256")
    [128, 256]
    >>> SIDE("10000")
    Traceback (most recent call last):
    ...
    argparse.ArgumentTypeError: 10000 is over 2048: ...
"""
from evaluation.contract import REFEREE_TIMEOUT

# The sides are every command's (lowpower.safe.bounds); the bench commands import them from here too.
from lowpower.safe.bounds import MAX_SIDE, MIN_SIDE, SIDE, SIDES, bounded  # noqa: F401

THREADS = bounded(int, 1, 64, "torch CPU threads: at least one; the referee's Jetson Nano has 4 cores, and "
                  "threads beyond a machine's cores only queue for them")
WARMUP = bounded(int, 0, 100, "untimed calls before the clock starts: a few settle the allocator and the kernel "
                 "choice, more only cost time")
CALLS = bounded(int, 1, 1000, "timed calls, the median kept: it settles within tens, and 1000 calls of a "
                "4-second forward pass already take over an hour")
RUNS = bounded(int, 1, 100, "whole runs of a package over the images, the median kept: it settles within a few, "
               "and each run takes the images' full time")
SAMPLES = bounded(int, 1, 1000, "synthetic images made for the run and read by every package run; 1000 already "
                  "make each run minutes long")
TIMEOUT = bounded(float, 1.0, 3600.0, "seconds a package run may take before it counts as failed; the referee "
                  "allows %d, and a run past an hour is hung" % REFEREE_TIMEOUT)
NUM_CLASSES = bounded(int, 1, 255, "masks are 8-bit: ids 0..254 can be classes, 255 is the ignore id")
SEED = bounded(int, 0, 2 ** 32 - 1, "torch and numpy seeds are unsigned 32-bit")
CALIB = bounded(int, 1, 4096, "calibration images for post-training int8; Dice is flat from a few on, more "
                "only cost time")
