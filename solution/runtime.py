"""Settings of the shipped process that must be made before torch loads, and the on/off switches.

``__main__.py`` calls ``prepare_process()`` first thing: the OpenMP wait policy is read when torch
loads its OpenMP runtime, and the allocator setting must precede the first large allocation.

Device-side code: Python 3.6 syntax, the standard library only (torch is not imported here).

Example (skipped as a doctest: it would change the OpenMP and allocator settings of the test process):
    >>> prepare_process()  # doctest: +SKIP
    {'wait_policy': 'PASSIVE', 'keep_heap': True}
"""
import ctypes
import os

OFF_VALUES = ('0', 'false', 'no', 'off')
KEEP_HEAP_ENV = 'LOWPOWER_KEEP_HEAP'
# glibc's mallopt parameters (malloc.h): never serve a request with its own mmap, and never give
# freed heap memory back to the system (the threshold is an int: its largest value).
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
NEVER_TRIM = 2 ** 31 - 1
# Set by hand, these take precedence: the allocator is left as the user configured it.
GLIBC_MALLOC_ENV = ('MALLOC_MMAP_MAX_', 'MALLOC_TRIM_THRESHOLD_', 'MALLOC_MMAP_THRESHOLD_', 'GLIBC_TUNABLES')


def switch_on(name, environ=None, default=True):
    """Whether the switch ``name`` is on: ``default`` unless it is set; 0, false, no and off are off.

    Args:
        name: the environment variable, e.g. ``LOWPOWER_FOLD_BN``.
        environ: a mapping of environment variables (default ``os.environ``).
        default: the value when ``name`` is unset or empty.

    Example:
        >>> switch_on('X', {'X': 'off'}), switch_on('X', {}), switch_on('X', {'X': '1'}, default=False)
        (False, True, True)
    """
    environ = os.environ if environ is None else environ
    value = environ.get(name, '').strip().lower()
    return default if not value else value not in OFF_VALUES


def set_wait_policy(environ=None):
    """Idle OpenMP threads sleep instead of spinning, unless OMP_WAIT_POLICY is already set.

    Measured 2026-12-01 on the 2-core CPU (bench_solution --variants, 50 images, 5 runs each in
    turns): idle, ACTIVE ran the demo UNet's network at 0.80x but the whole process at 0.93x, and
    lraspp_mbv3_small@256's at 0.99x / 1.06x; with one core busy in another process, ACTIVE took 17x
    the wall time (76 s against 4.4 s). The small idle gain does not pay for that risk. CUDA runs
    leave the CPU threads idle and were not measured.

    Returns:
        the policy in force.
    """
    environ = os.environ if environ is None else environ
    return environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')


def keep_freed_memory(environ=None, libc=None):
    """Make glibc keep freed memory for reuse instead of returning it to the system; True if done.

    Batches of 512x512 activations are tens of MB each. glibc serves each request over 32 MB with a
    fresh ``mmap`` and unmaps it when freed, so every forward pass faults its pages in again, zeroed
    by the kernel: about 70 000 more page faults per batch of 4 for fanet_r18_sample@512. Kept in
    the heap, the memory is reused from the second batch on (measured 2026-12-01, bench_solution
    --variants, 2-core CPU, in turns: fanet_r18_sample@512 network 0.85x, whole process 0.92x; demo
    UNet and lraspp_mbv3_small@256 whole process 0.90x). The process is short-lived and its peak is
    the same, so nothing is lost by not giving memory back.

    Off when LOWPOWER_KEEP_HEAP=0, when a glibc malloc variable is set (the user's choice wins), or
    where the C library has no ``mallopt`` (not glibc).

    Args:
        environ: a mapping of environment variables (default ``os.environ``).
        libc: the C library (default: the process's own, ``ctypes.CDLL(None)``).
    """
    environ = os.environ if environ is None else environ
    if not switch_on(KEEP_HEAP_ENV, environ) or any(name in environ for name in GLIBC_MALLOC_ENV):
        return False
    try:
        mallopt = (ctypes.CDLL(None) if libc is None else libc).mallopt
    except (OSError, AttributeError):
        return False
    # Both are tried, so the result says whether the whole setting is in force (glibc returns 0 on error).
    applied = [mallopt(M_MMAP_MAX, 0), mallopt(M_TRIM_THRESHOLD, NEVER_TRIM)]
    return all(applied)


def prepare_process(environ=None):
    """Apply the settings above; returns them, for the stats. Call before torch is imported."""
    return {'wait_policy': set_wait_policy(environ), 'keep_heap': keep_freed_memory(environ)}
