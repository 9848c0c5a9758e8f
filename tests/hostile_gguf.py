"""Malformed GGUF files derived from real models, for the hostile-file tests.

Every case starts from a real file (the tiny random-weight llama of ``tiny_model.py`` or
SmolLM2) and breaks exactly one thing: it cuts the file at a structural boundary, or
rewrites the header with one field wrong (magic, version, counts, a length, a type code,
a key, a tensor info, a vocabulary array, a special-token id, a hyperparameter). The
header is parsed and re-encoded here, independently of gguf-py, so that impossible values
(lengths past the end of the file, type code 255, 2**63 tensors) can be written.

Each case has a stable id, a description and what loading it must do:

- ``error``: every load (``Model``, ``Llama``, ``Model(vocab_only=True)``) raises a
  ``LlamaError`` that names the file;
- ``error_full``: full loads raise; a vocab-only load may succeed (the defect is in the
  tensors or hyperparameters, which a vocab-only load never reads);
- ``either``: the file is odd but usable: loading may succeed or raise cleanly;
- ``load``: every load succeeds (controls: the re-encoded but unmodified file).

Files are written on demand (``Case.write``), one at a time, because most are full-size
copies; SmolLM2 copies keep the real header but leave the data section a sparse hole.

``python tests/hostile_gguf.py --results R --workdir D --base tiny=P --base smollm2=P ID...``
is the child process of ``tests/bindings/test_hostile_files.py``: it loads each case and
appends one JSON line per case to ``R`` (a ``start`` line first, so a crash is attributable).
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

# GGUF value types (gguf.h enum gguf_type).
UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, INT64, FLOAT64 = range(13)
SCALAR_FMT = {
    UINT8: "<B", INT8: "<b", UINT16: "<H", INT16: "<h", UINT32: "<I", INT32: "<i", FLOAT32: "<f",
    BOOL: "<?", UINT64: "<Q", INT64: "<q", FLOAT64: "<d",
}
SCALAR_SIZE = {t: struct.calcsize(f) for t, f in SCALAR_FMT.items()}

# ggml types used below: (block size, bytes per block).
GGML_F32, GGML_F16, GGML_Q4_0, GGML_Q4_1, GGML_Q4_K = 0, 1, 2, 3, 12
GGML_TYPE_SIZE = {GGML_F32: (1, 4), GGML_F16: (1, 2), GGML_Q4_0: (32, 18), GGML_Q4_1: (32, 20), GGML_Q4_K: (256, 144),
                  6: (32, 22), 7: (32, 24), 8: (32, 34), 10: (256, 84), 11: (256, 110), 13: (256, 176),
                  14: (256, 210), 30: (1, 2)}

EXPECTS = ("error", "error_full", "either", "load")


# ---------------------------------------------------------------------------- encoding


def u32(v: int) -> bytes:
    return struct.pack("<I", v & 0xFFFFFFFF)


def u64(v: int) -> bytes:
    return struct.pack("<Q", v & 0xFFFFFFFFFFFFFFFF)


def gstr(b: bytes | str) -> bytes:
    if isinstance(b, str):
        b = b.encode()
    return u64(len(b)) + b


def scalar_payload(vtype: int, value: object) -> bytes:
    if vtype == STRING:
        return gstr(value)  # type: ignore[arg-type]
    fmt = SCALAR_FMT[vtype]
    if vtype in (UINT8, UINT16, UINT32, UINT64):
        value = int(value) & ((1 << (8 * SCALAR_SIZE[vtype])) - 1)  # type: ignore[call-overload]
    return struct.pack(fmt, value)


def array_payload(sub_type: int, items: list[object] | tuple[object, ...]) -> bytes:
    body = b"".join(scalar_payload(sub_type, v) for v in items)
    return u32(sub_type) + u64(len(items)) + body


@dataclass
class KV:
    """One key-value pair: ``payload`` is everything after the type field. The offsets
    locate it in the parsed source file (-1 for pairs made here)."""

    key: bytes
    vtype: int
    payload: bytes
    start: int = -1
    type_off: int = -1
    end: int = -1

    @staticmethod
    def make(key: str | bytes, vtype: int, value: object, sub_type: int | None = None) -> KV:
        k = key.encode() if isinstance(key, str) else key
        if vtype == ARRAY:
            assert sub_type is not None
            return KV(k, ARRAY, array_payload(sub_type, value))  # type: ignore[arg-type]
        return KV(k, vtype, scalar_payload(vtype, value))

    def encode(self) -> bytes:
        return gstr(self.key) + u32(self.vtype) + self.payload

    @property
    def name(self) -> str:
        return self.key.decode("utf-8", "replace")

    @property
    def sub_type(self) -> int:
        return struct.unpack_from("<I", self.payload, 0)[0]

    @property
    def count(self) -> int:
        return struct.unpack_from("<Q", self.payload, 4)[0]

    def value(self) -> object:
        if self.vtype == STRING:
            return self.payload[8:]
        return struct.unpack_from(SCALAR_FMT[self.vtype], self.payload, 0)[0]

    def items(self) -> list[object]:
        """Elements of an array (bytes for strings)."""
        sub, n = self.sub_type, self.count
        out: list[object] = []
        pos = 12
        if sub == STRING:
            p = self.payload
            for _ in range(n):
                (ln,) = struct.unpack_from("<Q", p, pos)
                out.append(p[pos + 8 : pos + 8 + ln])
                pos += 8 + ln
            return out
        fmt = "<%d%s" % (n, SCALAR_FMT[sub][1])
        return list(struct.unpack_from(fmt, self.payload, pos))


@dataclass
class TensorInfo:
    name: bytes
    dims: list[int]
    ggml_type: int
    offset: int
    n_dims: int | None = None  # written instead of len(dims) when set
    name_len: int | None = None  # written instead of len(name) when set
    start: int = -1
    end: int = -1

    def encode(self) -> bytes:
        n_dims = len(self.dims) if self.n_dims is None else self.n_dims
        name = gstr(self.name) if self.name_len is None else u64(self.name_len) + self.name
        return (name + u32(n_dims) + b"".join(u64(d) for d in self.dims) + u32(self.ggml_type)
                + u64(self.offset))

    def nbytes(self) -> int:
        blck, size = GGML_TYPE_SIZE[self.ggml_type]
        n = 1
        for d in self.dims:
            n *= d
        return n // blck * size


def find_kv(kvs: list[KV], key: str) -> int:
    """Index of the pair `key` in kvs, -1 if there is none."""
    k = key.encode()
    return next((i for i, kv in enumerate(kvs) if kv.key == k), -1)


def kv_of(kvs: list[KV], key: str) -> KV:
    """The pair `key` in kvs; KeyError if there is none."""
    i = find_kv(kvs, key)
    if i < 0:
        raise KeyError(key)
    return kvs[i]


def pad(n: int, alignment: int) -> int:
    return (n + alignment - 1) // alignment * alignment


# ---------------------------------------------------------------------------- parsing


@dataclass
class Base:
    """A parsed real GGUF file: its header fields with their file offsets."""

    path: Path
    size: int
    version: int
    kvs: list[KV]
    tensors: list[TensorInfo]
    alignment: int
    header_end: int  # end of the last tensor info
    data_offset: int

    def kv(self, key: str) -> KV:
        return kv_of(self.kvs, key)

    def image(self) -> Image:
        return Image(self, self.version, [dataclasses.replace(kv) for kv in self.kvs],
                     [dataclasses.replace(t, dims=list(t.dims)) for t in self.tensors])


def parse(path: str | os.PathLike[str]) -> Base:
    """Parses the header of a GGUF file (which must be well-formed)."""
    path = Path(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        buf = f.read(min(size, 64 << 20))
    pos = 0

    def take(fmt: str) -> int:
        nonlocal pos
        (v,) = struct.unpack_from(fmt, buf, pos)
        pos += struct.calcsize(fmt)
        return v

    def take_str() -> bytes:
        nonlocal pos
        n = take("<Q")
        s = buf[pos : pos + n]
        pos += n
        return s

    if buf[:4] != b"GGUF":
        raise ValueError(f"{path} is not a GGUF file")
    pos = 4
    version = take("<I")
    n_tensors = take("<Q")
    n_kv = take("<Q")
    kvs = []
    for _ in range(n_kv):
        start = pos
        key = take_str()
        type_off = pos
        vtype = take("<I")
        value_off = pos
        if vtype == ARRAY:
            sub = take("<I")
            n = take("<Q")
            if sub == STRING:
                for _ in range(n):
                    ln = take("<Q")
                    pos += ln
            else:
                pos += n * SCALAR_SIZE[sub]
        elif vtype == STRING:
            take_str()
        else:
            pos += SCALAR_SIZE[vtype]
        kvs.append(KV(key, vtype, bytes(buf[value_off:pos]), start, type_off, pos))
    tensors = []
    for _ in range(n_tensors):
        start = pos
        name = take_str()
        nd = take("<I")
        dims = [take("<Q") for _ in range(nd)]
        gt = take("<I")
        off = take("<Q")
        tensors.append(TensorInfo(name, dims, gt, off, start=start, end=pos))
    alignment = 32
    for kv in kvs:
        if kv.key == b"general.alignment":
            alignment = int(kv.value())  # type: ignore[call-overload]
    return Base(path, size, version, kvs, tensors, alignment, pos, pad(pos, alignment) if n_tensors else pos)


# ---------------------------------------------------------------------------- building


@dataclass
class Image:
    """A GGUF file to write: header fields (freely editable) + the base's data section."""

    base: Base
    version: int
    kvs: list[KV]
    tensors: list[TensorInfo]
    magic: bytes = b"GGUF"
    n_kv: int | None = None  # count fields written instead of the real counts
    n_tensors: int | None = None
    alignment: int | None = None  # padding used when writing (default: the base's)
    data: bool = True  # append the base's data section
    zero_data: bool = False  # data section as a sparse hole of the same size
    tail: bytes = b""

    def find(self, key: str) -> int:
        return find_kv(self.kvs, key)

    def get(self, key: str) -> KV:
        return kv_of(self.kvs, key)

    def set(self, key: str, vtype: int, value: object, sub_type: int | None = None) -> Image:
        """Replaces the pair in place, or appends it."""
        kv = KV.make(key, vtype, value, sub_type)
        i = self.find(key)
        if i >= 0:
            self.kvs[i] = kv
        else:
            self.kvs.append(kv)
        return self

    def remove(self, key: str) -> Image:
        i = self.find(key)
        if i < 0:
            raise KeyError(key)
        del self.kvs[i]
        return self

    def tensor(self, name: str) -> TensorInfo:
        for t in self.tensors:
            if t.name == name.encode():
                return t
        raise KeyError(name)

    def relayout(self) -> Image:
        """Recomputes every tensor offset as gguf.cpp expects (padded running sum)."""
        a = self.alignment or self.base.alignment
        off = 0
        for t in self.tensors:
            t.offset = off
            off += pad(t.nbytes(), a)
        return self

    def header(self) -> bytes:
        n_t = len(self.tensors) if self.n_tensors is None else self.n_tensors
        n_kv = len(self.kvs) if self.n_kv is None else self.n_kv
        parts = [self.magic, u32(self.version), u64(n_t), u64(n_kv)]
        parts += [kv.encode() for kv in self.kvs]
        parts += [t.encode() for t in self.tensors]
        head = b"".join(parts)
        if self.data and self.tensors:
            head += b"\0" * (pad(len(head), self.alignment or self.base.alignment) - len(head))
        return head

    def write(self, path: Path) -> None:
        with open(path, "wb") as out:
            out.write(self.header())
            if self.data:
                n = self.base.size - self.base.data_offset
                if self.zero_data:
                    out.truncate(out.tell() + n)
                    out.seek(0, os.SEEK_END)
                else:
                    _copy_range(self.base.path, self.base.data_offset, n, out)
            out.write(self.tail)


