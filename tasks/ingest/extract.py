"""HTML to text with trafilatura, under a hard time, size and memory limit per page.

trafilatura can run for minutes, or take gigabytes, on a pathological page, and a Python
thread cannot be stopped. So pages are extracted in a worker process (started with
`subprocess`, which works in threads, process pools and Dask workers alike): a page over the
time limit gets its worker killed and a fresh one started, and the run goes on.

The precise settings come first; when they find no main text, or a short one, trafilatura's
default settings, then `favor_recall`, then its baseline extractor are tried, all in the worker
and within the page's one time limit (`extract_page`).

In: HTML bytes and the page URL. Out: a `Page` with text, title, date, the language the page
declares and the settings that found the text, or the reason it has none.
"""

import atexit
import contextlib
import os
import pickle
import re
import select
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from types import TracebackType
from typing import Any, BinaryIO, Literal

from pydantic import BaseModel, Field

from tasks.lazy import serial_imports

# The settings that can find a page's text, as `Page.method` and the `extraction` column name
# them: trafilatura with favor_precision, with its defaults, with favor_recall, and its
# baseline extractor (JSON-LD article bodies, <article>, <p> elements, else the whole body).
Fallback = Literal["default", "recall", "baseline"]


class ExtractConfig(BaseModel, frozen=True, extra="forbid"):
    """trafilatura's options and the limits each page is extracted under."""

    timeout_s: float = Field(
        10.0, gt=0, description="wall time per page, every setting tried, before it is abandoned"
    )
    max_html_bytes: int = Field(5 << 20, gt=0, description="larger pages are not extracted")
    memory_mb: int = Field(4096, ge=256, description="address-space limit of the worker")
    favor_precision: bool = Field(True, description="try trafilatura's precise settings first")
    include_tables: bool = True
    include_comments: bool = False
    extensive_date_search: bool = Field(False, description="htmldate's slower, deeper search")
    fallbacks: tuple[Fallback, ...] = Field(
        ("default", "recall", "baseline"),
        description="tried in order while the text is empty or short: trafilatura's default "
        "settings, favor_recall, its baseline extractor (this one only while there is no text)",
    )
    # A short text, and the gain a retry must bring, as trafilatura's own recall escalation
    # judges them (its ESCALATION_* constants, calibrated on four extraction benchmarks).
    short_chars: int = Field(3000, ge=0, description="a text under this many characters ...")
    short_share: float = Field(
        0.2, ge=0, le=1, description="... and under this share of the page's text is short"
    )
    longer_by: float = Field(
        1.5, ge=1, description="a retry replaces a short text only when this many times longer"
    )


TIMEOUT = "ingest_extract_timeout"
TOO_LARGE = "ingest_html_too_large"
FAILED = "ingest_extract_error"
NO_TEXT = "ingest_no_text"


@dataclass(frozen=True)
class Page:
    """What extraction made of one page; `reason` and `detail` say why there is no text."""

    text: str | None = None
    title: str | None = None
    date: str | None = None
    declared_lang: str | None = None
    method: str | None = None  # the settings that found the text: "precision", a `Fallback`
    reason: str | None = None
    detail: str | None = None


_HTML_LANG = re.compile(rb"<html\b[^>]*?\blang\s*=\s*[\"']?\s*([A-Za-z]{2,3})\b", re.I)
_META_LANG = re.compile(
    rb"<meta\b[^>]*?http-equiv\s*=\s*[\"']?content-language[\"']?[^>]*?"
    rb"content\s*=\s*[\"']?\s*([A-Za-z]{2,3})\b",
    re.I,
)


def declared_language(html: bytes, header: str | None = None) -> str | None:
    """The primary language subtag a page declares, lower-case: `<html lang>`, else the
    content-language meta tag, else the HTTP Content-Language header (`en-GB` gives `en`)."""
    head = html[:65536]
    for pattern in (_HTML_LANG, _META_LANG):
        if m := pattern.search(head):
            return m.group(1).decode("ascii").lower()
    if header and (m := re.match(r"\s*([A-Za-z]{2,3})\b", header)):
        return m.group(1).lower()
    return None


