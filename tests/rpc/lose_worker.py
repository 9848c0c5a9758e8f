"""A client for test_rpc_failures.py, in its own process (so an abort or a hang cannot take the
test run with it): generates over RPC workers until one goes away, then reports, one JSON line
per event, what the running call raised, what a later call raises, how long close() takes,
and, after a line on stdin (the test restarted the worker), what a new Llama over the same
servers generates.

    python lose_worker.py MODEL HOST:PORT,HOST:PORT THREADS
"""

from __future__ import annotations

import json
import sys
import time

import llamabind as lb


def report(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def error(exc: BaseException) -> dict[str, object]:
    return {"type": type(exc).__name__, "message": str(exc), "endpoint": getattr(exc, "endpoint", None),
            "at": time.time(), "is_llama_error": isinstance(exc, lb.LlamaError)}


def main() -> int:
    model, servers, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    kw = dict(rpc_servers=servers, n_gpu_layers=-1, n_ctx=512, n_threads=threads, n_threads_batch=threads,
              verbose=False)
    llm = lb.Llama(model, **kw)
    started = False
    try:
        while True:
            for _ in llm.create_completion("Once upon a time", max_tokens=400, temperature=0.0, stream=True):
                if not started:
                    report(event="generating")
                    started = True
    except Exception as exc:  # what the running call raised, whatever it is
        report(event="raised", **error(exc))
    try:
        llm.create_completion("Hello", max_tokens=2)
        report(event="again", type=None)
    except Exception as exc:
        report(event="again", **error(exc))
    start = time.monotonic()
    llm.close()
    report(event="closed", seconds=time.monotonic() - start)

    sys.stdin.readline()
    with lb.Llama(model, **kw) as again:
        out = again.create_completion("The capital of France is", max_tokens=12, temperature=0.0)
    report(event="reloaded", text=out["choices"][0]["text"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
