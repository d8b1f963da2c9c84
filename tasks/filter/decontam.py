"""Decontamination: drop the documents that share n-grams with an evaluation set.

Each evaluation set the config names (`decontam.eval_sets`: a name and its files, folders or
globs of JSONL, Parquet or text, on any fsspec file system) is read once into an index: the
sorted 64-bit hashes of its n-grams, cached in the run's work directory (`evalset-<key>/`) and
rebuilt only when a file, `n` or the fields read change. Every string field of a record is
indexed apart (`fields` to name some), so no n-gram spans two fields.

Text is compared in normalised words: NFKC, case-folded, split into runs of letters and digits,
where every character of a script written without spaces (Han, kana, Thai, Lao, Khmer,
Myanmar) is a word of its own, so those scripts are compared in character n-grams. An
evaluation text shorter than `n` words but at least `min_words` long is indexed whole, and
documents are searched for it too. A document sharing at least `min_overlap` of an
evaluation set's n-grams is dropped with `decontam_overlap`; the ledger's detail names the set
and quotes the first shared n-gram. A translation shares no n-gram with its source and is kept.
"""

import functools
import json
import re
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash
from prefect import task
from pydantic import BaseModel, Field, field_validator

from shards.reader import read_table
from shards.workdir import StageDir
from shards.writer import write_table
from tasks.ingest.inputs import discover, format_of
from tasks.partition import run_partitions
from tasks.records import TEXT, Rule, StageResult, StageStats, apply_rules

STAGE = "decontam"
OVERLAP = "decontam_overlap"
WORDS_VERSION = 2  # in the index key: a change to how text is cut into words rebuilds indexes
_NO_SPACE = (
    "\u0e00-\u0e7f\u0e80-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u31f0-\u31ff"
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f"
)
_WORD = re.compile(f"[{_NO_SPACE}]|[^\\W{_NO_SPACE}]+")
_PRIME = np.uint64(0x100000001B3)


