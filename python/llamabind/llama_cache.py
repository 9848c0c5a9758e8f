"""Caches of saved model states, keyed by the token sequence that produced them.

The interface is llama-cpp-python's ``llama_cpp.llama_cache``: give a cache to
``Llama.set_cache`` and each completion stores the context's state under its prompt plus
completion tokens; a later prompt that shares a prefix with a stored sequence loads that
state instead of evaluating the shared tokens again::

    from llamabind.llama_cache import LlamaRAMCache

    cache = LlamaRAMCache(capacity_bytes=1 << 30)
    cache[(1, 2, 3, 4)] = state      # a LlamaState from Llama.save_state()
    (1, 2, 3, 9) in cache            # True: shares the prefix (1, 2, 3)
    cache[(1, 2, 3, 9)] is state     # the entry sharing the longest prefix

A lookup finds the stored key with the longest common prefix with the requested tokens
(at least one token); the caller decides whether loading it beats what the context holds.
Neither cache is safe for concurrent use from several threads.

A cache is always true in a boolean context, even when empty (it defines no ``__len__``),
as ``Llama`` tests ``if self.cache:`` to mean "a cache is set".
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np
import numpy.typing as npt

from . import _state

__all__ = ["BaseLlamaCache", "LlamaCache", "LlamaDiskCache", "LlamaRAMCache"]

_Key = Tuple[int, ...]


def _as_key(tokens: Sequence[int]) -> _Key:
    # Plain ints, so numpy token arrays and lists find the same entries.
    return tuple(int(t) for t in tokens)


def _common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _longest_prefix_key(keys: Iterable[_Key], key: _Key) -> Optional[_Key]:
    # Ties go to the first key in iteration order (least recently used), as in llama-cpp-python.
    best_len = 0
    best: Optional[_Key] = None
    for k in keys:
        n = _common_prefix_len(k, key)
        if n > best_len:
            best_len = n
            best = k
    return best


class BaseLlamaCache(ABC):
    """Base of the state caches: a mapping from token sequences to ``LlamaState``.

    ``capacity_bytes`` bounds :attr:`cache_size`; storing an entry evicts the least
    recently used ones until the cache fits (possibly the new entry itself, when it alone
    is larger than the capacity).
    """

    def __init__(self, capacity_bytes: int = (2 << 30)) -> None:
        self.capacity_bytes = capacity_bytes

    @property
    @abstractmethod
    def cache_size(self) -> int:
        """Bytes the cache holds, as counted against ``capacity_bytes``."""
        raise NotImplementedError

    def _find_longest_prefix_key(self, key: _Key) -> Optional[_Key]:
        """The stored key sharing the longest common prefix with ``key``, or ``None`` when
        none shares a first token. Subclasses override it."""
        return None

    @abstractmethod
    def __getitem__(self, key: Sequence[int]) -> _state.LlamaState:
        """The state stored under the key sharing the longest prefix with ``key``;
        ``KeyError`` when no stored key shares a first token with it."""
        raise NotImplementedError

    @abstractmethod
    def __contains__(self, key: Sequence[int]) -> bool:
        """Whether a stored key shares at least its first token with ``key``."""
        raise NotImplementedError

    @abstractmethod
    def __setitem__(self, key: Sequence[int], value: _state.LlamaState) -> None:
        """Store ``value`` under exactly ``key``, replacing any entry with that key."""
        raise NotImplementedError


class LlamaRAMCache(BaseLlamaCache):
    """States kept in memory, least recently used evicted first.

    Sizes are counted by each state's ``llama_state_size``. Lookups return the stored
    object itself, not a copy.

    Example::

        cache = LlamaRAMCache(capacity_bytes=512 << 20)
        llm.set_cache(cache)
    """

    def __init__(self, capacity_bytes: int = (2 << 30)) -> None:
        super().__init__(capacity_bytes)
        # Least recently used first.
        self.cache_state: OrderedDict[_Key, _state.LlamaState] = OrderedDict()

    @property
    def cache_size(self) -> int:
        """The sum of the stored states' ``llama_state_size``."""
        return sum(state.llama_state_size for state in self.cache_state.values())

    def _find_longest_prefix_key(self, key: _Key) -> Optional[_Key]:
        return _longest_prefix_key(self.cache_state.keys(), key)

    def __getitem__(self, key: Sequence[int]) -> _state.LlamaState:
        found = self._find_longest_prefix_key(_as_key(key))
        if found is None:
            raise KeyError("no cached state shares a prefix with the key")
        self.cache_state.move_to_end(found)
        return self.cache_state[found]

    def __contains__(self, key: Sequence[int]) -> bool:
        return self._find_longest_prefix_key(_as_key(key)) is not None

    def __setitem__(self, key: Sequence[int], value: _state.LlamaState) -> None:
        k = _as_key(key)
        self.cache_state.pop(k, None)
        self.cache_state[k] = value
        total = self.cache_size
        while total > self.capacity_bytes and self.cache_state:
            _, evicted = self.cache_state.popitem(last=False)
            total -= evicted.llama_state_size


