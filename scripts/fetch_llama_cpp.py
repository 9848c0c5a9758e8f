#!/usr/bin/env python3
"""Fill ``extern/llama.cpp`` with the pinned llama.cpp source.

llama.cpp is pinned to the copy vendored in the ``llama-cpp-python`` sdist named in
``scripts/pin.json``. This script downloads that sdist from PyPI (only PyPI is reachable from
our machines), checks its sha256, and unpacks nothing but ``vendor/llama.cpp`` into
``extern/llama.cpp``. It needs nothing but the standard library, so the README's first
command works in a bare virtual environment: the file is fetched from the package index's
"simple" page (``PIP_INDEX_URL`` or pip's configured index), with ``pip download`` only as
a fallback.

It is idempotent: a tree that already carries the pin's marker is left alone, and a
downloaded sdist is kept in the cache directory, so later runs work offline.

Usage::

    python scripts/fetch_llama_cpp.py            # fetch if needed
    python scripts/fetch_llama_cpp.py --force    # unpack again even if present
    python scripts/fetch_llama_cpp.py --check    # exit 1 if extern/llama.cpp is not the pin

Environment:
    LLAMABIND_CACHE   cache root (default ``~/.cache/llamabind``)
"""

from __future__ import annotations

import argparse
import hashlib
import html.parser
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PIN = json.loads((ROOT / "scripts" / "pin.json").read_text())
DEST = ROOT / "extern" / "llama.cpp"
MARKER = ".llamabind-pin"


class FetchError(RuntimeError):
    """A step failed; the message says what and what to do about it."""


def cache_dir() -> Path:
    root = os.environ.get("LLAMABIND_CACHE") or Path.home() / ".cache" / "llamabind"
    return Path(root) / "sdist"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sdist_name() -> str:
    return f"{PIN['package'].replace('-', '_')}-{PIN['version']}.tar.gz"


def marker_text() -> str:
    return f"{PIN['package']}=={PIN['version']} sha256={PIN['sdist_sha256']} commit={PIN['llama_cpp_commit']}\n"


def is_current() -> bool:
    marker = DEST / MARKER
    return marker.is_file() and marker.read_text() == marker_text()


def index_url() -> str:
    """The package index pip would use: PIP_INDEX_URL, else pip's configured index-url,
    else PyPI."""
    url = os.environ.get("PIP_INDEX_URL")
    if not url:
        proc = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.index-url"],
                              capture_output=True, text=True)
        url = proc.stdout.strip() if proc.returncode == 0 else ""
    return (url or "https://pypi.org/simple").rstrip("/")


class _Links(html.parser.HTMLParser):
    """The file links of a PEP 503 "simple" project page."""

    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        href = dict(attrs).get("href")
        if tag == "a" and href:
            self.hrefs.append(href)


def sdist_url() -> str:
    """The sdist's URL on the index's project page (the "simple" API every index serves)."""
    page_url = f"{index_url()}/{PIN['package']}/"
    with urllib.request.urlopen(page_url, timeout=60) as response:
        page = response.read().decode("utf-8", errors="replace")
    links = _Links()
    links.feed(page)
    for href in links.hrefs:
        url = urllib.parse.urljoin(page_url, href)
        if urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1] == sdist_name():
            return url.split("#", 1)[0]
    raise FetchError(f"{page_url} lists no {sdist_name()}")


def _download_direct(path: Path) -> None:
    """Downloads the sdist file itself: no pip, so nothing but the standard library is needed
    (pip would prepare the sdist's metadata, which needs its build backend)."""
    url = sdist_url()
    print(f"[fetch_llama_cpp] downloading {url} ...", flush=True)
    partial = path.with_suffix(".part")
    with urllib.request.urlopen(url, timeout=120) as response, partial.open("wb") as out:
        shutil.copyfileobj(response, out, 1 << 20)
    partial.replace(path)