class DecontamConfig(BaseModel, frozen=True, extra="forbid"):
    """Evaluation sets to keep out of the training data, and what counts as an overlap."""

    eval_sets: dict[str, list[str]] = Field(
        default_factory=dict, description="name -> files, folders or globs (any fsspec URI)"
    )
    n: int = Field(13, gt=0, description="words per n-gram (characters where no spaces)")
    min_words: int = Field(8, gt=0, description="shorter evaluation texts are not indexed")
    min_overlap: int = Field(1, gt=0, description="shared n-grams that drop a document")
    fields: list[str] | None = Field(None, description="JSONL/Parquet fields; all strings")

    @field_validator("eval_sets", mode="before")
    @classmethod
    def _listed(cls, sets: Any) -> Any:
        if isinstance(sets, dict):
            return {k: [v] if isinstance(v, str) else v for k, v in sets.items()}
        return sets

    @field_validator("eval_sets")
    @classmethod
    def _local_ones_exist(cls, sets: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, uris in sets.items():
            for uri in uris:
                local = "://" not in uri and not any(c in uri for c in "*?[")
                if local and not Path(uri).exists():
                    raise ValueError(f"eval set {name!r}: no such file or folder: {uri}")
        return sets

    @property
    def enabled(self) -> bool:
        return bool(self.eval_sets)


def words(text: str) -> tuple[str, list[re.Match[str]]]:
    """The normalised text and its words (see the module docstring)."""
    norm = unicodedata.normalize("NFKC", text).casefold()
    return norm, list(_WORD.finditer(norm))


@functools.lru_cache(maxsize=1 << 20)
def word_hash(word: str) -> int:
    return xxhash.xxh3_64_intdigest(word.encode())


def gram_hashes(ids: np.ndarray, n: int) -> np.ndarray:
    """The hash of every run of `n` consecutive word hashes (a polynomial, mod 2**64)."""
    count = len(ids) - n + 1
    if count <= 0:
        return np.empty(0, np.uint64)
    out = np.zeros(count, np.uint64)
    for j in range(n):
        out = out * _PRIME + ids[j : j + count]
    return out


def word_ids(found: list[re.Match[str]]) -> np.ndarray:
    return np.fromiter((word_hash(m.group()) for m in found), np.uint64, len(found))


def read_texts(uri: str, fields: list[str] | None) -> Iterator[str]:
    """Every string field (or `fields`) of every record of an evaluation file; a text file's
    whole text."""
    kind = format_of(uri)
    if kind == "parquet":
        with fsspec.open(uri, "rb") as f:
            frame = pl.from_arrow(pq.read_table(f))
        names = fields or [c for c, t in frame.schema.items() if t == pl.String]
        for name in (n for n in names if n in frame.columns):
            yield from (t for t in frame[name].to_list() if isinstance(t, str))
        return
    with fsspec.open(uri, "rb", compression="infer") as f:
        data = f.read()
    if kind == "text":
        yield data.decode("utf-8", "replace")
        return
    for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        try:
            record = json.loads(line) if line.strip() else {}
        except json.JSONDecodeError as e:
            raise ValueError(f"{uri} line {number}: not JSON ({e.msg})") from None
        values = [record.get(f) for f in fields] if fields else list(record.values())
        yield from (v for v in values if isinstance(v, str))


def index_key(name: str, uris: list[str], cfg: DecontamConfig) -> dict[str, Any]:
    """What an evaluation set's index depends on: its files (by size and version), the n-gram
    settings and how words are cut. Raises FileNotFoundError naming a missing input."""
    files, ignored = discover(uris)
    if ignored:
        raise ValueError(f"decontam.eval_sets.{name}: cannot read {ignored[0]}")
    return {"name": name, "files": [[f.uri, f.size, f.version] for f in files], "n": cfg.n,
            "min_words": cfg.min_words, "fields": cfg.fields, "words": WORDS_VERSION}  # fmt: skip


def build_index(key: dict[str, Any], cfg: DecontamConfig) -> pa.Table:
    """The sorted, distinct n-gram hashes of an evaluation set; its metadata lists the lengths
    of the short texts indexed whole."""
    hashes, short = [], set()
    for uri, *_ in key["files"]:
        for text in read_texts(uri, cfg.fields):
            ids = word_ids(words(text)[1])
            if len(ids) < cfg.min_words:
                continue
            size = min(len(ids), cfg.n)
            short |= {size} if size < cfg.n else set()
            hashes.append(gram_hashes(ids, size))
    unique = np.unique(np.concatenate(hashes)) if hashes else np.empty(0, np.uint64)
    lengths = json.dumps(sorted(short | {cfg.n}))
    return pa.table({"hash": unique}).replace_schema_metadata({"lengths": lengths})


@task(name="decontam-index")
def index_eval_set(work: Path, name: str, uris: list[str], cfg: DecontamConfig) -> StageDir:
    """The work directory holding an evaluation set's index, built if it is not there yet."""
    key = index_key(name, uris, cfg)
    at = StageDir.of(work, "evalset", key, "")
    if not at.index.exists():
        write_table(build_index(key, cfg), at.index, compression=None)
    return at


@functools.lru_cache(maxsize=8)
def load_index(path: Path) -> tuple[np.ndarray, tuple[int, ...]]:
    table = read_table(path)
    lengths = json.loads(table.schema.metadata[b"lengths"])
    return table.column("hash").to_numpy(), tuple(lengths)


def first_overlap(text: str, indexes: dict[str, Path], min_overlap: int) -> str | None:
    """The detail of a document's overlap ("<set>: <n-gram>"), or None if it has none."""
    norm, found = words(text)
    ids = word_ids(found)
    for name, path in indexes.items():
        index, lengths = load_index(path)
        for size in lengths:
            grams = gram_hashes(ids, size)
            if not len(grams) or not len(index):
                continue
            at = np.minimum(np.searchsorted(index, grams), len(index) - 1)
            hit = np.flatnonzero(index[at] == grams)
            if len(np.unique(grams[hit])) >= min_overlap:
                start, end = found[hit[0]].start(), found[hit[0] + size - 1].end()
                return f"{name}: {norm[start:end]}"
    return None


def decontaminate(df: pl.DataFrame, indexes: dict[str, Path], cfg: DecontamConfig) -> StageResult:
    """Drop the rows of `df` that overlap an evaluation set (the first set named wins)."""
    details = [first_overlap(t or "", indexes, cfg.min_overlap) for t in df[TEXT].to_list()]
    tagged = df.with_columns(pl.Series("_overlap", details, pl.String))
    rule = Rule(OVERLAP, pl.col("_overlap").is_not_null(), pl.col("_overlap"))
    result = apply_rules(tagged, STAGE, [rule])
    return StageResult(result.kept.drop("_overlap"), result.removed)


@task(name="decontam")
def decontam(
    parts: list[str], src: StageDir, out: StageDir, indexes: dict[str, Path], cfg: DecontamConfig
) -> StageStats:
    """Decontaminate partitions of `src` into `out`."""
    return run_partitions(src, out, parts, lambda df: decontaminate(df, indexes, cfg))
