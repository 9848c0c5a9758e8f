"""What /metrics reports, in Prometheus' text format: requests by model, endpoint and status,
prompt and generated tokens, cancelled requests, latency histograms (request duration, time
to first token, time per output token, time waiting for a slot), and the gauges each model's
queue has (running, waiting, slots, loaded). Updated from the event loop's thread only.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

PREFIX = "llamabind"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(pairs: Sequence[tuple[str, str]]) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in pairs) + "}" if pairs else ""


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


class Histogram:
    """Cumulative buckets, sum and count of observations."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self.bounds = tuple(buckets)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def lines(self, name: str, labels: Sequence[tuple[str, str]]) -> Iterable[str]:
        total = 0
        for bound, n in zip((*map(_number, self.bounds), "+Inf"), self.counts):
            total += n
            yield f"{name}_bucket{_labels([*labels, ('le', bound)])} {total}"
        yield f"{name}_sum{_labels(labels)} {_number(self.sum)}"
        yield f"{name}_count{_labels(labels)} {self.count}"


@dataclass(frozen=True)
class ModelGauges:
    """A model's state at the time of a scrape."""

    model: str
    active_slots: int
    queue_depth: int
    slots: int
    queue_limit: int
    model_loaded: int


_COUNTERS = {
    "requests": "HTTP requests answered, by model, endpoint and status code",
    "prompt_tokens": "prompt tokens evaluated (or embedded)",
    "completion_tokens": "tokens generated",
    "cancelled_requests": "requests whose client went away before the answer was complete",
}
_HISTOGRAMS = {
    "request_duration_seconds": ("time from a request's arrival to its last byte", _LATENCY_BUCKETS),
    "time_to_first_token_seconds": ("time from a request's arrival to its first generated text", _LATENCY_BUCKETS),
    "time_per_output_token_seconds": ("mean time between generated tokens, per request", _TOKEN_BUCKETS),
    "queue_wait_seconds": ("time a sequence waited for a slot", _LATENCY_BUCKETS),
}
_GAUGES = {  # the fields of ModelGauges
    "active_slots": "sequences generating now",
    "queue_depth": "sequences waiting for a slot",
    "slots": "sequences a model generates at once",
    "queue_limit": "sequences that may wait before requests are refused with 429",
    "model_loaded": "1 once a model is loaded and serving",
}


class Metrics:
    """The server's counters and histograms."""

    def __init__(self) -> None:
        self._counters: dict[str, dict[tuple[tuple[str, str], ...], float]] = {k: defaultdict(float) for k in _COUNTERS}
        self._histograms: dict[str, dict[tuple[tuple[str, str], ...], Histogram]] = {k: {} for k in _HISTOGRAMS}

    def count(self, name: str, value: float = 1, **labels: str) -> None:
        self._counters[name][tuple(labels.items())] += value

    def observe(self, name: str, value: float, **labels: str) -> None:
        key = tuple(labels.items())
        histogram = self._histograms[name].get(key)
        if histogram is None:
            histogram = self._histograms[name][key] = Histogram(_HISTOGRAMS[name][1])
        histogram.observe(value)

    def request(self, model: str, endpoint: str, status: int, duration_s: float) -> None:
        """One answered request."""
        self.count("requests", model=model, endpoint=endpoint, status=str(status))
        self.observe("request_duration_seconds", duration_s, model=model, endpoint=endpoint)

    def tokens(self, model: str, prompt: int, completion: int) -> None:
        if prompt:
            self.count("prompt_tokens", prompt, model=model)
        if completion:
            self.count("completion_tokens", completion, model=model)

    def render(self, gauges: Sequence[ModelGauges]) -> str:
        """The Prometheus text exposition (format 0.0.4)."""
        out: list[str] = []
        for name, help_text in _COUNTERS.items():
            full = f"{PREFIX}_{name}_total"
            out += [f"# HELP {full} {help_text}", f"# TYPE {full} counter"]
            out += [f"{full}{_labels(key)} {_number(v)}" for key, v in self._counters[name].items()]
        for name, (help_text, _) in _HISTOGRAMS.items():
            full = f"{PREFIX}_{name}"
            out += [f"# HELP {full} {help_text}", f"# TYPE {full} histogram"]
            for key, histogram in self._histograms[name].items():
                out += histogram.lines(full, key)
        for name, help_text in _GAUGES.items():
            full = f"{PREFIX}_{name}"
            out += [f"# HELP {full} {help_text}", f"# TYPE {full} gauge"]
            out += [f"{full}{_labels([('model', g.model)])} {getattr(g, name)}" for g in gauges]
        return "\n".join(out) + "\n"