def _download_with_pip(path: Path) -> None:
    # --no-build-isolation: pip still prepares the sdist's metadata, and with isolation it
    # would first build the sdist's build requirements (cmake among them) from source.
    spec = f"{PIN['package']}=={PIN['version']}"
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps",
        "--no-binary", PIN["package"], "--no-build-isolation",
        "--dest", str(path.parent), spec,
    ]
    print(f"[fetch_llama_cpp] downloading {spec} with pip ...", flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not path.is_file():
        raise FetchError(
            f"`{' '.join(cmd)}` failed (exit {proc.returncode}).\n"
            f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}\n"
            "This needs network access to PyPI once (later runs use the cache in "
            f"{path.parent}), and scikit-build-core installed for pip's metadata step "
            "(`pip install scikit-build-core`). Alternatively point the build at your own "
            "llama.cpp checkout with LLAMABIND_LLAMA_CPP_DIR."
        )


def download(target_dir: Path) -> Path:
    """Return the verified sdist, downloading it only when the cache lacks it: straight from
    the package index, or (if that fails, e.g. behind an index pip alone can reach) with pip."""
    target_dir.mkdir(parents=True, exist_ok=True)
    path = target_dir / sdist_name()
    if path.is_file() and sha256_of(path) == PIN["sdist_sha256"]:
        return path
    if path.exists():
        path.unlink()
    try:
        _download_direct(path)
    except (OSError, FetchError, ValueError) as exc:
        print(f"[fetch_llama_cpp] direct download failed ({exc}); trying pip", flush=True)
        _download_with_pip(path)
    got = sha256_of(path)
    if got != PIN["sdist_sha256"]:
        path.unlink()
        raise FetchError(
            f"{path.name} has sha256 {got}, expected {PIN['sdist_sha256']} (scripts/pin.json). "
            "The file was removed; the download is corrupt or PyPI served a different file."
        )
    return path


def unpack(sdist: Path) -> None:
    prefix = f"{sdist_name()[:-len('.tar.gz')]}/{PIN['subdir']}/"
    staging = Path(tempfile.mkdtemp(prefix="llama.cpp-", dir=DEST.parent))
    try:
        count = 0
        with tarfile.open(sdist, "r:gz") as tar:
            for member in tar.getmembers():
                if not member.name.startswith(prefix) or member.name == prefix:
                    continue
                relative = member.name[len(prefix):]
                if relative.split("/")[0] == ".git":
                    continue  # a submodule gitlink in the sdist; it would confuse git here
                if not (member.isfile() or member.isdir()):
                    continue  # the vendored tree has no links we need; never follow any
                if relative.startswith("/") or ".." in Path(relative).parts:
                    raise FetchError(f"refusing unsafe path in sdist: {member.name}")
                out = staging / relative
                if member.isdir():
                    out.mkdir(parents=True, exist_ok=True)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, out.open("wb") as dst:  # type: ignore[union-attr]
                    shutil.copyfileobj(src, dst)
                os.chmod(out, 0o755 if member.mode & 0o111 else 0o644)
                count += 1
        if count == 0:
            raise FetchError(f"{sdist.name} has no {PIN['subdir']}/ directory")
        (staging / MARKER).write_text(marker_text())
        if DEST.exists():
            shutil.rmtree(DEST)
        staging.rename(DEST)
        print(f"[fetch_llama_cpp] unpacked {count} files into {DEST}", flush=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="unpack again even if present")
    parser.add_argument("--check", action="store_true", help="only check, exit 1 if missing")
    args = parser.parse_args(argv)

    if args.check:
        ok = is_current()
        print(f"[fetch_llama_cpp] {DEST}: {'pinned source present' if ok else 'missing or stale'}")
        return 0 if ok else 1
    if is_current() and not args.force:
        print(f"[fetch_llama_cpp] {DEST} already holds {PIN['package']}=={PIN['version']}")
        return 0
    try:
        DEST.parent.mkdir(parents=True, exist_ok=True)
        unpack(download(cache_dir()))
    except FetchError as exc:
        print(f"[fetch_llama_cpp] error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
