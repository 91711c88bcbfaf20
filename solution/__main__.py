"""Entry point of solution.pyz: ``python3.6 solution.pyz -i IMG_DIR -o OUT_DIR``."""
import time

START = time.time()  # the 'wall' timer counts from here, before torch is imported

import os  # noqa: E402
import sys  # noqa: E402

# Idle OpenMP threads sleep instead of spinning. Measured 2026-12-01 on the 2-core CPU
# (bench_solution --variants, 50 images, 5 runs each in turns): idle, ACTIVE ran the demo UNet's
# network at 0.80x but the whole process at 0.93x, and lraspp_mbv3_small@256's at 0.99x / 1.06x;
# with one core busy in another process, ACTIVE took 17x the wall time (76 s against 4.4 s). The
# small idle gain does not pay for that risk. CUDA runs leave the CPU threads idle and were not
# measured. Read by the OpenMP runtime when torch loads, so set before the import.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

from solution.main import main  # noqa: E402


def leave(status):
    """Flush stdout and stderr, then end the process at once with ``status``.

    Every mask is written and closed by now (the writer pool was joined), so the interpreter's
    teardown (freeing torch's modules and tensors, joining OpenMP threads: about 0.8 s measured on a
    2-core CPU) would only delay the exit.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing more can reach it
            pass
    os._exit(status)


if __name__ == '__main__':
    leave(main(start=START))
