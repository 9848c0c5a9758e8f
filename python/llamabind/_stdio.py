"""llama-cpp-python's helpers for what llama.cpp prints: `set_verbose` and
`suppress_stdout_stderr`, at the top level as there."""

from __future__ import annotations

import logging
import os
import sys
from typing import IO, Any


def set_verbose(verbose: bool) -> None:
    """Lets llama.cpp's log through the "llamabind" logger (verbose: everything from DEBUG on)
    or only its errors. The logger still needs a handler to print anywhere (logging.basicConfig())."""
    logging.getLogger("llamabind").setLevel(logging.DEBUG if verbose else logging.ERROR)


class suppress_stdout_stderr:  # noqa: N801 - llama-cpp-python's name
    """While open, whatever is written to standard output and error (file descriptors 1 and 2,
    so C code too) goes to os.devnull. As in llama-cpp-python, `disable=True` (the default)
    turns it off: it then changes nothing.

        with suppress_stdout_stderr(disable=False):
            noisy_native_call()
    """

    def __init__(self, disable: bool = True) -> None:
        self.disable = disable
        self._saved: list[tuple[int, int]] = []
        self._streams: tuple[IO[str], IO[str]] | None = None
        self._null: IO[str] | None = None

    def __enter__(self) -> suppress_stdout_stderr:
        if self.disable:
            return self
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        self._null = open(os.devnull, "w")
        self._streams = (sys.stdout, sys.stderr)
        for fd in (1, 2):
            self._saved.append((fd, os.dup(fd)))
            os.dup2(self._null.fileno(), fd)
        sys.stdout = sys.stderr = self._null
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.disable or self._streams is None or self._null is None:
            return
        sys.stdout, sys.stderr = self._streams
        for fd, saved in self._saved:
            os.dup2(saved, fd)
            os.close(saved)
        self._saved.clear()
        self._null.close()
        self._streams = self._null = None
