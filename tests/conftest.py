"""Test-session settings.

Under pytest-xdist every worker is a process of its own: with torch's default of one
thread per core, two workers on two cores oversubscribe the machine and spin-wait
each other out (10x slower). Each worker therefore uses one thread.
"""

import os

if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # inherited by the subprocesses tests start
    import torch

    torch.set_num_threads(1)
