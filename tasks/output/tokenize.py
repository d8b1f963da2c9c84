"""Tokenize: text shards to packed token shards for pretraining.

In: the text shards (doc_id, text). Out: token shards of a train and a held-out split (see
`shards.tokens`), rows of `seq_len + 1` token ids (documents joined by the end-of-document
token), the held-out split chosen by document, the tokenizer, and the token shards' manifest.
A byte-level BPE tokenizer is trained on a bounded sample of the shards unless `tokenizer`
names a tokenizer.json. Shards are read batch by batch, so memory stays bounded whatever the
corpus size.

Every held-out token is labelled with its document's language and source, so evaluation can
report the loss per language and per source. A document's source is the input dataset it
came from (the first folder of its file under the input it was found in, or the file's own
name without extension; see `dataset_of`), or the value of `source_field`; sources past the
`max_sources` first ones seen are labelled "other".
"""

import itertools
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.ipc as ipc
import xxhash
from prefect import task
from pydantic import BaseModel, Field
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from shards.manifest import shard_paths, void_manifest
from shards.reader import read_frame
from shards.schema import AUGMENTED_FROM, SOURCE
from shards.storage import open_file
from shards.tokens import (
    SPLITS,
    TokenShardWriter,
    finished_tokens,
    split_dir,
    token_dtype,
    tokenizer_path,
    tokens_dir,
    write_token_manifest,
)
from shards.writer import atomic_path, sha256_file
from tasks.progress import StageProgress
from tasks.records import StageStats

STAGE = "tokenize"
EOD, PAD, MASK = "<|endoftext|>", "<|pad|>", "<|mask|>"
SPECIAL_TOKENS = [EOD, PAD, MASK]
SLICE_LABELS = ("lang", "source")  # what tokens are labelled with (and label_columns)


class TokenizeConfig(BaseModel, frozen=True, extra="forbid"):
    enabled: bool = True
    tokenizer: str | None = Field(None, description="a tokenizer.json; trained when unset")
    vocab_size: int = Field(8192, ge=256 + len(SPECIAL_TOKENS))
    train_docs: int = Field(20_000, gt=0, description="documents sampled to train the tokenizer")
    seq_len: int = Field(256, gt=0, description="tokens a model sees per sequence")
    heldout_fraction: float = Field(0.02, ge=0, le=1, description="1: an evaluation set")
    seed: int = 0
    rows_per_shard: int = Field(32768, gt=0)
    source_field: str | None = Field(None, description="the column naming a document's source")
    max_sources: int = Field(32, gt=0, description="sources (values of a label) kept apart")
    label_columns: list[str] = Field(
        [], description="more shard columns to label tokens with (mixtures, evaluation)"
    )


def iter_texts(
    shard_paths: list[Path], batch_rows: int = 1024, columns: tuple[str, ...] = ("doc_id", "text")
) -> Iterator[pl.DataFrame]:
    """`columns` of the shards, in order, a batch at a time (null where a shard lacks one)."""
    for path in shard_paths:
        with open_file(path) as source:
            names = ipc.open_file(source).schema.names
        frame = read_frame(path, [c for c in columns if c in names])
        frame = frame.select(c if c in names else pl.lit(None, pl.String).alias(c) for c in columns)
        for offset in range(0, frame.height, batch_rows):
            yield frame.slice(offset, batch_rows)


def train_tokenizer(texts: Iterator[str], vocab_size: int) -> Tokenizer:
    """A byte-level BPE tokenizer with the end-of-document, padding and mask tokens."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def is_heldout(doc_ids: list[str], fraction: float, seed: int) -> np.ndarray:
    """A stable, seeded choice of documents for the held-out split."""
    cut = int(fraction * 2**64)
    return np.array([xxhash.xxh3_64_intdigest(d.encode(), seed) < cut for d in doc_ids], bool)


def encode(texts: list[str], tokenizer: Tokenizer, eod_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of `texts`, each document followed by the end-of-document token, and each
    document's token count."""
    docs = [[*e.ids, eod_id] for e in tokenizer.encode_batch(texts)]
    lengths = np.array([len(d) for d in docs], dtype=np.int64)
    flat = itertools.chain.from_iterable(docs)
    return np.fromiter(flat, dtype=np.int64, count=int(lengths.sum())), lengths


def _root_path(root: str) -> str:
    """An input URI as the path its files' URIs start with (a glob: its folder)."""
    path = os.path.normpath(root.split("://", 1)[1]) if "://" in root else str(Path(root).resolve())
    wild = min((path.find(c) for c in "*?[" if c in path), default=-1)
    return (path[:wild].rsplit("/", 1)[0] if wild >= 0 else path).rstrip("/")


