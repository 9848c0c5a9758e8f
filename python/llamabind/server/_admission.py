"""The bounded queue in front of each model: at most `slots` requests run at once, at most
`max_waiting` more wait for a slot in arrival order, and beyond that a request is refused
at once (HTTP 429) with a guess of when to retry. Used from the event loop's thread only.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque


class QueueFull(Exception):
    """The model's slots and queue are taken; retry after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Admission:
    """Slots and a waiting line for one model. A request first `reserve`s the units it needs
    (one per sequence it will generate), then `acquire`s each before running it and
    `release`s it when the sequence has ended."""

    def __init__(self, slots: int, max_waiting: int) -> None:
        self.slots = slots
        self.max_waiting = max_waiting
        self.running = 0
        self.waiting = 0
        self._line: deque[asyncio.Future[None]] = deque()
        self._mean_run_s = 1.0  # a moving average of how long a sequence holds its slot

    @property
    def capacity(self) -> int:
        return self.slots + self.max_waiting

    def reserve(self, units: int = 1) -> None:
        """Counts `units` waiting sequences in, or raises QueueFull (or ValueError when the
        request alone needs more than the model ever takes)."""
        if units > self.capacity:
            raise ValueError(f"the request needs {units} sequences but this model runs {self.slots} at once and "
                             f"queues {self.max_waiting}")
        if self.running + self.waiting + units > self.capacity:
            raise QueueFull(f"all {self.slots} slots of this model are busy and {self.waiting} requests are "
                            "waiting; retry later", self.retry_after())
        self.waiting += units

    def retry_after(self) -> int:
        """Seconds until a queued request could probably start: whole seconds, 1 to 60."""
        ahead = self.waiting + 1
        return max(1, min(60, math.ceil(self._mean_run_s * ahead / self.slots)))

    async def acquire(self) -> float:
        """Waits (in arrival order) until a slot is free and takes it for one reserved unit;
        returns when it started (time.monotonic()), for `release`. Cancelled while waiting,
        the unit is given up."""
        if self.running < self.slots and not self._line:
            self.waiting -= 1
            self.running += 1
            return time.monotonic()
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._line.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.release(time.monotonic())  # the slot came just as the wait was cancelled
            else:
                if turn in self._line:
                    self._line.remove(turn)
                self.waiting -= 1
            raise
        return time.monotonic()

    def release(self, started: float) -> None:
        """Frees a slot taken by `acquire` at `started` and hands it to the next in line."""
        self._mean_run_s += 0.2 * ((time.monotonic() - started) - self._mean_run_s)
        self.running -= 1
        while self._line and self.running < self.slots:
            turn = self._line.popleft()
            if turn.done():  # cancelled: its waiter gives its unit up itself
                continue
            self.waiting -= 1
            self.running += 1
            turn.set_result(None)

    def give_up(self, units: int) -> None:
        """Returns reserved units that will never be acquired."""
        self.waiting -= units
