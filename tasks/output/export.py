"""Export: a finished output in the formats other trainers read.

- `megatron`: Megatron-LM / NeMo's indexed dataset, `<split>_text_document.bin` and `.idx`
  per split. Every document is one entry: its tokens under the output's tokenizer, then the
  end-of-document token, so the entries of a split, joined, are that split's token shards
  without their padding. The `.idx` is written as megatron-core's `IndexedDatasetBuilder`
  writes it (header `MMIDIDX`, version 1, dtype code, then the sequence lengths, byte
  pointers and document indices).
- `hf`: a Hugging Face `DatasetDict` as `save_to_disk` lays it out, so `datasets.load_from_disk`
  opens it: one folder per split with Arrow IPC stream files (every shard column, its types
  kept), `dataset_info.json` and `state.json`.

Documents are split into train and held-out exactly as `tokenize` splits them (by a seeded hash
of the document, rewrites with their source), so an exported held-out split is the token
shards' held-out split. Rewrites of held-out documents are in neither, as there, and counted.
Each export ends with its `manifest.json` (files with bytes and sha256, documents and tokens
per split, the output's fingerprint), written last: an export whose manifest names the
output's current fingerprint is done, and a run again skips it. Every file is written
atomically.
"""

import json
import struct
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.ipc as ipc
from prefect import task
from pydantic import BaseModel, Field, model_validator
from tokenizers import Tokenizer

from shards.exports import export_dir, hf_dict, hf_part, hf_split_file, megatron_file
from shards.manifest import manifest_path, read_manifest, shard_paths, void_manifest
from shards.mixture import draws, pick, weights_of
from shards.reader import read_schema, read_table
from shards.schema import AUGMENTED_FROM
from shards.storage import location
from shards.tokens import SPLITS, tokenizer_path, tokens_dir
from shards.writer import atomic_path, sha256_file, write_json
from tasks.output.tokenize import EOD, TokenizeConfig, encode, split_families

FORMATS = ("megatron", "hf")
MEGATRON_HEADER = b"MMIDIDX\x00\x00"
MEGATRON_DTYPES = {np.dtype(np.uint16): 8, np.dtype(np.int32): 4}  # megatron-core's codes


class ExportConfig(BaseModel, frozen=True, extra="forbid"):
    """Exports `prepare` writes at its end (none by default), and where."""

    formats: list[Literal["megatron", "hf"]] = []
    to: str | None = Field(None, description="folder or URI; default <output>/export")
    mixture: dict[str, dict[str, float]] = Field(
        default_factory=dict, description='train documents by weight, e.g. {lang: {en: 1, "*": 1}}'
    )

    @model_validator(mode="after")
    def _one_column(self) -> "ExportConfig":
        if len(self.mixture) > 1:
            raise ValueError("`mixture` weighs the values of one shard column")
        return self


SKIPPED = "skipped"  # rewrites of held-out documents: in no split, as in the token shards


def split_batches(out: Path, repeats: list[np.ndarray] | None = None
                  ) -> Iterator[tuple[int, str, pa.Table]]:  # fmt: skip
    """(shard number, split, rows) for every text shard of `out`, split as `tokenize` splits;
    the rows in neither split come as split `SKIPPED`. With `repeats` (`mixture_repeats`), each
    train row of shard i is repeated `repeats[i][row]` times (not at all when not drawn)."""
    manifest = read_manifest(out)
    cfg = TokenizeConfig.model_validate(manifest["config"]["tokenize"])
    for number, path in enumerate(shard_paths(out, manifest["shards"])):
        table = read_table(path)
        train, heldout = split_families(pl.from_arrow(table), cfg)  # type: ignore[arg-type]
        for split, mask in (("train", train), ("heldout", heldout), (SKIPPED, ~(train | heldout))):
            rows = table.filter(pa.array(mask))
            if split == "train" and repeats is not None:
                rows = rows.take(np.repeat(np.arange(rows.num_rows), repeats[number]))
            yield number, split, rows