def dataset_of(source: str, roots: list[str]) -> str:
    """The input dataset of a document's `source` ("<file URI>:<offset>") among the input
    `roots` (URIs as the inputs were given): the first folder of its file under the longest
    root it is under, or the file's name without extension."""
    head, _, offset = source.rpartition(":")
    path = os.path.normpath((head if offset.isdigit() else source).split("://", 1)[-1])
    for root in sorted(map(_root_path, roots), key=len, reverse=True):
        rest = path[len(root) + 1 :] if path.startswith(root + "/") else ""
        if "/" in rest:
            return rest.split("/", 1)[0]
    name = path.rsplit("/", 1)[-1]
    return name.split(".", 1)[0] or name


class Slices:
    """Label indices of the documents' languages, sources and `label_columns`, in order of
    first use; past `max_sources` values of one label, the rest are "other"."""

    def __init__(self, cfg: "TokenizeConfig", roots: list[str]) -> None:
        self.cfg, self.roots = cfg, roots
        self.labels = (*SLICE_LABELS, *cfg.label_columns)
        self.names: dict[str, dict[str, int]] = {label: {} for label in self.labels}

    def _index(self, label: str, value: str, cap: int) -> int:
        names = self.names[label]
        if value not in names:
            value = value if len(names) < cap else "other"
            names.setdefault(value, len(names))
        return names[value]

    def _values(self, batch: pl.DataFrame, label: str) -> list[str]:
        column = self.cfg.source_field or SOURCE if label == "source" else label
        values = batch[column].cast(pl.String).fill_null("unknown").to_list()
        if label == "source" and self.cfg.source_field is None:
            return [dataset_of(v, self.roots) for v in values]
        return values

    def of(
        self, batch: pl.DataFrame, mask: np.ndarray, lengths: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Per-token label indices of the documents of `batch` in `mask` (`lengths` tokens
        each)."""
        out = {}
        for label in self.labels:
            cap = 1 << 16 if label == "lang" else self.cfg.max_sources
            values = [v for v, m in zip(self._values(batch, label), mask, strict=True) if m]
            out[label] = np.repeat([self._index(label, v, cap) for v in values], lengths)
        return out

    def manifest(self) -> dict[str, list[str]]:
        return {label: list(names) for label, names in self.names.items()}


def dict_sum(keys: list[str], values: np.ndarray) -> dict[str, int]:
    """Sum `values` by `keys`."""
    out: dict[str, int] = {}
    for key, value in zip(keys, values.tolist(), strict=True):
        out[key] = out.get(key, 0) + value
    return out


def load_or_train_tokenizer(cfg: TokenizeConfig, shard_paths: list[Path], dest: Path) -> Tokenizer:
    """The named tokenizer, or one trained on the first `train_docs` documents; saved to `dest`."""
    if cfg.tokenizer is not None:
        if not Path(cfg.tokenizer).is_file():
            raise FileNotFoundError(f"tokenize.tokenizer: no tokenizer at {cfg.tokenizer}")
        tokenizer = Tokenizer.from_file(cfg.tokenizer)
    elif dest.exists():
        return Tokenizer.from_str(dest.read_text())
    else:
        sample = (t for batch in iter_texts(shard_paths) for t in batch["text"])
        tokenizer = train_tokenizer(
            (t for _, t in zip(range(cfg.train_docs), sample, strict=False)), cfg.vocab_size
        )
    missing = [t for t in SPECIAL_TOKENS if tokenizer.token_to_id(t) is None]
    if missing:
        raise ValueError(f"tokenize.tokenizer: {cfg.tokenizer} lacks special tokens {missing}")
    with atomic_path(dest) as tmp:
        tokenizer.save(str(tmp))
    return tokenizer


def split_families(batch: pl.DataFrame, cfg: TokenizeConfig) -> tuple[np.ndarray, np.ndarray]:
    """Which documents of `batch` go to train and which to held-out (boolean masks).

    A rewrite goes where its source goes, so held-out text has no rewrite in train; rewrites
    of held-out documents are left out (in neither mask), so held-out text is all original.
    """
    family = batch[AUGMENTED_FROM].fill_null(batch["doc_id"]).to_list()
    held_family = is_heldout(family, cfg.heldout_fraction, cfg.seed)
    rewritten = batch[AUGMENTED_FROM].is_not_null().to_numpy()
    return ~held_family, held_family & ~rewritten


def token_stats(manifest: dict[str, Any], seconds: float = 0.0) -> StageStats:
    """The stage's stats from its manifest: every document of the text shards is in."""
    n_docs = manifest["documents"] + manifest.get("rewrites_of_heldout_skipped", 0)
    return StageStats(STAGE, n_docs, n_docs, seconds=seconds)


@task(name="tokenize")
def tokenize(
    out_dir: Path, shards: list[dict[str, Any]], cfg: TokenizeConfig, fingerprint: str,
    inputs: Sequence[str] = (),
) -> StageStats:  # fmt: skip
    """Write the token shards of the text `shards` in `out_dir` (skipped if already done)."""
    root = tokens_dir(out_dir)
    if (manifest := finished_tokens(root, fingerprint)) is not None:
        return token_stats(manifest)
    void_manifest(root)
    start = time.perf_counter()
    paths = shard_paths(out_dir, shards)
    tokenizer = load_or_train_tokenizer(cfg, paths, tokenizer_path(root))
    with StageProgress(STAGE, len(paths), unit="text shards") as progress:
        manifest = write_token_shards(paths, tokenizer, cfg, root, progress.update, inputs)
    write_token_manifest(root, manifest | {"fingerprint": fingerprint})
    return token_stats(manifest, time.perf_counter() - start)


def write_token_shards(
    paths: list[Path],
    tokenizer: Tokenizer,
    cfg: TokenizeConfig,
    root: Path,
    on_shard: Callable[[int], None] = lambda done: None,
    inputs: Sequence[str] = (),
) -> dict[str, Any]:
    """Stream the documents into the train and held-out writers; return the token manifest.

    `on_shard(n)` is called after each text shard, with the number done so far; `inputs` are
    the run's input URIs, which name the held-out sources (`dataset_of`).
    """
    eod, pad = tokenizer.token_to_id(EOD), tokenizer.token_to_id(PAD)
    dtype = token_dtype(tokenizer.get_vocab_size())
    slices = Slices(cfg, list(inputs))
    writers = {
        split: TokenShardWriter(split_dir(root, split), cfg.seq_len + 1, dtype, pad,
                                cfg.rows_per_shard, slices.labels, per_row=split == "train")
        for split in SPLITS
    }  # fmt: skip
    docs = dict.fromkeys(SPLITS, 0)
    skipped = 0
    tokens_per_lang: Counter[str] = Counter()
    columns = (
        "doc_id",
        "text",
        "lang",
        AUGMENTED_FROM,
        SOURCE,
        cfg.source_field or SOURCE,
        *cfg.label_columns,
    )
    for done, path in enumerate(paths, 1):
        for batch in iter_texts([path], columns=tuple(dict.fromkeys(columns))):
            train, heldout = split_families(batch, cfg)
            skipped += batch.height - int(train.sum()) - int(heldout.sum())  # in neither
            texts, langs = batch["text"].to_list(), batch["lang"].fill_null("unknown").to_list()
            for split, mask in (("train", train), ("heldout", heldout)):
                ids, lengths = encode([t for t, m in zip(texts, mask, strict=True) if m],
                                      tokenizer, eod)  # fmt: skip
                writers[split].add(ids, slices.of(batch, mask, lengths))
                docs[split] += int(mask.sum())
                tokens_per_lang.update(dict_sum([g for g, m in zip(langs, mask, strict=True) if m],
                                                lengths))  # fmt: skip
        on_shard(done)
    for writer in writers.values():
        writer.close()
    counts = {"documents": sum(docs.values()), "rewrites_of_heldout_skipped": skipped,
              "tokens_per_lang": dict(tokens_per_lang.most_common())}  # fmt: skip
    manifest = token_manifest(tokenizer, cfg, root, counts, writers, docs)
    for split in SPLITS:
        manifest["splits"][split]["labels"] = slices.manifest()
    return manifest


def token_manifest(
    tokenizer: Tokenizer,
    cfg: TokenizeConfig,
    root: Path,
    counts: dict[str, Any],
    writers: dict[str, TokenShardWriter],
    docs: dict[str, int],
) -> dict[str, Any]:
    """The token shards' manifest: what a reader needs to decode them, the document `counts`,
    and each split's documents (`docs`) and shards."""
    return {
        "seq_len": cfg.seq_len,
        "dtype": token_dtype(tokenizer.get_vocab_size()).name,
        "vocab_size": tokenizer.get_vocab_size(),
        "special_tokens": {t: tokenizer.token_to_id(t) for t in SPECIAL_TOKENS},
        "tokenizer_sha256": sha256_file(tokenizer_path(root)),
        **counts,
        "splits": {
            split: {
                "documents": docs[split],
                "tokens": w.tokens,
                "sequences": sum(s["sequences"] for s in w.shards),
                "shards": w.shards,
            }
            for split, w in writers.items()
        },
    }