@dataclass
class Prefix:
    """The first ``n`` bytes of a file."""

    base: Base
    n: int

    def write(self, path: Path) -> None:
        with open(path, "wb") as out:
            _copy_range(self.base.path, 0, self.n, out)


@dataclass
class Raw:
    data: bytes

    def write(self, path: Path) -> None:
        path.write_bytes(self.data)


def _copy_range(src: Path, offset: int, n: int, out) -> None:  # noqa: ANN001
    out.flush()
    with open(src, "rb") as f:
        copied = 0
        if hasattr(os, "copy_file_range"):
            try:
                while copied < n:
                    got = os.copy_file_range(f.fileno(), out.fileno(), n - copied, offset + copied)
                    if got == 0:
                        break
                    copied += got
                out.seek(0, os.SEEK_END)
                return
            except OSError:
                out.seek(0, os.SEEK_END)
        f.seek(offset + copied)
        while copied < n:
            chunk = f.read(min(1 << 20, n - copied))
            if not chunk:
                break
            out.write(chunk)
            copied += len(chunk)


# ---------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Case:
    id: str
    base: str  # "tiny" or "smollm2"
    description: str
    expect: str
    make: Callable[[Base], Image | Prefix | Raw] = field(compare=False, repr=False)

    def write(self, bases: dict[str, Base], path: Path) -> Path:
        self.make(bases[self.base]).write(path)
        return path


_CASES: list[Case] = []


def _case(cid: str, base: str, expect: str, description: str, make: Callable[[Base], Image | Prefix | Raw]) -> None:
    assert expect in EXPECTS, expect
    _CASES.append(Case(cid, base, description, expect, make))


def _img(fn: Callable[[Image], object], **kw: object) -> Callable[[Base], Image]:
    """A case maker that edits a copy of the base's header with ``fn``."""

    def make(b: Base) -> Image:
        img = b.image()
        for k, v in kw.items():
            setattr(img, k, v)
        fn(img)
        return img

    return make


def _trunc(at: Callable[[Base], int]) -> Callable[[Base], Prefix]:
    return lambda b: Prefix(b, at(b))


# --- truncation at every structural boundary ------------------------------------------

def _header_truncations() -> None:
    points = {
        "empty": (0, "an empty file"),
        "magic1": (1, "1 byte: inside the magic"),
        "magic2": (2, "2 bytes: inside the magic"),
        "magic3": (3, "3 bytes: inside the magic"),
        "magic": (4, "the magic only"),
        "version_inside": (6, "cut inside the version"),
        "version": (8, "magic and version only"),
        "n_tensors_inside": (12, "cut inside the tensor count"),
        "n_tensors": (16, "cut after the tensor count"),
        "n_kv_inside": (20, "cut inside the key-value count"),
        "n_kv": (24, "the fixed header only"),
    }
    for name, (n, desc) in points.items():
        _case(f"trunc.header.{name}", "tiny", "error", desc, _trunc(lambda b, n=n: n))


# (label, key) of the pairs cut at each of their boundaries
_TRUNC_KVS_TINY = [
    ("first", "general.architecture"),
    ("name", "general.name"),
    ("u32", "llama.context_length"),
    ("f32", "llama.attention.layer_norm_rms_epsilon"),
    ("model", "tokenizer.ggml.model"),
    ("tokens", "tokenizer.ggml.tokens"),
    ("scores", "tokenizer.ggml.scores"),
    ("token_type", "tokenizer.ggml.token_type"),
    ("bool", "tokenizer.ggml.add_bos_token"),
    ("last", None),
]