def extract_page(html: bytes, url: str | None, cfg: ExtractConfig) -> Page:
    """Extract one page in this process, with no time limit (the worker's side).

    The first settings' text stands unless it is empty, or short (`_retry`): then each of
    `cfg.fallbacks` is tried in turn, and its text replaces the one so far if that was empty
    or it is `cfg.longer_by` times longer. The page is parsed once for all of them.
    """
    with serial_imports():
        import trafilatura

    tree = trafilatura.load_html(html)
    if tree is None:
        return Page(reason=NO_TEXT, detail="not a page lxml can parse as HTML")
    page_chars = cache(lambda: len(trafilatura.html2txt(tree).strip()))
    first = "precision" if cfg.favor_precision else "default"
    text, method = main_text(tree, url, first, cfg), first
    for fallback in cfg.fallbacks:
        if fallback == first or not _retry(text, fallback, page_chars, cfg):
            continue
        found = main_text(tree, url, fallback, cfg)
        if len(found.strip()) > cfg.longer_by * len(text.strip()):
            text, method = found, fallback
    if not text.strip():
        tried = ", ".join(dict.fromkeys((first, *cfg.fallbacks)))
        return Page(reason=NO_TEXT, detail=f"no main text found ({tried})")
    title, date = title_and_date(tree, url, cfg)
    return Page(text=text, title=title, date=date, method=method)


def main_text(tree: Any, url: str | None, method: str, cfg: ExtractConfig) -> str:
    """The main text one setting finds in a parsed page ("" if none)."""
    with serial_imports():
        import trafilatura

    if method == "baseline":
        return trafilatura.baseline(tree)[1]
    doc = trafilatura.bare_extraction(
        tree,  # bare_extraction works on a copy: the one parse serves every setting
        url=url,
        favor_precision=method == "precision",
        favor_recall=method == "recall",
        include_tables=cfg.include_tables,
        include_comments=cfg.include_comments,
        with_metadata=False,
    )
    return "" if doc is None else doc.text or ""


def title_and_date(tree: Any, url: str | None, cfg: ExtractConfig) -> tuple[str | None, str | None]:
    """The page's title and the date it states, as `trafilatura.extract_metadata` finds them
    (meta tags, then JSON-LD, then the title element; htmldate for the date), without the
    author, categories, tags and licence it also looks for: those took half of the time of
    extracting a page."""
    from html import unescape

    with serial_imports():
        from htmldate import find_date
        from trafilatura.metadata import examine_meta, extract_meta_json, extract_title, extract_url
        from trafilatura.utils import line_processing

    meta = examine_meta(tree)
    with contextlib.suppress(Exception):  # as trafilatura guards it: its JSON-LD parser has bugs
        meta = extract_meta_json(tree, meta)
    title = meta.title or extract_title(tree)
    page_url = meta.url or extract_url(tree, url)
    date = find_date(tree, url=page_url, extensive_search=cfg.extensive_date_search)
    if title and len(title) > 10_000:  # trimmed as trafilatura trims its metadata
        title = title[:9999] + "…"
    return (line_processing(unescape(title)) if title else None) or None, date or None


def _retry(text: str, fallback: str, page_chars: Callable[[], int], cfg: ExtractConfig) -> bool:
    """Whether to try `fallback` after `text`: always when it is empty; when it is short (under
    `cfg.short_chars` and under `cfg.short_share` of the page's text) unless `fallback` is the
    baseline extractor. On the benchmark, the baseline's text in place of a short one lowered
    F1 from 0.968 to 0.959: it takes in boilerplate."""
    size = len(text.strip())
    if size == 0:
        return True
    # page_chars parses the page's text out: only for texts short enough to need it
    return (
        fallback != "baseline" and size < cfg.short_chars and size < cfg.short_share * page_chars()
    )


# Frames on the pipes: a 4-byte big-endian length, then a pickle.
_HEADER = struct.Struct(">I")


