"""Ingest's inputs: which files the input URIs name, in which format, grouped into partitions.

Inputs are local paths, directories, globs or any fsspec URL (`s3://...` with s3fs installed);
a file's format is known by its extension.
"""

from dataclasses import dataclass

import fsspec

FORMATS = {
    ".jsonl": "jsonl",
    ".jsonl.gz": "jsonl",
    ".jsonl.zst": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".txt": "text",
    ".txt.gz": "text",
    ".warc": "warc",
    ".warc.gz": "warc",
    ".wet": "warc",
    ".wet.gz": "warc",
    ".wat": "warc",
    ".wat.gz": "warc",
}


def format_of(path: str) -> str | None:
    """The input format of `path` by its extension, or None if refinery cannot read it."""
    name = path.lower()
    return next((fmt for ext, fmt in FORMATS.items() if name.endswith(ext)), None)


@dataclass(frozen=True)
class InputFile:
    """One input file: its URI, a stable name for ids (relative to its input root), size."""

    uri: str
    name: str
    size: int
    version: str  # mtime or ETag: part of the ingest fingerprint, so changed files are re-read


@dataclass(frozen=True)
class Partition:
    """A group of input files read by one ingest task."""

    name: str
    files: tuple[InputFile, ...]


def discover(uris: list[str]) -> tuple[list[InputFile], list[str]]:
    """Expand input URIs (files, directories, globs) into readable files.

    Returns:
        The readable files, sorted by URI, and the URIs of files skipped for their extension.

    Raises:
        FileNotFoundError: naming the first input that matches nothing.
    """
    found: dict[str, InputFile] = {}
    ignored: list[str] = []
    for uri in uris:
        fs, path = fsspec.core.url_to_fs(uri)
        if any(c in path for c in "*?["):
            paths = fs.glob(path)
        elif fs.isdir(path):
            paths = fs.find(path)
        elif fs.exists(path):
            paths = [path]
        else:
            paths = []
        if not paths:
            raise FileNotFoundError(f"input not found: {uri}")
        root = path.rstrip("/").rsplit("/", 1)[0] if fs.isdir(path) else ""
        for p in sorted(paths):
            if format_of(p) is None:
                ignored.append(fs.unstrip_protocol(p))
                continue
            info = fs.info(p)
            version = str(info.get("mtime") or info.get("LastModified") or info.get("ETag") or "")
            name = p[len(root) + 1 :] if root and p.startswith(root + "/") else p.rsplit("/", 1)[-1]
            full = fs.unstrip_protocol(p)
            found[full] = InputFile(full, name, int(info.get("size") or 0), version)
    return sorted(found.values(), key=lambda f: f.uri), ignored


def plan_partitions(files: list[InputFile], partition_bytes: int) -> list[Partition]:
    """Group files, in order, into partitions of about `partition_bytes` input bytes."""
    groups: list[list[InputFile]] = []
    size = 0
    for f in files:
        if not groups or size + f.size > partition_bytes:
            groups.append([])
            size = 0
        groups[-1].append(f)
        size += f.size
    return [Partition(f"p{i:05d}", tuple(g)) for i, g in enumerate(groups)]