def _kv_points(kv: KV) -> dict[str, int]:
    s, t = kv.start, kv.type_off
    klen = len(kv.key)
    pts = {
        "key_len_inside": s + 3,
        "key_len": s + 8,
        "key_inside": s + 8 + klen // 2,
        "key": t,
        "type_inside": t + 2,
        "type": t + 4,
    }
    v = t + 4
    if kv.vtype == STRING:
        pts.update(str_len_inside=v + 4, str_len=v + 8, str_inside=v + 8 + (len(kv.payload) - 8) // 2)
    elif kv.vtype == ARRAY:
        pts.update(arr_type_inside=v + 2, arr_type=v + 4, arr_n_inside=v + 8, arr_n=v + 12)
        first = v + 12
        pts["first_elem_inside"] = first + (4 if kv.sub_type == STRING else 1)
        pts["middle"] = v + len(kv.payload) // 2
    elif SCALAR_SIZE[kv.vtype] > 1:
        pts["value_inside"] = v + SCALAR_SIZE[kv.vtype] // 2
    pts["last_byte_missing"] = kv.end - 1
    return pts


def _kv_truncations(base: str, kvs: list[tuple[str, str | None]], sample_kv: dict[str, tuple[int, int | None]]) -> None:
    """``sample_kv`` maps the label to (value type, array subtype) so the ids are known
    without reading the file."""
    for label, key in kvs:
        vtype, sub = sample_kv[label]
        probe = KV(b"k" * 4, vtype, (u32(sub) + u64(2) + gstr(b"ab") * 2) if vtype == ARRAY and sub == STRING
                   else (u32(sub) + u64(2) + b"\0" * 8) if vtype == ARRAY
                   else gstr(b"ab") if vtype == STRING else b"\0" * SCALAR_SIZE[vtype],
                   start=0, type_off=12, end=100)
        for point in _kv_points(probe):
            def at(b: Base, key: str | None = key, point: str = point) -> int:
                kv = b.kvs[-1] if key is None else b.kv(key)
                return _kv_points(kv)[point]

            what = "the last key-value pair" if key is None else f"'{key}'"
            _case(f"trunc.kv.{label}.{point}", base, "error", f"cut in {what} at {point.replace('_', ' ')}",
                  _trunc(at))


def _tensor_points(t: TensorInfo) -> dict[str, int]:
    s = t.start
    n = len(t.name)
    nd = s + 8 + n
    dims = nd + 4
    ty = dims + 8 * len(t.dims)
    pts = {
        "name_len_inside": s + 4,
        "name_len": s + 8,
        "name_inside": s + 8 + n // 2,
        "name": nd,
        "n_dims_inside": nd + 2,
        "n_dims": nd + 4,
        "dim0_inside": dims + 4,
        "dim0": dims + 8,
        "last_dim_inside": ty - 3,
        "type_inside": ty + 2,
        "type": ty + 4,
        "offset_inside": ty + 8,
        "last_byte_missing": t.end - 1,
    }
    return pts


def _tensor_truncations(base: str, which: list[tuple[str, int]]) -> None:
    probe = TensorInfo(b"x" * 10, [2, 2], 0, 0, start=0, end=100)
    for label, idx in which:
        for point in _tensor_points(probe):
            def at(b: Base, idx: int = idx, point: str = point) -> int:
                return _tensor_points(b.tensors[idx])[point]

            _case(f"trunc.tensor_info.{label}.{point}", base, "error",
                  f"cut in tensor info #{label} at {point.replace('_', ' ')}", _trunc(at))


def _data_truncations(base: str) -> None:
    def mid_tensor(b: Base) -> int:
        t = b.tensors[len(b.tensors) // 2]
        return b.data_offset + t.offset + t.nbytes() // 2

    pts: dict[str, tuple[Callable[[Base], int], str]] = {
        "after_tensor_infos": (lambda b: b.header_end, "cut right after the tensor infos (no padding, no data)"),
        "inside_padding": (lambda b: b.header_end + 1, "cut inside the alignment padding"),
        "data_start": (lambda b: b.data_offset, "cut where the data section starts"),
        "data_first_bytes": (lambda b: b.data_offset + 7, "only 7 bytes of tensor data"),
        "data_middle_tensor": (mid_tensor, "cut in the middle of a tensor's data"),
        "data_last_byte_missing": (lambda b: b.size - 1, "the last byte of tensor data missing"),
    }
    for name, (at, desc) in pts.items():
        _case(f"trunc.data.{name}" if base == "tiny" else f"{base}.trunc.data.{name}", base, "error", desc,
              _trunc(at))


# --- header fields ------------------------------------------------------------------------

def _header_cases() -> None:
    for magic, desc in [(b"GGUG", "one letter off"), (b"FUGG", "byte-swapped"), (b"\0\0\0\0", "zeros"),
                        (b"ggjt", "the pre-GGUF ggjt format"), (b"gguf", "lower case")]:
        _case(f"magic.{magic.decode('latin-1').replace(chr(0), '0')}", "tiny", "error", f"wrong magic: {desc}",
              _img(lambda i: None, magic=magic))
    for v, expect, desc in [
        (0, "error", "version 0"),
        (1, "error", "GGUF v1 (no longer supported)"),
        (2, "either", "version 2 (same layout as 3; llama.cpp still reads it)"),
        (4, "error", "version 4 (newer than supported)"),
        (0xFFFF, "error", "version 65535"),
        (0x10000, "error", "version 0x10000 (low 16 bits zero: looks byte-swapped)"),
        (0x03000000, "error", "version 3 byte-swapped (big-endian file)"),
        (0x7FFFFFFF, "error", "version 2**31-1"),
        (0xFFFFFFFF, "error", "version 0xFFFFFFFF"),
    ]:
        _case(f"version.{v:#x}", "tiny", expect, desc, _img(lambda i, v=v: setattr(i, "version", v)))

    def count(field_: str, f: Callable[[int], int], desc: str, expect: str = "error") -> None:
        def fn(i: Image) -> None:
            real = len(i.kvs) if field_ == "n_kv" else len(i.tensors)
            setattr(i, field_, f(real))

        _case(f"count.{field_}.{desc.split(':')[0]}", "tiny", expect, f"{field_} {desc}", _img(fn))

    for fld in ("n_tensors", "n_kv"):
        count(fld, lambda n: 1 << 31, "2**31")
        count(fld, lambda n: (1 << 63) - 1, "2**63-1")
        count(fld, lambda n: 1 << 63, "2**63: negative as int64")
        count(fld, lambda n: (1 << 64) - 1, "2**64-1: -1 as int64")
        count(fld, lambda n: 1 << 40, "2**40")
        count(fld, lambda n: n + 1, "plus_one: one more than written")
        count(fld, lambda n: n - 1, "minus_one: one fewer than written",
              # n_tensors: the last tensor info becomes header padding and its data trailing
              # bytes; what remains is a well-formed file with one tensor fewer (for the tiny
              # model, output.weight, which llama.cpp then ties to token_embd).
              "either" if fld == "n_tensors" else "error")
        # n_tensors 0: the tensor infos become trailing bytes of a tensorless file, which a
        # vocab-only load accepts.
        count(fld, lambda n: 0, "zero: none though some are written", "error_full" if fld == "n_tensors" else "error")
    # n_tensors 0 with no tensors written: a vocabulary-only file
    _case("count.no_tensors_at_all", "tiny", "error_full", "tensor infos and data removed (a vocab-only file)",
          _img(lambda i: i.tensors.clear(), data=False))
    _case("count.no_kv_at_all", "tiny", "error", "every key-value pair removed", _img(lambda i: i.kvs.clear()))


# --- key-value pairs -------------------------------------------------------------------------

def _patch_kv_field(i: Image, key: str, new: bytes) -> None:
    """Replaces the whole encoded pair ``key`` by raw bytes ``new`` (any structure)."""
    idx = i.find(key)
    raw = _RawKV(new)
    i.kvs[idx] = raw  # type: ignore[call-overload]


class _RawKV(KV):
    def __init__(self, raw: bytes) -> None:
        super().__init__(b"", 0, b"")
        self.raw = raw

    def encode(self) -> bytes:
        return self.raw


def _kv_cases() -> None:
    T = "tiny"

    def raw(key: str, make: Callable[[KV], bytes], cid: str, desc: str, expect: str = "error") -> None:
        def fn(i: Image) -> None:
            _patch_kv_field(i, key, make(i.get(key)))

        _case(f"kv.{cid}", T, expect, desc, _img(fn))

    # lengths past the end of the file (or absurd)
    name_kv = "general.name"
    for n, label in [((1 << 64) - 1, "2**64-1"), (1 << 63, "2**63"), (1 << 40, "2**40"), (1 << 30, "2**30"),
                     ((1 << 30) + 1, "2**30+1")]:
        raw(name_kv, lambda kv, n=n: u64(n) + kv.key + u32(kv.vtype) + kv.payload,
            f"key_len.{label}", f"key length {label}")
        raw(name_kv, lambda kv, n=n: gstr(kv.key) + u32(STRING) + u64(n) + kv.payload[8:],
            f"str_len.{label}", f"string value length {label}")
        raw("tokenizer.ggml.tokens", lambda kv, n=n: gstr(kv.key) + u32(ARRAY) + u32(STRING) + u64(n) + kv.payload[12:],
            f"tokens_n.{label}", f"tokenizer.ggml.tokens array length {label}")
        raw("tokenizer.ggml.tokens",
            lambda kv, n=n: gstr(kv.key) + u32(ARRAY) + u32(STRING) + kv.payload[4:12] + u64(n) + kv.payload[20:],
            f"tokens_first_len.{label}", f"first token string length {label}")
        raw("tokenizer.ggml.scores", lambda kv, n=n: gstr(kv.key) + u32(ARRAY) + u32(FLOAT32) + u64(n) + kv.payload[12:],
            f"scores_n.{label}", f"tokenizer.ggml.scores array length {label}")
    raw(name_kv, lambda kv: u64(0) + u32(kv.vtype) + kv.payload, "key_len.zero", "empty key")
    raw(name_kv, lambda kv: gstr(kv.key) + u32(STRING) + u64(len(kv.payload) - 8 + 1) + kv.payload[8:],
        "str_len.plus_one", "string length one too long (swallows the next key's length)")
    raw("tokenizer.ggml.scores", lambda kv: gstr(kv.key) + u32(ARRAY) + u32(FLOAT32) + u64(kv.count + 1) + kv.payload[12:],
        "scores_n.plus_one", "scores array one element longer than written")
    raw("tokenizer.ggml.tokens", lambda kv: gstr(kv.key) + u32(ARRAY) + u32(STRING) + u64(kv.count + 1) + kv.payload[12:],
        "tokens_n.plus_one", "tokens array one element longer than written")
    raw("tokenizer.ggml.tokens", lambda kv: gstr(kv.key) + u32(ARRAY) + u32(STRING) + u64(kv.count - 1) + kv.payload[12:],
        "tokens_n.minus_one", "tokens array one element shorter than written (the rest is read as the next key)")

    # type codes
    for code, label in [(13, "13"), (255, "255"), (0xFFFFFFFF, "minus1"), (1 << 31, "2**31")]:
        raw("llama.context_length", lambda kv, c=code: gstr(kv.key) + u32(c) + kv.payload,
            f"type.{label}", f"value type code {label}")
        raw("tokenizer.ggml.scores", lambda kv, c=code: gstr(kv.key) + u32(ARRAY) + u32(c) + kv.payload[4:],
            f"array_type.{label}", f"array element type code {label}")
    raw("tokenizer.ggml.scores", lambda kv: gstr(kv.key) + u32(ARRAY) + u32(ARRAY) + kv.payload[4:],
        "array_of_arrays.header", "array element type ARRAY (arrays of arrays are not supported)")
    raw("tokenizer.ggml.scores",
        lambda kv: gstr(kv.key) + u32(ARRAY) + u32(ARRAY) + u64(1) + u32(FLOAT32) + kv.payload[4:],
        "array_of_arrays.nested", "an array holding the scores array")
    raw("llama.context_length", lambda kv: gstr(kv.key) + u32(STRING) + kv.payload,
        "type.u32_read_as_string", "a uint32 value re-typed STRING (its bytes read as a length)")
    raw("llama.context_length", lambda kv: gstr(kv.key) + u32(ARRAY) + kv.payload,
        "type.u32_read_as_array", "a uint32 value re-typed ARRAY (its bytes read as element type/count)")
    raw("general.architecture", lambda kv: gstr(kv.key) + u32(UINT64) + kv.payload,
        "type.string_read_as_u64", "the architecture string re-typed UINT64")
    raw(name_kv, lambda kv: gstr(b"general.na\0me") + u32(kv.vtype) + kv.payload, "key_nul", "key with a NUL byte",
        "either")
    raw(name_kv, lambda kv: gstr(b"general.\xff\xfename") + u32(kv.vtype) + kv.payload, "key_not_utf8",
        "key that is not UTF-8", "either")
    raw(name_kv, lambda kv: gstr(kv.key) + u32(STRING) + gstr(b"\xff\xfe\xc3(bad utf-8\0nul"), "value_not_utf8",
        "string value that is not UTF-8 and holds a NUL", "either")
    raw(name_kv, lambda kv: gstr(b"x" * 70000) + u32(kv.vtype) + kv.payload, "key_long",
        "a 70000-byte key (GGUF keys are at most 65535 bytes)", "either")

    # duplicate keys
    def dup(key: str, value: Callable[[KV], KV] | None = None) -> Callable[[Image], None]:
        def fn(i: Image) -> None:
            kv = i.get(key)
            i.kvs.append(value(kv) if value else dataclasses.replace(kv))
        return fn

    _case("kv.duplicate.architecture_same", T, "error", "general.architecture twice, same value",
          _img(dup("general.architecture")))
    _case("kv.duplicate.architecture_other", T, "error", "general.architecture twice, second 'gemma3'",
          _img(dup("general.architecture", lambda kv: KV.make("general.architecture", STRING, "gemma3"))))
    _case("kv.duplicate.tokens", T, "error", "tokenizer.ggml.tokens twice", _img(dup("tokenizer.ggml.tokens")))
    _case("kv.duplicate.block_count_other", T, "error", "llama.block_count twice with different values",
          _img(dup("llama.block_count", lambda kv: KV.make("llama.block_count", UINT32, 7))))

    # wrong types for known keys
    def typed(cid: str, key: str, vtype: int, value: object, desc: str, expect: str = "error",
              sub: int | None = None) -> None:
        _case(f"kv.wrong_type.{cid}", T, expect, desc, _img(lambda i: i.set(key, vtype, value, sub)))

    typed("architecture_u32", "general.architecture", UINT32, 1, "general.architecture is a uint32")
    typed("architecture_array", "general.architecture", ARRAY, ["llama"], "general.architecture is an array", sub=STRING)
    typed("context_length_string", "llama.context_length", STRING, "4096", "llama.context_length is a string",
          "error_full")
    typed("context_length_i64", "llama.context_length", INT64, 256, "llama.context_length is an int64", "error_full")
    typed("context_length_f32", "llama.context_length", FLOAT32, 256.0, "llama.context_length is a float32",
          "error_full")
    typed("block_count_array", "llama.block_count", ARRAY, [2, 2], "llama.block_count is an array", "error_full",
          sub=UINT32)
    typed("block_count_bool", "llama.block_count", BOOL, True, "llama.block_count is a bool", "error_full")
    typed("head_count_string", "llama.attention.head_count", STRING, "4", "head_count is a string", "error_full")
    typed("rms_eps_f64", "llama.attention.layer_norm_rms_epsilon", FLOAT64, 1e-5, "rms epsilon is a float64",
          "error_full")
    typed("model_u32", "tokenizer.ggml.model", UINT32, 1, "tokenizer.ggml.model is a uint32")
    typed("tokens_string", "tokenizer.ggml.tokens", STRING, "hello", "tokenizer.ggml.tokens is a string")
    typed("tokens_i32", "tokenizer.ggml.tokens", ARRAY, list(range(10)), "tokenizer.ggml.tokens is an int32 array",
          sub=INT32)
    typed("scores_string", "tokenizer.ggml.scores", ARRAY, ["a", "b"], "tokenizer.ggml.scores is a string array",
          sub=STRING)
    typed("scores_scalar", "tokenizer.ggml.scores", FLOAT32, 0.0, "tokenizer.ggml.scores is a scalar")
    typed("token_type_f32", "tokenizer.ggml.token_type", ARRAY, [1.0] * 32000, "token_type is a float32 array",
          sub=FLOAT32)
    typed("token_type_u8", "tokenizer.ggml.token_type", ARRAY, [1] * 32000, "token_type is a uint8 array", sub=UINT8)
    typed("bos_string", "tokenizer.ggml.bos_token_id", STRING, "1", "bos_token_id is a string")
    typed("bos_i32_minus1", "tokenizer.ggml.bos_token_id", INT32, -1, "bos_token_id = -1 as int32")
    typed("bos_u64", "tokenizer.ggml.bos_token_id", UINT64, 1, "bos_token_id as uint64")
    typed("add_bos_u32", "tokenizer.ggml.add_bos_token", UINT32, 1, "add_bos_token is a uint32")
    typed("alignment_u64", "general.alignment", UINT64, 32, "general.alignment is a uint64")
    typed("alignment_string", "general.alignment", STRING, "32", "general.alignment is a string")
    typed("chat_template_u32", "tokenizer.chat_template", UINT32, 5, "tokenizer.chat_template is a uint32", "either")
    typed("name_array", "general.name", ARRAY, [1, 2, 3], "general.name is an int32 array", "either", sub=INT32)

    # unknown / empty identifiers
    typed("arch_unknown", "general.architecture", STRING, "notanarch", "unknown architecture")
    typed("arch_empty", "general.architecture", STRING, "", "empty architecture")
    typed("arch_nul", "general.architecture", STRING, "llama\0x", "architecture 'llama' followed by a NUL")
    typed("tokenizer_unknown", "tokenizer.ggml.model", STRING, "xyz", "unknown tokenizer model")
    typed("pre_unknown", "tokenizer.ggml.pre", STRING, "xyz", "unknown pre-tokenizer (SPM ignores it)", "either")
    _case("kv.missing.architecture", T, "error", "no general.architecture",
          _img(lambda i: i.remove("general.architecture")))
    _case("kv.missing.tokens", T, "error", "no tokenizer.ggml.tokens", _img(lambda i: i.remove("tokenizer.ggml.tokens")))
    _case("kv.missing.model", T, "error", "no tokenizer.ggml.model", _img(lambda i: i.remove("tokenizer.ggml.model")))
    _case("kv.missing.block_count", T, "error_full", "no llama.block_count",
          _img(lambda i: i.remove("llama.block_count")))
    _case("kv.missing.rms_eps", T, "error_full", "no rms epsilon",
          _img(lambda i: i.remove("llama.attention.layer_norm_rms_epsilon")))

    # general.alignment
    # 64/16 with the header padded to 32: whether the data section moves depends on where the
    # header ends; for the tiny model it does not, and the file stays well-formed.
    for a, label, expect in [(0, "0", "error"), (3, "3", "error"), (48, "48", "error"), (1 << 31, "2**31", "error"),
                             ((1 << 31) + 1, "2**31+1", "error"), (0xFFFFFFFF, "2**32-1", "error"),
                             (64, "64_header_only", "either"), (16, "16_header_only", "either")]:
        _case(f"alignment.{label}", T, expect, f"general.alignment = {label} (data laid out for 32)",
              _img(lambda i, a=a: i.set("general.alignment", UINT32, a)))
    _case("alignment.64_consistent", T, "either", "general.alignment = 64, header padded to 64",
          _img(lambda i: i.set("general.alignment", UINT32, 64), alignment=64))
    _case("alignment.1_consistent", T, "error",
          "general.alignment = 1, data right after the header: tensors not 32-byte aligned in the file "
          "(ggml asserts on it when they are mapped)",
          _img(lambda i: i.set("general.alignment", UINT32, 1), alignment=1))


# --- tensor infos ---------------------------------------------------------------------------------

def _tensor_cases() -> None:
    T = "tiny"

    def tc(cid: str, expect: str, desc: str, fn: Callable[[Image], object], **kw: object) -> None:
        _case(f"tensor.{cid}", T, expect, desc, _img(fn, **kw))

    last = lambda i: i.tensors[-1]  # noqa: E731
    first = lambda i: i.tensors[0]  # noqa: E731
    tc("offset.beyond_file", "error", "last tensor's offset 2**40", lambda i: setattr(last(i), "offset", 1 << 40))
    tc("offset.2**64-1", "error", "last tensor's offset 2**64-1", lambda i: setattr(last(i), "offset", (1 << 64) - 1))
    tc("offset.unaligned", "error", "last tensor's offset +1 (unaligned)",
       lambda i: setattr(last(i), "offset", last(i).offset + 1))
    tc("offset.aligned_gap", "error", "last tensor's offset +32 (a gap)",
       lambda i: setattr(last(i), "offset", last(i).offset + 32))

    def swap_offsets(i: Image) -> None:
        a, b = i.tensors[0], i.tensors[1]
        a.offset, b.offset = b.offset, a.offset

    tc("offset.swapped", "error", "first two tensors' offsets swapped (out of order)", swap_offsets)
    tc("offset.overlap", "error", "second tensor overlaps the first",
       lambda i: setattr(i.tensors[1], "offset", 32))
    tc("offset.all_zero", "error", "every tensor at offset 0", lambda i: [setattr(t, "offset", 0) for t in i.tensors])

    def dims(cid: str, expect: str, desc: str, f: Callable[[TensorInfo], None], relayout: bool = False,
             pick: Callable[[Image], TensorInfo] = first) -> None:
        def fn(i: Image) -> None:
            f(pick(i))
            if relayout:
                i.relayout()
        tc(cid, expect, desc, fn)

    dims("dim.zero", "error", "token_embd ne0 = 0", lambda t: t.dims.__setitem__(0, 0))
    dims("dim.zero_relayout", "error_full", "token_embd ne0 = 0, offsets recomputed",
         lambda t: t.dims.__setitem__(0, 0), relayout=True)
    dims("dim.2**62", "error", "token_embd ne1 = 2**62", lambda t: t.dims.__setitem__(1, 1 << 62))
    dims("dim.2**62_relayout", "error", "token_embd ne1 = 2**62, offsets recomputed",
         lambda t: t.dims.__setitem__(1, 1 << 62), relayout=True)
    dims("dim.negative", "error", "token_embd ne1 = -1", lambda t: t.dims.__setitem__(1, (1 << 64) - 1))
    dims("dim.product_overflow", "error", "ne0 = ne1 = 2**32 (element count overflows int64)",
         lambda t: t.dims.__setitem__(slice(0, 2), [1 << 32, 1 << 32]))
    dims("dim.bigger_relayout", "error", "token_embd twice as many rows, offsets recomputed (data past the file)",
         lambda t: t.dims.__setitem__(1, t.dims[1] * 2), relayout=True)
    dims("dim.smaller_relayout", "error_full", "token_embd half the rows, offsets recomputed (wrong shape)",
         lambda t: t.dims.__setitem__(1, t.dims[1] // 2), relayout=True)
    dims("dim.transposed", "error_full", "output.weight dims swapped (same size, wrong shape)",
         lambda t: t.dims.reverse(), pick=last)
    dims("n_dims.5", "error", "n_dims = 5", lambda t: t.dims.extend([1, 1, 1]))
    dims("n_dims.2**32-1", "error", "n_dims field 0xFFFFFFFF",
         lambda t: setattr(t, "n_dims", 0xFFFFFFFF))
    dims("n_dims.zero", "error", "n_dims = 0 for token_embd (a scalar)", lambda t: t.dims.clear())
    dims("n_dims.zero_relayout", "error_full", "n_dims = 0 for token_embd, offsets recomputed",
         lambda t: t.dims.clear(), relayout=True)
    dims("n_dims.4", "either", "output_norm with two extra unit dimensions", lambda t: t.dims.extend([1, 1]),
         pick=lambda i: i.tensor("output_norm.weight"))
    for gt, label in [(4, "removed_q4_2"), (31, "removed_q4_0_4_4"), (43, "count"), (1000, "1000"),
                      (0xFFFFFFFF, "minus1")]:
        dims(f"type.{label}", "error", f"token_embd ggml type {gt}", lambda t, gt=gt: setattr(t, "ggml_type", gt))
    dims("type.q4_k_bad_row", "error", "token_embd type Q4_K (row of 64 not a multiple of 256)",
         lambda t: setattr(t, "ggml_type", GGML_Q4_K), relayout=False)
    dims("type.f16_raw", "error", "token_embd type F16, offsets unchanged",
         lambda t: setattr(t, "ggml_type", GGML_F16))
    dims("type.f16_relayout", "either", "token_embd type F16, offsets recomputed (garbage but valid)",
         lambda t: setattr(t, "ggml_type", GGML_F16), relayout=True)
    dims("type.q4_0_relayout", "error", "output_norm type Q4_0, offsets recomputed (ggml's mul aborts on it)",
         lambda t: setattr(t, "ggml_type", GGML_Q4_0), relayout=True,
         pick=lambda i: i.tensor("output_norm.weight"))

    def rename(new: bytes) -> Callable[[Image], None]:
        return lambda i: setattr(i.tensor("output_norm.weight"), "name", new)

    tc("name.empty", "error_full", "output_norm renamed ''", rename(b""))
    tc("name.64", "error", "a 64-byte tensor name (GGML_MAX_NAME is 64 with the NUL)", rename(b"n" * 64))
    tc("name.len_2**63", "error", "tensor name length field 2**63", lambda i: setattr(i.tensors[0], "name_len", 1 << 63))
    tc("name.len_past_end", "error", "last tensor's name length runs past the end of the file",
       lambda i: setattr(last(i), "name_len", 1 << 30))
    tc("name.duplicate", "error", "output_norm renamed like token_embd", rename(b"token_embd.weight"))
    tc("name.unknown", "error_full", "output_norm renamed to an unknown tensor", rename(b"blk.0.unknown.weight"))
    tc("name.bad_layer", "error_full", "output_norm renamed blk.99.attn_norm.weight", rename(b"blk.99.attn_norm.weight"))
    tc("name.nul", "error_full", "tensor name with a NUL byte", rename(b"output_norm\0.weight"))
    tc("missing.output_norm", "error_full", "output_norm removed, offsets recomputed",
       lambda i: (i.tensors.remove(i.tensor("output_norm.weight")), i.relayout()))
    tc("missing.token_embd", "error_full", "token_embd removed, offsets recomputed",
       lambda i: (i.tensors.remove(i.tensor("token_embd.weight")), i.relayout()))

    def extra(i: Image) -> None:
        t = dataclasses.replace(i.tensor("output_norm.weight"), name=b"extra.weight", dims=[64])
        i.tensors.append(t)
        i.relayout()

    tc("extra_tensor", "error_full", "an extra unknown tensor at the end (data past the file)", extra)


# --- vocabulary ------------------------------------------------------------------------------------

def _vocab_cases() -> None:
    T = "tiny"

    def vc(cid: str, expect: str, desc: str, fn: Callable[[Image], object]) -> None:
        _case(f"vocab.{cid}", T, expect, desc, _img(fn))

    def resize(key: str, sub: int, n: Callable[[int], int]) -> Callable[[Image], None]:
        def fn(i: Image) -> None:
            items = i.get(key).items()
            m = n(len(items))
            items = items[:m] if m <= len(items) else items + [items[-1]] * (m - len(items))
            i.set(key, ARRAY, items, sub)
        return fn

    vc("scores_short", "error", "scores one shorter than tokens", resize("tokenizer.ggml.scores", FLOAT32, lambda n: n - 1))
    vc("scores_empty", "error", "scores empty", resize("tokenizer.ggml.scores", FLOAT32, lambda n: 0))
    vc("scores_long", "either", "scores one longer than tokens", resize("tokenizer.ggml.scores", FLOAT32, lambda n: n + 1))
    vc("token_type_short", "error", "token_type one shorter than tokens",
       resize("tokenizer.ggml.token_type", INT32, lambda n: n - 1))
    vc("token_type_half", "error", "token_type half as long as tokens",
       resize("tokenizer.ggml.token_type", INT32, lambda n: n // 2))
    vc("token_type_long", "either", "token_type one longer than tokens",
       resize("tokenizer.ggml.token_type", INT32, lambda n: n + 1))
    vc("tokens_short", "error_full", "tokens one shorter than scores/token_type and the embedding rows",
       resize("tokenizer.ggml.tokens", STRING, lambda n: n - 1))
    vc("tokens_long", "error_full", "tokens one longer than the embedding rows (scores/types short)",
       resize("tokenizer.ggml.tokens", STRING, lambda n: n + 1))
    vc("tokens_empty", "error", "tokens empty", resize("tokenizer.ggml.tokens", STRING, lambda n: 0))
    vc("tokens_one", "error", "a single token", lambda i: [resize(k, s, lambda n: 1)(i) for k, s in
                                                         [("tokenizer.ggml.tokens", STRING),
                                                          ("tokenizer.ggml.scores", FLOAT32),
                                                          ("tokenizer.ggml.token_type", INT32)]])
    # llama.cpp sizes the vocabulary from the token list and ignores <arch>.vocab_size then.
    vc("vocab_size_mismatch", "either", "llama.vocab_size 32001 (tokens and embedding have 32000)",
       lambda i: i.set("llama.vocab_size", UINT32, 32001))
    vc("vocab_size_huge", "either", "llama.vocab_size 2**32-1",
       lambda i: i.set("llama.vocab_size", UINT32, 0xFFFFFFFF))

    def edit_tokens(f: Callable[[list[bytes]], None]) -> Callable[[Image], None]:
        def fn(i: Image) -> None:
            toks = i.get("tokenizer.ggml.tokens").items()
            f(toks)  # type: ignore[arg-type]
            i.set("tokenizer.ggml.tokens", ARRAY, toks, STRING)
        return fn

    vc("duplicate_token", "error", "two tokens with the same text ('▁the' twice)",
       edit_tokens(lambda t: t.__setitem__(1000, t[278])))
    vc("duplicate_special", "error", "token 3 renamed '</s>' (a duplicate of eos)", edit_tokens(lambda t: t.__setitem__(3, t[2])))
    vc("empty_token", "either", "an empty token string", edit_tokens(lambda t: t.__setitem__(1000, b"")))
    vc("empty_token_collision", "error", "an empty token string at 1000 and a real token '[EMPTY_1000]'",
       edit_tokens(lambda t: (t.__setitem__(1000, b""), t.__setitem__(1001, b"[EMPTY_1000]"))))
    vc("token_not_utf8", "either", "a token that is not UTF-8", edit_tokens(lambda t: t.__setitem__(1000, b"\xff\xfe")))
    vc("token_nul", "error", "a token 'a\\0b' (read up to the NUL: 'a', a duplicate)",
       edit_tokens(lambda t: t.__setitem__(1000, b"a\0b")))
    vc("token_nul_unique", "either", "a token '\\0zq' (read as '', renamed [EMPTY_1000])",
       edit_tokens(lambda t: t.__setitem__(1000, b"\0zq")))
    vc("token_1mb", "either", "a 1 MiB token", edit_tokens(lambda t: t.__setitem__(1000, b"x" * (1 << 20))))
    vc("no_byte_tokens", "either", "SPM vocabulary whose byte tokens <0x..> are renamed",
       edit_tokens(lambda t: [t.__setitem__(3 + b, b"<byte%d>" % b) for b in range(256)]))
    vc("token_type_values", "either", "token types 99 and -5",
       lambda i: i.set("tokenizer.ggml.token_type", ARRAY,
                       [99 if k % 2 else -5 for k in range(len(i.get("tokenizer.ggml.token_type").items()))], INT32))
    vc("scores_nan", "either", "scores NaN and inf",
       lambda i: i.set("tokenizer.ggml.scores", ARRAY,
                       [float("nan") if k % 2 else float("inf") for k in range(len(i.get("tokenizer.ggml.scores").items()))],
                       FLOAT32))
    vc("model_none", "either", "tokenizer.ggml.model 'none' (no vocabulary)",
       lambda i: i.set("tokenizer.ggml.model", STRING, "none"))
    vc("model_none_vocab_huge", "error", "tokenizer 'none' with llama.vocab_size 2**32-1 (dummy tokens)",
       lambda i: (i.set("tokenizer.ggml.model", STRING, "none"), i.set("llama.vocab_size", UINT32, 0xFFFFFFFF)))
    vc("model_none_vocab_2**28", "error", "tokenizer 'none' with llama.vocab_size 2**28 (dummy tokens)",
       lambda i: (i.set("tokenizer.ggml.model", STRING, "none"), i.set("llama.vocab_size", UINT32, 1 << 28)))
    vc("model_gpt2_no_merges", "error", "tokenizer 'gpt2' without merges",
       lambda i: i.set("tokenizer.ggml.model", STRING, "gpt2"))
    vc("model_bert", "error", "the SPM vocabulary declared 'bert' (WordPiece) with its byte tokens",
       lambda i: i.set("tokenizer.ggml.model", STRING, "bert"))
    vc("model_t5", "either", "the SPM vocabulary declared 't5' (Unigram, no charsmap)",
       lambda i: i.set("tokenizer.ggml.model", STRING, "t5"))
    vc("model_rwkv", "either", "the SPM vocabulary declared 'rwkv'",
       lambda i: i.set("tokenizer.ggml.model", STRING, "rwkv"))
    vc("model_plamo2", "either", "the SPM vocabulary declared 'plamo2'",
       lambda i: i.set("tokenizer.ggml.model", STRING, "plamo2"))
    vc("t5_charsmap_garbage", "either", "'t5' with a garbage precompiled_charsmap",
       lambda i: (i.set("tokenizer.ggml.model", STRING, "t5"),
                  i.set("tokenizer.ggml.precompiled_charsmap", ARRAY, [0xFF] * 64, UINT8)))
    vc("t5_charsmap_short", "either", "'t5' with a 2-byte precompiled_charsmap",
       lambda i: (i.set("tokenizer.ggml.model", STRING, "t5"),
                  i.set("tokenizer.ggml.precompiled_charsmap", ARRAY, [1, 0], UINT8)))

    # special-token ids
    for key in ["bos", "eos", "unknown", "padding", "seperator", "eot", "eom", "mask", "fim_pre", "fim_suf",
                "fim_mid", "fim_pad", "fim_rep", "fim_sep"]:
        for value, label in [((1 << 31) - 1, "2**31-1"), (0xFFFFFFFF, "2**32-1"), (32000, "n_vocab")]:
            if key not in ("bos", "eos", "eot", "padding") and label != "2**31-1":
                continue
            vc(f"special.{key}.{label}", "either", f"tokenizer.ggml.{key}_token_id = {label}",
               lambda i, key=key, value=value: i.set(f"tokenizer.ggml.{key}_token_id", UINT32, value))
    vc("special.eos_i32_minus1", "error", "eos_token_id = -1 stored as int32",
       lambda i: i.set("tokenizer.ggml.eos_token_id", INT32, -1))
    vc("special.all_out_of_range", "either", "bos, eos, unk, pad all 2**31-1",
       lambda i: [i.set(f"tokenizer.ggml.{k}_token_id", UINT32, (1 << 31) - 1)
                  for k in ("bos", "eos", "unknown", "padding")])
    vc("special.suppress_tokens", "either", "suppress_tokens with ids -1, 2**31-1 and n_vocab",
       lambda i: i.set("tokenizer.ggml.suppress_tokens", ARRAY, [-1, (1 << 31) - 1, 32000], INT32))
    vc("special.add_bos_without_bos", "either", "one-token-short vocab so default bos... (bos id 2**31-1, add_bos)",
       lambda i: (i.set("tokenizer.ggml.bos_token_id", UINT32, (1 << 31) - 1),
                  i.set("tokenizer.ggml.add_bos_token", BOOL, True)))
    vc("special.add_eos_sep", "either", "add_eos and add_sep set; no sep token",
       lambda i: (i.set("tokenizer.ggml.add_eos_token", BOOL, True), i.set("tokenizer.ggml.add_sep_token", BOOL, True)))


# --- hyperparameters -------------------------------------------------------------------------------

def _hparam_cases() -> None:
    T = "tiny"

    def hp(cid: str, expect: str, desc: str, fn: Callable[[Image], object]) -> None:
        _case(f"hparams.{cid}", T, expect, desc, _img(fn))

    def u(key: str, v: int) -> Callable[[Image], object]:
        return lambda i: i.set(key, UINT32, v)

    for v, e in [(0, "error_full"), (3, "error_full"), (513, "error_full"), (0xFFFFFFFF, "error_full")]:
        hp(f"block_count.{v}", e, f"llama.block_count = {v}", u("llama.block_count", v))
    hp("nextn_layers_gt_block_count", "error_full", "llama.nextn_predict_layers 5 > block_count 2",
       u("llama.nextn_predict_layers", 5))
    hp("expert_count_huge", "error_full", "llama.expert_count 2**31", u("llama.expert_count", 1 << 31))
    hp("expert_used_without_experts", "error_full", "llama.expert_used_count 2, no experts",
       u("llama.expert_used_count", 2))
    hp("expert_used_gt_count", "error_full", "expert_used_count 8 > expert_count 4",
       lambda i: (i.set("llama.expert_count", UINT32, 4), i.set("llama.expert_used_count", UINT32, 8)))
    hp("expert_count_no_used", "error_full", "expert_count 4, no expert_used_count",
       u("llama.expert_count", 4))
    hp("expert_groups_without_experts", "error_full", "expert_group_count 2 without experts",
       u("llama.expert_group_count", 2))
    hp("expert_groups_bad", "error_full", "expert_count 4, used 2, group_count 3 (does not divide)",
       lambda i: (i.set("llama.expert_count", UINT32, 4), i.set("llama.expert_used_count", UINT32, 2),
                  i.set("llama.expert_group_count", UINT32, 3), i.set("llama.expert_group_used_count", UINT32, 1)))
    hp("expert_group_used_zero", "error_full", "expert_count 4, used 2, groups 2, group_used 0",
       lambda i: (i.set("llama.expert_count", UINT32, 4), i.set("llama.expert_used_count", UINT32, 2),
                  i.set("llama.expert_group_count", UINT32, 2), i.set("llama.expert_group_used_count", UINT32, 0)))
    hp("expert_used_array_long", "error_full", "expert_used_count array longer than block_count",
       lambda i: i.set("llama.expert_used_count", ARRAY, [1] * 600, UINT32))
    hp("rope_scaling_unknown", "error_full", "llama.rope.scaling.type 'bogus'",
       lambda i: i.set("llama.rope.scaling.type", STRING, "bogus"))
    hp("rope_scaling_empty", "error_full", "llama.rope.scaling.type ''",
       lambda i: i.set("llama.rope.scaling.type", STRING, ""))
    for v in (0, 3, 1 << 20):
        hp(f"head_count.{v}", "error_full", f"head_count {v}", u("llama.attention.head_count", v))
    for v in (0, 3, 8):
        hp(f"head_count_kv.{v}", "error_full", f"head_count_kv {v}", u("llama.attention.head_count_kv", v))
    hp("head_count_array_long", "error_full", "head_count array of 600 (> LLAMA_MAX_LAYERS)",
       lambda i: i.set("llama.attention.head_count", ARRAY, [4] * 600, UINT32))
    hp("head_count_array_zeros", "error_full", "head_count array of zeros",
       lambda i: i.set("llama.attention.head_count", ARRAY, [0, 0], UINT32))
    hp("head_count_kv_array_mixed", "error_full", "head_count_kv [2, 0]",
       lambda i: i.set("llama.attention.head_count_kv", ARRAY, [2, 0], UINT32))
    for v in (0, 1 << 20):
        hp(f"embedding_length.{v}", "error_full", f"embedding_length {v}", u("llama.embedding_length", v))
    for v in (0, 1 << 30):
        hp(f"feed_forward_length.{v}", "error_full", f"feed_forward_length {v}", u("llama.feed_forward_length", v))
    for v in (0, 2, 1 << 20):
        hp(f"rope_dims.{v}", "error_full", f"rope.dimension_count {v}", u("llama.rope.dimension_count", v))
    hp("key_length_huge", "error_full", "attention.key_length 2**20", u("llama.attention.key_length", 1 << 20))
    hp("key_length_zero", "error_full", "attention.key_length 0", u("llama.attention.key_length", 0))
    hp("context_length.0", "either", "context_length 0", u("llama.context_length", 0))
    hp("context_length.huge", "either", "context_length 2**32-1", u("llama.context_length", 0xFFFFFFFF))
    hp("rms_eps_nan", "error_full", "rms epsilon NaN (ggml asserts eps >= 0)",
       lambda i: i.set("llama.attention.layer_norm_rms_epsilon", FLOAT32, float("nan")))
    hp("rms_eps_negative", "error_full", "rms epsilon -1 (ggml asserts eps >= 0)",
       lambda i: i.set("llama.attention.layer_norm_rms_epsilon", FLOAT32, -1.0))
    hp("rope_freq_base_zero", "either", "rope.freq_base 0",
       lambda i: i.set("llama.rope.freq_base", FLOAT32, 0.0))
    hp("rope_scaling_factor_inf", "either", "rope.scaling.factor inf",
       lambda i: i.set("llama.rope.scaling.factor", FLOAT32, float("inf")))
    hp("swa_pattern_huge", "either", "attention.sliding_window_pattern 2**31",
       u("llama.attention.sliding_window_pattern", 1 << 31))
    hp("file_type_unknown", "either", "general.file_type 9999", u("general.file_type", 9999))
    hp("classifier_labels_huge", "either", "classifier.output_labels with 10000 labels",
       lambda i: i.set("llama.classifier.output_labels", ARRAY, ["x"] * 10000, STRING))
    hp("pooling_type_bad", "either", "llama.pooling_type 99", u("llama.pooling_type", 99))
    hp("causal_attention_u32", "error_full", "attention.causal as uint32", u("llama.attention.causal", 1))


# --- controls and SmolLM2 ---------------------------------------------------------------------------

def _controls() -> None:
    _case("control.tiny_reencoded", "tiny", "load", "the tiny model re-encoded unchanged", _img(lambda i: None))
    _case("control.tiny_trailing_bytes", "tiny", "either", "the tiny model with 1 KiB of junk appended",
          _img(lambda i: None, tail=b"\xab" * 1024))
    _case("control.smollm2_reencoded", "smollm2", "load", "SmolLM2's header re-encoded, data zeroed",
          _img(lambda i: None, zero_data=True))


def _smollm2_cases() -> None:
    S = "smollm2"

    def sc(cid: str, expect: str, desc: str, fn: Callable[[Image], object]) -> None:
        _case(f"smollm2.{cid}", S, expect, desc, _img(fn, zero_data=True))

    def mid_of(key: str) -> Callable[[Base], int]:
        return lambda b: (b.kv(key).type_off + b.kv(key).end) // 2

    _case("smollm2.trunc.tokens_middle", S, "error", "cut in the middle of the 49152 tokens",
          _trunc(mid_of("tokenizer.ggml.tokens")))
    _case("smollm2.trunc.merges_middle", S, "error", "cut in the middle of the merges", _trunc(mid_of("tokenizer.ggml.merges")))
    _case("smollm2.trunc.chat_template", S, "error", "cut inside the chat template",
          _trunc(mid_of("tokenizer.chat_template")))
    _case("smollm2.trunc.tensor_infos", S, "error", "cut in the middle of the tensor infos",
          _trunc(lambda b: b.tensors[len(b.tensors) // 2].start + 5))
    _case("smollm2.trunc.data_middle", S, "error", "cut in the middle of the tensor data",
          _trunc(lambda b: b.data_offset + (b.size - b.data_offset) // 2))

    def edit_list(key: str, f: Callable[[list[bytes]], None]) -> Callable[[Image], None]:
        def fn(i: Image) -> None:
            items = i.get(key).items()
            f(items)  # type: ignore[arg-type]
            i.set(key, ARRAY, items, STRING)
        return fn

    sc("duplicate_token", "error", "token 300 renamed like token 301", edit_list("tokenizer.ggml.tokens",
                                                                              lambda t: t.__setitem__(300, t[301])))
    sc("merge_without_space", "either", "a merge rule with no space", edit_list("tokenizer.ggml.merges",
                                                                             lambda m: m.__setitem__(0, b"abc")))
    sc("merge_leading_space", "either", "merge rules ' ', '  x' and ''",
       edit_list("tokenizer.ggml.merges", lambda m: m.__setitem__(slice(0, 3), [b" ", b"  x", b""])))
    sc("merges_u32", "error", "merges an int32 array",
       lambda i: i.set("tokenizer.ggml.merges", ARRAY, [1, 2], INT32))
    sc("bos_out_of_range", "either", "bos_token_id 2**31-1", lambda i: i.set("tokenizer.ggml.bos_token_id", UINT32, (1 << 31) - 1))
    sc("add_bos_no_bos", "error",
       "pre-tokenizer 'chatglm-bpe' (which clears the bos token), no bos_token_id, add_bos_token = true",
       lambda i: (i.set("tokenizer.ggml.pre", STRING, "chatglm-bpe"), i.remove("tokenizer.ggml.bos_token_id"),
                  i.set("tokenizer.ggml.add_bos_token", BOOL, True)))
    sc("chatglm_pre_with_bos", "either",
       "pre-tokenizer 'chatglm-bpe' with add_bos_token = true and a bos_token_id (which restores the bos)",
       lambda i: (i.set("tokenizer.ggml.pre", STRING, "chatglm-bpe"), i.set("tokenizer.ggml.add_bos_token", BOOL, True)))
    sc("token_type_short", "error", "token_type one shorter than tokens",
       lambda i: i.set("tokenizer.ggml.token_type", ARRAY, i.get("tokenizer.ggml.token_type").items()[:-1], INT32))
    sc("pre_unknown", "error", "unknown pre-tokenizer 'xyz' (BPE requires a known one)",
       lambda i: i.set("tokenizer.ggml.pre", STRING, "xyz"))
    sc("chat_template_not_utf8", "either", "a chat template that is not UTF-8",
       lambda i: i.set("tokenizer.chat_template", STRING, b"{{ '\xff\xfe' }}"))


def _build_cases() -> list[Case]:
    _CASES.clear()
    _controls()
    _header_truncations()
    _kv_truncations(
        "tiny", _TRUNC_KVS_TINY,
        {"first": (STRING, None), "name": (STRING, None), "u32": (UINT32, None), "f32": (FLOAT32, None),
         "model": (STRING, None), "tokens": (ARRAY, STRING), "scores": (ARRAY, FLOAT32),
         "token_type": (ARRAY, INT32), "bool": (BOOL, None), "last": (UINT32, None)},
    )
    _tensor_truncations("tiny", [("first", 0), ("second", 1), ("last", -1)])
    _data_truncations("tiny")
    _header_cases()
    _kv_cases()
    _tensor_cases()
    _vocab_cases()
    _hparam_cases()
    _smollm2_cases()
    ids = [c.id for c in _CASES]
    dupes = {i for i in ids if ids.count(i) > 1}
    assert not dupes, dupes
    return list(_CASES)


CASES: list[Case] = _build_cases()
CASES_BY_ID: dict[str, Case] = {c.id: c for c in CASES}


def check_base(b: Base, name: str) -> None:
    """Asserts that the base has what the cases assume (the tiny model's last key is a uint32...)."""
    if name == "tiny":
        for _label, key in _TRUNC_KVS_TINY:
            if key is not None:
                b.kv(key)
        assert b.kvs[-1].vtype == UINT32, "the tiny model's last key must be a uint32"
        assert len(b.tensors) >= 3


# ---------------------------------------------------------------------------- child process


MODES = ("Model", "Llama", "Model(vocab_only)")


def _smoke(obj: object, mode: str) -> str:
    """Uses a model that loaded: tokenize, detokenize, special pieces, one generation step."""
    import llamabind as lb

    if isinstance(obj, lb.Llama):
        toks = obj.tokenize(b"Hello world\n", add_bos=True, special=True)
        obj.detokenize(toks)
        if obj._ctx is not None:  # noqa: SLF001
            out = obj.create_completion("Hello", max_tokens=2, temperature=0.0)
            return f"generated {out['choices'][0]['text']!r}"
        return f"{len(toks)} tokens"
    vocab = obj.vocab  # type: ignore[attr-defined]
    toks = vocab.tokenize(b"Hello world\n<s></s>", add_special=True, parse_special=True)
    vocab.detokenize(toks)
    n = vocab.n_tokens
    for name in ("bos", "eos", "eot", "sep", "nl", "pad", "mask", "fim_pre", "fim_suf", "fim_mid"):
        t = getattr(vocab, name)
        if 0 <= t < n:
            vocab.token_to_piece(t, special=True)
    return f"{len(toks)} tokens"


def _try(mode: str, path: Path) -> dict[str, object]:
    import llamabind as lb

    try:
        if mode == "Model":
            obj: object = lb.Model(path)
        elif mode == "Llama":
            obj = lb.Llama(str(path), n_ctx=64, n_batch=64, n_threads=1, n_threads_batch=1, verbose=False)
        else:
            obj = lb.Model(path, vocab_only=True)
    except lb.LlamaError as e:
        return {"outcome": "error", "type": type(e).__name__, "message": str(e), "names_path": str(path) in str(e)}
    except Exception as e:  # noqa: BLE001
        return {"outcome": "wrong_exception", "type": type(e).__name__, "message": str(e)}
    try:
        info = _smoke(obj, mode)
    except lb.LlamaError as e:
        info = f"smoke raised {type(e).__name__}: {e}"
    except Exception as e:  # noqa: BLE001
        return {"outcome": "smoke_wrong_exception", "type": type(e).__name__, "message": str(e)}
    finally:
        obj.close()  # type: ignore[attr-defined]
    return {"outcome": "loaded", "info": info}


def run_child(argv: list[str]) -> int:
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--base", action="append", default=[])
    ap.add_argument("ids", nargs="*")
    args = ap.parse_args(argv)
    bases = {}
    for spec in args.base:
        name, _, p = spec.partition("=")
        bases[name] = parse(p)
    work = Path(args.workdir)
    with open(args.results, "a", encoding="utf-8") as res:
        for cid in args.ids:
            case = CASES_BY_ID[cid]
            res.write(json.dumps({"id": cid, "stage": "start"}) + "\n")
            res.flush()
            path = work / f"{cid.replace('/', '_')}.gguf"
            case.write(bases, path)
            modes = {}
            for mode in MODES:
                res.write(json.dumps({"id": cid, "stage": "mode", "mode": mode}) + "\n")
                res.flush()
                modes[mode] = _try(mode, path)
            path.unlink()
            res.write(json.dumps({"id": cid, "stage": "done", "path": str(path), "modes": modes}) + "\n")
            res.flush()
    return 0


def iter_results(path: Path) -> Iterator[dict[str, object]]:
    if not path.exists():
        return
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                yield json.loads(line)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(run_child(sys.argv[1:]))
