"""Constants shared by test modules (importable; conftest.py files are not meant for imports)."""

import os

# Threads for every context in the tests: the CI machine has 2 cores. LLAMABIND_TEST_THREADS=1
# keeps a test run usable while other work shares the machine (llama.cpp's worker threads spin
# while they wait, so two busy processes with two threads each slow each other down badly).
N_THREADS = int(os.environ.get("LLAMABIND_TEST_THREADS", "0")) or min(2, os.cpu_count() or 1)