LlamaCache = LlamaRAMCache
"""The name llama-cpp-python kept for :class:`LlamaRAMCache`."""


_FORMAT_VERSION = 1
_ZIP_MAGIC = b"PK\x03\x04"


@dataclass
class _Entry:
    path: Path
    size: int  # bytes on disk


def _file_name(key: _Key) -> str:
    digest = hashlib.sha256(np.asarray(key, dtype="<i8").tobytes()).hexdigest()
    return f"{digest}.npz"


def _read_npz(path: Path, names: Sequence[str]) -> Optional[dict[str, npt.NDArray[np.generic]]]:
    """The named arrays of an .npz file, or ``None`` when it cannot be read as one.

    Cache files are untrusted input (another process, a crash mid-write, a user): whatever
    is wrong with one makes it a miss, never an error, and pickled objects are refused.
    """
    try:
        with open(path, "rb") as f:
            # np.load would read a bare .npy whole; only a zip is an .npz.
            if f.read(len(_ZIP_MAGIC)) != _ZIP_MAGIC:
                return None
            f.seek(0)
            with np.load(f, allow_pickle=False) as npz:
                return {name: np.asarray(npz[name]) for name in names}
    except Exception:  # any unreadable file is a miss (see the docstring)
        return None


def _is_int_array(a: npt.NDArray[np.generic], ndim: int) -> bool:
    return a.ndim == ndim and a.dtype.kind in "iu"


