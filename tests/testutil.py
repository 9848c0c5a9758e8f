"""Constants shared by test modules (importable; conftest.py files are not meant for imports)."""

import os

# Threads for every context in the tests: the CI machine has 2 cores.
N_THREADS = min(2, os.cpu_count() or 1)