def mixture_repeats(out: Path, mixture: dict[str, dict[str, float]], cfg: TokenizeConfig
                    ) -> tuple[list[np.ndarray], dict[str, Any]]:  # fmt: skip
    """How often each train document of each shard is drawn by `mixture` (as many draws as
    train documents, shared by weight over the values of one shard column; see
    `shards.mixture`), and the mixture's summary."""
    ((column, weights),) = mixture.items()
    manifest = read_manifest(out)
    values, sizes = [], []
    for path in shard_paths(out, manifest["shards"]):
        frame = mixture_columns(path, column)
        train, _ = split_families(frame, cfg)  # type: ignore[arg-type]
        values.append(frame[column].cast(pl.String).fill_null("unknown").filter(pl.Series(train)))
        sizes.append(int(train.sum()))
    labels = pl.concat(values) if values else pl.Series(values=[], dtype=pl.String)
    names = labels.unique(maintain_order=True).to_list()  # groups in order of first appearance
    groups = labels.cast(pl.Enum(names)).to_physical().to_numpy().astype(np.int64)
    per_group = np.bincount(groups, minlength=len(names))
    counts = draws(per_group, weights_of(names, weights), len(groups))
    members = np.split(np.argsort(groups, kind="stable"), np.cumsum(per_group))[:-1]
    chosen = [pick(m, int(c), [cfg.seed, g])
              for g, (m, c) in enumerate(zip(members, counts, strict=True))]  # fmt: skip
    times = np.bincount(np.concatenate([np.zeros(0, np.int64), *chosen]), minlength=len(groups))
    summary = {name: {"weight": float(w), "documents": int(n), "drawn": int(c),
                      "passes": round(c / n, 3)}
               for name, w, n, c in zip(names, weights_of(names, weights), per_group, counts,
                                        strict=True)}  # fmt: skip
    return np.split(times, np.cumsum(sizes)[:-1]), {"by": column, "groups": summary}


def mixture_columns(path: Path, column: str) -> pl.DataFrame:
    """The columns of the shard at `path` that a mixture over `column` needs."""
    if column not in read_schema(path).names:
        raise ValueError(f"export.mixture: the shards have no column {column!r}")
    return pl.from_arrow(read_table(path, list(dict.fromkeys(["doc_id", AUGMENTED_FROM, column]))))


def file_entry(path: Path, root: Path) -> dict[str, Any]:
    return {"path": str(path.relative_to(root)), "bytes": path.stat().st_size,
            "sha256": sha256_file(path)}  # fmt: skip


def megatron_index(lengths: np.ndarray, dtype: np.dtype) -> bytes:
    """The `.idx` bytes of one entry per document of `lengths` tokens."""
    pointers = np.concatenate([[0], np.cumsum(lengths[:-1], dtype=np.int64)]) * dtype.itemsize
    documents = np.arange(len(lengths) + 1, dtype=np.int64)
    return b"".join([
        MEGATRON_HEADER, struct.pack("<Q", 1), struct.pack("<B", MEGATRON_DTYPES[dtype]),
        struct.pack("<Q", len(lengths)), struct.pack("<Q", len(documents)),
        lengths.astype(np.int32).tobytes(), pointers.astype(np.int64).tobytes(),
        documents.tobytes(),
    ])  # fmt: skip


def write_megatron(out: Path, dest: Path, repeats: list[np.ndarray] | None) -> dict[str, Any]:
    """The documents as Megatron's indexed dataset in `dest`; the splits' counts."""
    if not tokenizer_path(tokens_dir(out)).exists():
        raise FileNotFoundError(f"{out}: no tokenizer to export with (tokenize.enabled is false)")
    tokenizer = Tokenizer.from_file(str(tokenizer_path(tokens_dir(out))))
    eod, vocab = tokenizer.token_to_id(EOD), tokenizer.get_vocab_size()
    dtype = np.dtype(np.uint16) if vocab < 65500 else np.dtype(np.int32)  # as megatron picks
    lengths: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    skipped = 0
    with ExitStack() as stack:  # each .bin takes its name only once every shard is in
        tmp = {s: stack.enter_context(atomic_path(megatron_file(dest, s, "bin"))) for s in SPLITS}
        files = {s: stack.enter_context(open(tmp[s], "wb")) for s in SPLITS}
        for _, split, rows in split_batches(out, repeats):
            skipped += rows.num_rows if split == SKIPPED else 0
            if split != SKIPPED:
                ids, counts = encode(rows.column("text").to_pylist(), tokenizer, eod)
                files[split].write(ids.astype(dtype).tobytes())
                lengths[split].append(counts)
    splits: dict[str, Any] = {}
    for split in SPLITS:
        sizes = np.concatenate(lengths[split]) if lengths[split] else np.zeros(0, np.int64)
        with atomic_path(megatron_file(dest, split, "idx")) as idx:
            idx.write_bytes(megatron_index(sizes, dtype))
        names = [megatron_file(dest, split, ext) for ext in ("bin", "idx")]
        splits[split] = {"documents": len(sizes), "tokens": int(sizes.sum()),
                         "files": [file_entry(p, dest) for p in names]}  # fmt: skip
    return {"dtype": dtype.name, "vocab_size": vocab, "splits": splits, "skipped": skipped}


