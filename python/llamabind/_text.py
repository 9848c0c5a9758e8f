"""Turning generated token pieces into text safely: whole UTF-8 characters only, and stop
sequences that never leak, even when they span several tokens."""

from __future__ import annotations

import codecs
from collections.abc import Sequence


class Utf8Stream:
    """Decodes a stream of token pieces (bytes), holding back an incomplete multi-byte
    character until its last byte arrives. Invalid bytes become U+FFFD."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, piece: bytes) -> str:
        return self._decoder.decode(piece)

    def flush(self) -> str:
        """Ends the stream: bytes still held back are decoded (as U+FFFD if incomplete)."""
        return self._decoder.decode(b"", final=True)

    @property
    def pending(self) -> bool:
        """Whether bytes of an unfinished character are held back."""
        return bool(self._decoder.getstate()[0])


class StopMatcher:
    """Finds stop sequences in streamed text.

    push() returns the text that can be released now and whether a stop sequence was
    found. Text that could be the beginning of a stop sequence is held back until the
    next piece shows whether it is; on a match the stop sequence and everything after it
    are dropped.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = [s for s in stops if s]
        self._held = ""
        self.stopped = False

    def push(self, text: str) -> tuple[str, bool]:
        if self.stopped:
            return "", True
        buf = self._held + text
        if not self._stops:
            self._held = ""
            return buf, False
        first = min((i for i in (buf.find(s) for s in self._stops) if i >= 0), default=-1)
        if first >= 0:
            self._held = ""
            self.stopped = True
            return buf[:first], True
        keep = self._longest_partial(buf)
        self._held = buf[len(buf) - keep:] if keep else ""
        return buf[: len(buf) - keep], False

    def flush(self) -> str:
        """Releases held-back text when generation ends without a stop sequence."""
        out, self._held = self._held, ""
        return out

    def _longest_partial(self, buf: str) -> int:
        """Length of the longest suffix of buf that is a proper prefix of a stop sequence."""
        best = 0
        for stop in self._stops:
            for n in range(min(len(stop) - 1, len(buf)), best, -1):
                if buf.endswith(stop[:n]):
                    best = n
                    break
        return best