class LlamaDiskCache(BaseLlamaCache):
    """States kept on disk, one ``.npz`` file per entry in ``cache_dir``.

    Each file holds the state's arrays (``input_ids``, ``scores``), its raw
    ``llama_state`` bytes, its scalars and its key; nothing is pickled, and files are
    loaded with ``allow_pickle=False``. The index of keys is rebuilt by scanning
    ``cache_dir`` when the cache is created, so entries persist across processes; files
    that are unreadable, truncated or not written by this class are ignored (and never
    deleted). Sizes are counted in bytes on disk; reading an entry touches its file, and
    the least recently used files (by modification time) are deleted first.

    Example::

        cache = LlamaDiskCache("~/.cache/myapp/llama_states", capacity_bytes=4 << 30)
        llm.set_cache(cache)
    """

    def __init__(
        self,
        cache_dir: Union[str, os.PathLike[str]] = ".cache/llama_cache",
        capacity_bytes: int = (2 << 30),
    ) -> None:
        super().__init__(capacity_bytes)
        self.cache_dir = Path(cache_dir).expanduser()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        # Least recently used first; seeded from the files' modification times.
        self._index: OrderedDict[_Key, _Entry] = OrderedDict()
        self._scan()

    def _scan(self) -> None:
        found: list[tuple[int, str, _Key, _Entry]] = []
        for path in self.cache_dir.glob("*.npz"):
            arrays = _read_npz(path, ("key",))
            if arrays is None or not _is_int_array(arrays["key"], 1):
                continue
            key = _as_key(arrays["key"].tolist())
            if path.name != _file_name(key):
                continue
            try:
                st = path.stat()
            except OSError:
                continue
            found.append((st.st_mtime_ns, path.name, key, _Entry(path, st.st_size)))
        found.sort(key=lambda item: (item[0], item[1]))
        self._index = OrderedDict((key, entry) for _, _, key, entry in found)

    @property
    def cache_size(self) -> int:
        """Bytes on disk of the indexed cache files."""
        return sum(entry.size for entry in self._index.values())

    def _find_longest_prefix_key(self, key: _Key) -> Optional[_Key]:
        return _longest_prefix_key(self._index.keys(), key)

    def _load(self, key: _Key, path: Path) -> Optional[_state.LlamaState]:
        arrays = _read_npz(
            path,
            ("format_version", "key", "input_ids", "scores", "llama_state",
             "n_tokens", "llama_state_size", "seed"),
        )
        if arrays is None:
            return None
        scalars = ("format_version", "n_tokens", "llama_state_size", "seed")
        if not all(_is_int_array(arrays[name], 0) for name in scalars):
            return None
        stored_key, input_ids = arrays["key"], arrays["input_ids"]
        scores, llama_state = arrays["scores"], arrays["llama_state"]
        if (
            int(arrays["format_version"]) != _FORMAT_VERSION
            or not _is_int_array(stored_key, 1)
            or _as_key(stored_key.tolist()) != key
            or not _is_int_array(input_ids, 1)
            or scores.dtype.kind != "f"
            or llama_state.dtype != np.uint8
            or llama_state.ndim != 1
        ):
            return None
        return _state.LlamaState(
            input_ids=input_ids.astype(np.intc, copy=False),
            scores=scores.astype(np.float32, copy=False),
            n_tokens=int(arrays["n_tokens"]),
            llama_state=llama_state.tobytes(),
            llama_state_size=int(arrays["llama_state_size"]),
            seed=int(arrays["seed"]),
        )

    def __getitem__(self, key: Sequence[int]) -> _state.LlamaState:
        k = _as_key(key)
        while True:
            found = self._find_longest_prefix_key(k)
            if found is None:
                raise KeyError("no cached state shares a prefix with the key")
            entry = self._index[found]
            state = self._load(found, entry.path)
            if state is None:
                # Deleted or damaged since the scan: forget it and try the next best.
                del self._index[found]
                continue
            self._index.move_to_end(found)
            with contextlib.suppress(OSError):
                os.utime(entry.path)
            return state

    def __contains__(self, key: Sequence[int]) -> bool:
        return self._find_longest_prefix_key(_as_key(key)) is not None

    def __setitem__(self, key: Sequence[int], value: _state.LlamaState) -> None:
        k = _as_key(key)
        input_ids, scores = np.asarray(value.input_ids), np.asarray(value.scores)
        if input_ids.dtype.kind not in "iu" or scores.dtype.kind != "f":
            raise TypeError(
                f"[LlamaDiskCache] input_ids must be integers and scores floats, "
                f"got {input_ids.dtype} and {scores.dtype}"
            )
        path = self.cache_dir / _file_name(k)
        # Write beside the target and rename, so readers never see a partial file.
        fd, tmp = tempfile.mkstemp(dir=self.cache_dir, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(
                    f,
                    format_version=np.int64(_FORMAT_VERSION),
                    key=np.asarray(k, dtype=np.int64),
                    input_ids=input_ids.astype(np.intc, copy=False),
                    scores=scores.astype(np.float32, copy=False),
                    llama_state=np.frombuffer(value.llama_state, dtype=np.uint8),
                    n_tokens=np.int64(value.n_tokens),
                    llama_state_size=np.int64(value.llama_state_size),
                    seed=np.int64(value.seed),
                )
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self._index.pop(k, None)
        self._index[k] = _Entry(path, path.stat().st_size)
        self._evict()

    def _evict(self) -> None:
        total = self.cache_size
        while total > self.capacity_bytes and self._index:
            _, entry = self._index.popitem(last=False)
            total -= entry.size
            with contextlib.suppress(OSError):
                entry.path.unlink()