def hf_split_files(dest: Path, split: str, files: list[Path], rows: int, name: str) -> None:
    """`state.json` and `dataset_info.json` of one split, as `save_to_disk` writes them."""
    state = {"_data_files": [{"filename": p.name} for p in files], "_fingerprint": name,
             "_format_columns": None, "_format_kwargs": {}, "_format_type": None,
             "_output_all_columns": False, "_split": split}  # fmt: skip
    info = {"description": f"refinery output, {split} split", "features": None,
            "splits": {split: {"name": split, "num_examples": rows}}}  # fmt: skip
    write_json(state, hf_split_file(dest, split, "state.json"))
    write_json(info, hf_split_file(dest, split, "dataset_info.json"))


def write_stream(rows: pa.Table, path: Path) -> Path:
    """`rows` as an Arrow IPC stream file (what `datasets` maps), atomically."""
    with atomic_path(path) as tmp, ipc.new_stream(str(tmp), rows.schema) as writer:
        for batch in rows.to_batches() or [pa.RecordBatch.from_pylist([], rows.schema)]:
            writer.write_batch(batch)
    return path


def write_hf(out: Path, dest: Path, repeats: list[np.ndarray] | None) -> dict[str, Any]:
    """The text shards as a Hugging Face `DatasetDict` in `dest`; the splits' counts."""
    manifest = read_manifest(out)
    written: dict[str, list[Path]] = {s: [] for s in SPLITS}
    rows_in = dict.fromkeys([*SPLITS, SKIPPED], 0)
    for number, split, rows in split_batches(out, repeats):
        rows_in[split] += rows.num_rows
        # An empty part is written only as a split's first file: `datasets` needs one.
        if split == SKIPPED or (rows.num_rows == 0 and written[split]):
            continue
        written[split].append(write_stream(rows, hf_part(dest, split, number)))
    for split in SPLITS:
        name = f"{manifest['fingerprint']}-{split}"
        hf_split_files(dest, split, written[split], rows_in[split], name)
    write_json({"splits": list(SPLITS)}, hf_dict(dest))
    files = {s: [file_entry(p, dest) for p in written[s]] for s in SPLITS}
    splits = {s: {"documents": rows_in[s], "files": files[s]} for s in SPLITS}
    return {"splits": splits, "skipped": rows_in[SKIPPED]}


WRITERS = {"megatron": write_megatron, "hf": write_hf}


def export(out: Path, fmt: str, to: Path | None = None,
           mixture: dict[str, dict[str, float]] | None = None) -> dict[str, Any]:  # fmt: skip
    """Export the finished output `out` as `fmt`, its train documents drawn by `mixture` if
    given (skipped when the same export is there already).

    Returns:
        The export's manifest.
    """
    source, mixture = read_manifest(out), mixture or {}
    dest = export_dir(out, to, fmt)
    if manifest_path(dest).exists():
        done = json.loads(manifest_path(dest).read_text())
        same = (done.get("source_fingerprint"), done.get("weights"))
        if same == (source["fingerprint"], mixture):
            return done
        void_manifest(dest)  # of an earlier output or mixture: written again below
    repeats, drawn = None, None
    if mixture:  # one pass over the shards' mixture column, before the one that writes
        cfg = TokenizeConfig.model_validate(source["config"]["tokenize"])
        repeats, drawn = mixture_repeats(out, mixture, cfg)
    result = WRITERS[fmt](out, dest, repeats)
    skipped = result.pop("skipped")
    manifest = {"format": fmt, "source_fingerprint": source["fingerprint"], "weights": mixture,
                "kept": source["totals"]["kept"], "rewrites_of_heldout_skipped": skipped,
                **result, **({"mixture": drawn} if drawn else {})}  # fmt: skip
    in_splits = sum(s["documents"] for s in result["splits"].values())
    if in_splits + skipped != manifest["kept"]:
        raise RuntimeError(f"export {fmt}: {in_splits} documents in the splits, "
                           f"{manifest['kept']} kept")  # fmt: skip
    write_json(manifest, manifest_path(dest))
    return manifest


@task(name="export")
def export_output(out: Path, cfg: ExportConfig) -> list[dict[str, Any]]:
    """The exports `export.formats` names, at the end of `prepare`."""
    to = location(cfg.to) if cfg.to else None
    return [export(out, fmt, to, cfg.mixture) for fmt in cfg.formats]
