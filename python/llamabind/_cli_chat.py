"""The interactive side of ``llamabind chat``: the conversation loop, one streamed answer at a
time, Ctrl-C that stops an answer rather than the session, and reading the prompt on a terminal.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from ._cli_options import PROG, max_tokens
from ._core import AbortedError


class _Interrupt:
    """While active, Ctrl-C (SIGINT) cancels the running generation instead of raising
    KeyboardInterrupt, so a chat answer stops and the session goes on."""

    def __init__(self, llm: Any) -> None:
        self.llm = llm
        self.hit = False
        self._previous: Any = None

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self.hit = True
        self.llm.cancel()

    def __enter__(self) -> _Interrupt:
        self.hit = False
        # Only on the main thread (Python's rule), and not where SIGINT is ignored (started
        # with nohup-like settings): that choice is the caller's.
        if threading.current_thread() is threading.main_thread() and \
                signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


def _read_prompt(prompt: str) -> str:
    """input() for a plain POSIX terminal (no readline) that also notices a Ctrl-C typed just
    as the prompt appears. CPython's input() only sees SIGINT when it interrupts the blocking
    read, so one that lands between the prompt and the read waits for the next line; here the
    wait is a select() that wakes up to let Python run its signal handlers."""
    sys.stdout.write(prompt)
    sys.stdout.flush()
    fd = sys.stdin.fileno()
    while not select.select([fd], [], [], 0.2)[0]:
        pass
    # A terminal in canonical mode hands over one line per read, so nothing is left behind
    # in Python's buffer where select() cannot see it.
    line = sys.stdin.readline()
    if not line:
        raise EOFError
    return line.rstrip("\n")


_CHAT_HELP = "/reset clears the history, /exit (or Ctrl-D) leaves, Ctrl-C stops an answer, /help shows this"


def _chat_answer(llm: Any, messages: list[dict[str, str]], args: argparse.Namespace, params: Any,
                 grammar: Any, out: TextIO) -> tuple[str, bool]:
    """Streams one answer to `out`; returns its text and whether Ctrl-C cut it short."""
    parts: list[str] = []
    with _Interrupt(llm) as interrupt:
        stream: Iterator[dict[str, Any]] = llm.create_chat_completion(
            messages, max_tokens=max_tokens(args), stop=args.stop, stream=True, sampling=params, grammar=grammar)
        try:
            for chunk in stream:
                if interrupt.hit:
                    break
                text = chunk["choices"][0]["delta"].get("content") or ""
                if text:
                    parts.append(text)
                    out.write(text)
                    out.flush()
        except AbortedError:
            if not interrupt.hit:
                raise
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        return "".join(parts), interrupt.hit


def chat(llm: Any, args: argparse.Namespace, params: Any, grammar: Any) -> None:
    """The chat session of ``llamabind chat`` with `llm`: messages from stdin (a line each when
    it is not a terminal), answers streamed to stdout, notes to stderr."""
    interactive = sys.stdin.isatty()
    out, note = sys.stdout, sys.stderr
    base: list[dict[str, str]] = [{"role": "system", "content": args.system}] if args.system else []
    messages = list(base)
    read_line: Callable[[str], str] = input
    if interactive:
        if os.environ.get("TERM", "dumb") != "dumb":
            # Imported here: optional (not on every platform), and only a capable terminal
            # wants its line editing and history for input().
            try:
                import readline  # noqa: F401
            except ImportError:
                pass
        if "readline" not in sys.modules and os.name == "posix":
            read_line = _read_prompt
        name = Path(llm.model_path).name
        note.write(f"{PROG} chat with {name}. {_CHAT_HELP}.\n")
        note.flush()
    while True:
        try:
            if interactive:
                line = read_line("> ")
            else:
                line = sys.stdin.readline()
                if not line:
                    break
        except EOFError:
            if interactive:
                out.write("\n")
            break
        except KeyboardInterrupt:
            out.write("\n")
            note.write("(Ctrl-C stops an answer; /exit or Ctrl-D leaves)\n")
            note.flush()
            continue
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            break
        if text == "/reset":
            messages = list(base)
            note.write("(history cleared)\n")
            note.flush()
            continue
        if text == "/help":
            note.write(_CHAT_HELP + "\n")
            note.flush()
            continue
        messages.append({"role": "user", "content": line.rstrip("\r\n")})
        try:
            answer, interrupted = _chat_answer(llm, messages, args, params, grammar, out)
        except ValueError as exc:
            if "exceed context window" not in str(exc):
                raise
            messages.pop()
            out.write("\n")
            note.write(f"{PROG}: the conversation no longer fits the context (--n-ctx {llm.n_ctx()}); "
                       "/reset starts over\n")
            note.flush()
            continue
        out.write("\n")
        out.flush()
        if interrupted:
            note.write("[interrupted]\n")
            note.flush()
        messages.append({"role": "assistant", "content": answer})