def _write_frame(stream: BinaryIO, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _read_exact(stream: BinaryIO, n: int) -> bytes:
    data = stream.read(n)
    if len(data) != n:
        raise EOFError("pipe closed")
    return data


def serve(stdin: BinaryIO, stdout: BinaryIO) -> None:
    """The worker loop: read (config, html, url) frames, answer each with a `Page`."""
    import trafilatura  # noqa: F401 (imported before "ready", so no page pays for it)

    _write_frame(stdout, "ready")
    while header := stdin.read(_HEADER.size):
        cfg, html, url = pickle.loads(_read_exact(stdin, _HEADER.unpack(header)[0]))
        try:
            page = extract_page(html, url, cfg)
        except Exception as e:  # a bad page must not end the worker
            page = Page(reason=FAILED, detail=f"{type(e).__name__}: {e}"[:500])
        _write_frame(stdout, page)


class Extractor:
    """Extract pages in a worker process, killing and replacing it when a page runs too long.

    Use as a context manager; the worker starts on the first page that needs it.
    """

    STARTUP_TIMEOUT_S = 120.0

    def __init__(self, cfg: ExtractConfig) -> None:
        self.cfg = cfg
        self._proc: subprocess.Popen[bytes] | None = None
        self._buffer = b""

    def __enter__(self) -> "Extractor":
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            for pipe in (self._proc.stdin, self._proc.stdout):
                if pipe is not None:
                    pipe.close()
            self._proc, self._buffer = None, b""

    def extract(self, html: bytes, url: str | None) -> Page:
        """Extract one page; a page over a limit, or one that kills the worker, gets a reason."""
        if len(html) > self.cfg.max_html_bytes:
            detail = f"{len(html)} bytes of HTML, limit {self.cfg.max_html_bytes}"
            return Page(reason=TOO_LARGE, detail=detail)
        try:
            self._start()
            assert self._proc is not None and self._proc.stdin is not None
            _write_frame(self._proc.stdin, (self.cfg, html, url))
            page = self._receive(self.cfg.timeout_s)
        except TimeoutError:
            self.close()
            return Page(reason=TIMEOUT, detail=f"extraction ran past {self.cfg.timeout_s:g} s")
        except (EOFError, OSError) as e:
            code = self._proc.poll() if self._proc is not None else None
            self.close()
            return Page(reason=FAILED, detail=f"extraction worker died (exit {code}): {e}")
        declared = declared_language(html)
        return Page(**{**page.__dict__, "declared_lang": declared}) if page.text else page

    def _start(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        self.close()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tasks.ingest.extract", str(self.cfg.memory_mb)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": _package_root()},
        )
        try:
            self._receive(self.STARTUP_TIMEOUT_S)  # "ready", once trafilatura is importable
        except TimeoutError:
            raise EOFError("extraction worker did not start") from None

    def _receive(self, timeout_s: float) -> Any:
        header = self._read(_HEADER.size, time.monotonic() + timeout_s)
        deadline = time.monotonic() + timeout_s
        return pickle.loads(self._read(_HEADER.unpack(header)[0], deadline))

    def _read(self, n: int, deadline: float) -> bytes:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        while len(self._buffer) < n:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError
            chunk = os.read(fd, max(n - len(self._buffer), 1 << 16))
            if not chunk:
                raise EOFError("extraction worker closed its output")
            self._buffer += chunk
        data, self._buffer = self._buffer[:n], self._buffer[n:]
        return data


_OWN = threading.local()  # each thread's extractors, by config


def shared_extractor(cfg: ExtractConfig) -> Extractor:
    """This thread's extractor for `cfg`, kept for the partitions it reads next: starting one
    (Python, trafilatura, cold caches) costs about 0.3 s of CPU, once per thread, not once per
    partition. Its worker process ends with this one."""
    own = _OWN.__dict__.setdefault("extractors", {})
    if cfg not in own:
        own[cfg] = Extractor(cfg)
        atexit.register(own[cfg].close)
    return own[cfg]


def _package_root() -> str:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)


def _limit_memory(megabytes: int) -> None:
    import resource

    limit = megabytes << 20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def main() -> None:
    """The worker process: `python -m tasks.ingest.extract MEMORY_MB`."""
    _limit_memory(int(sys.argv[1]))
    out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints must not corrupt frames
    serve(sys.stdin.buffer, out)


if __name__ == "__main__":
    from tasks.ingest import extract  # this module under its own name, so pickles name it

    extract.main()
