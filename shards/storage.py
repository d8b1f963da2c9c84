"""Where an output lives: a local folder or any fsspec URL (s3://, gs://, memory://, ...).

A local output is a `pathlib.Path`; an output at a URL is a `upath.UPath`, which offers the
same operations (`/`, `exists`, `glob`, `read_text`, ...) over fsspec. The rest of refinery
handles both alike, except in three places that differ by nature:

- Writes (`shards.writer.atomic_path`): a local file is written to a temporary name and
  renamed; object storage has no rename, so the file is written locally and put as one whole
  object. Either way a reader never sees half a file, and completion markers go last.
- Reads (`open_file`): a local file is memory-mapped; an object is read through fsspec, so a
  reader that selects columns fetches only their byte ranges.
- Listings are never cached: workers write objects that the flow process then looks for.

Credentials and endpoints come from the environment or fsspec's own config
(`AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT_URL_S3`, `~/.config/fsspec/`, ...), never from refinery's.
"""

import uuid
from pathlib import Path

import fsspec
import pyarrow as pa
from upath import UPath

LOCAL_PROTOCOLS = ("", "file", "local")


class StorageError(ValueError):
    """An output location that refinery cannot use; the message names it and why."""


def location(uri: str | Path) -> Path:
    """The output (or any file) at `uri`: a `Path` for a local path or `file://` URL, a
    `UPath` for another fsspec protocol.

    Raises:
        StorageError: the protocol is unknown, or its fsspec package is not installed.
    """
    if isinstance(uri, Path):
        return uri
    protocol, _, rest = uri.partition("://") if "://" in uri else ("", "", uri)
    if protocol in LOCAL_PROTOCOLS:
        return Path(rest)
    try:
        fsspec.get_filesystem_class(protocol)
    except (ValueError, ImportError) as e:
        raise StorageError(f"{uri}: cannot use {protocol}:// ({e})") from None
    # Another process (a worker) writes the objects this one lists: no cached listings.
    return UPath(uri, use_listings_cache=False)


def is_remote(path: Path) -> bool:
    """True for a location on object storage (anything but the local file system)."""
    return isinstance(path, UPath) and path.protocol not in LOCAL_PROTOCOLS


def open_file(path: Path) -> pa.NativeFile:
    """A random-access reader of the file at `path`: memory-mapped when local."""
    if is_remote(path):
        return pa.PythonFile(path.open("rb"), mode="r")
    return pa.memory_map(str(path))


def check_writable(root: Path) -> None:
    """Fail now, naming `root`, if an output cannot be written there: better than a run that
    computes for hours and then cannot save. Writes and removes one small object or file.

    Raises:
        StorageError: naming `root` and the reason.
    """
    probe = root / f".refinery-probe-{uuid.uuid4().hex[:8]}"
    try:
        if not is_remote(root):
            root.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except Exception as e:
        raise StorageError(f"output {root}: cannot write there ({type(e).__name__}: {e})") from None
