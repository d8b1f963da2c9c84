"""Model-based quality: a fastText classifier of wanted against unwanted text (DCLM style).

Train: positive (`__label__hq`) and negative (`__label__lq`) texts give a supervised fastText
model, written as a `.bin` file. Score: in `text`, out `q_model` (Float32), the model's
probability of `__label__hq`, null for null or empty texts. The quality stage adds `q_model`
when `quality.model` names a model file. A model trained elsewhere works if it has an
`__label__hq` label (DCLM's fastText classifier does), though its scores shift somewhat here,
as it was trained on text prepared differently from `prepare_texts`.
"""

import contextlib
import functools
import random
import tempfile
import time
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from shards.manifest import manifest_path, read_manifest, shard_paths
from shards.schema import TEXT
from shards.writer import atomic_path
from tasks.clean.normalize import NormalizeConfig, decode
from tasks.ingest.ingest import IngestConfig, read_file
from tasks.ingest.inputs import discover
from tasks.lazy import serial_imports
from tasks.output.tokenize import iter_texts

POSITIVE = "__label__hq"
NEGATIVE = "__label__lq"
CLASS_NAMES = {POSITIVE: "hq", NEGATIVE: "lq"}
MODEL_SCORE = "q_model"
MAX_CHARS = 5000  # the classifier sees a document's first 5,000 characters (about 800 words)
HELDOUT_FRACTION = 0.1
MIN_DOCS = 10  # per class, so that at least one of each is held out
BATCH = 4096  # texts prepared at a time while reading the training classes
THREADS = 4  # fastText threads when no seed asks for a deterministic, single-threaded run
# fasttext-numpy2-wheel 0.9.2 allocates the input matrix without zeroing it, and its random
# initialization fills only a tenth of it per thread: the rest is leftover memory (NaN, or
# another model's weights). glibc serves every allocation over 32 MiB as fresh, zeroed pages,
# so the matrix is never made smaller than this; the untouched rows then start at zero.
MIN_INPUT_BYTES = 40 << 20


def _release_free_memory() -> None:
    """Hand glibc's free heap pages back to the system (malloc_trim), so that a matrix placed
    in memory this process freed earlier (a large document, say) starts from zeroed pages too."""
    import ctypes
    import ctypes.util

    libc = ctypes.util.find_library("c")
    if libc:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(libc).malloc_trim(0)


def prepare_texts(texts: pl.Series) -> list[str]:
    """Text as the classifier sees it, in training and in scoring alike.

    The first `MAX_CHARS` characters, lower-cased, with every punctuation mark or symbol
    split off as its own token (so "cookies." and "cookies" are one word to fastText) and all
    whitespace, newlines included, collapsed to single spaces.

    Args:
        texts: Documents (null allowed).

    Returns:
        One line per document; "" for a null, empty or blank one.
    """
    return (
        texts.cast(pl.String)
        .str.slice(0, MAX_CHARS)
        .str.to_lowercase()
        .str.replace_all(r"([^\w\s])", " $1 ")
        .str.replace_all(r"\s+", " ")
        .str.strip_chars()
        .fill_null("")
        .to_list()
    )


def _positive_probability(model: Any, lines: list[str]) -> pl.Series:
    """`__label__hq`'s probability for each prepared line, in one batched predict call."""
    if not lines:
        return pl.Series(MODEL_SCORE, [], dtype=pl.Float32)
    labels, probs = model.predict(lines, k=-1)  # k=-1: every label, in each row's own order
    is_positive = np.array(labels) == POSITIVE  # (N, n_labels), one True per row
    # fastText adds 1e-5 before its log, so a sure prediction can read 1.00001.
    return pl.Series(MODEL_SCORE, np.stack(probs)[is_positive], dtype=pl.Float32).clip(0, 1)


def model_scores(texts: pl.Series, model: Any) -> pl.Series:
    """The `q_model` column: each text's probability of being `__label__hq`.

    Args:
        texts: Documents (null allowed).
        model: A fastText supervised model with an `__label__hq` label.

    Returns:
        A Float32 Series named `q_model`, null where the text is null or blank.
    """
    lines = prepare_texts(texts)
    frame = pl.DataFrame({"line": lines, "p": _positive_probability(model, lines)})
    return frame.select(pl.when(pl.col("line") != "").then("p").alias(MODEL_SCORE)).to_series()


@functools.cache
def load_quality_model(path: str) -> Any:
    """Load the fastText quality model at `path` once per process.

    Raises:
        FileNotFoundError: when there is no file at `path`.
        ValueError: when the model has no `__label__hq` label.
    """
    with serial_imports():
        import fasttext

    if not Path(path).is_file():
        raise FileNotFoundError(f"quality.model: no fastText model at {path}")
    model = fasttext.load_model(path)
    if POSITIVE not in model.get_labels():
        raise ValueError(f"quality.model: {path} has no {POSITIVE} label: {model.get_labels()}")
    return model


def _record_text(row: dict[str, Any], encodings: tuple[str, ...]) -> str | None:
    """An ingested record's text, bytes decoded as normalize decodes them; None for a record
    that ingest quarantines or drops, or that no fallback encoding decodes."""
    if "_reason" in row:
        return None
    return row[TEXT] if row.get(TEXT) is not None else decode(row.get("raw"), encodings)


def _input_texts(uri: str) -> Iterator[str | None]:
    files, ignored = discover([uri])
    if not files:
        skipped = f"{len(ignored)} skipped for {'its' if len(ignored) == 1 else 'their'} extension"
        raise FileNotFoundError(f"no file refinery can read in {uri} ({skipped})")
    ingest, encodings = IngestConfig(), NormalizeConfig().fallback_encodings
    return (_record_text(row, encodings) for f in files for row in read_file(f, ingest))


def _shard_texts(out_dir: Path) -> Iterator[str | None]:
    paths = shard_paths(out_dir, read_manifest(out_dir)["shards"])
    return (text for batch in iter_texts(paths, columns=(TEXT,)) for text in batch[TEXT])


def read_texts(uris: list[str]) -> Iterator[str | None]:
    """The texts of input files or finished `refinery prepare` outputs, lazily, in order.

    A local directory holding a `manifest.json` is read from its shards; anything else is
    read as ingest reads it (files, directories or globs of JSONL, Parquet, text or WARC).
    Every path is checked now, before any text is read.

    Returns:
        One text per record; None for a record prepare would quarantine or drop on reading.

    Raises:
        FileNotFoundError: naming the first URI that matches no readable file.
    """
    sources = [
        _shard_texts(Path(uri)) if manifest_path(Path(uri)).is_file() else _input_texts(uri)
        for uri in uris
    ]
    return (text for source in sources for text in source)


def _collect(texts: Iterable[str | None], max_docs: int | None) -> tuple[list[str], int]:
    """Up to `max_docs` prepared non-empty lines, and how many records had no text."""
    it, lines, seen = iter(texts), [], 0
    while (max_docs is None or len(lines) < max_docs) and (batch := list(islice(it, BATCH))):
        seen += len(batch)
        lines += [line for line in prepare_texts(pl.Series(batch, dtype=pl.String)) if line]
    return lines[:max_docs], seen - len(lines)


def _split(
    classes: dict[str, list[str]], rng: random.Random
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """Shuffled (label, line) pairs to train on, and `HELDOUT_FRACTION` of each class apart."""
    train, heldout = [], []
    for label, lines in classes.items():
        shuffled = rng.sample(lines, len(lines))
        n_held = max(1, round(len(lines) * HELDOUT_FRACTION))
        heldout += [(label, line) for line in shuffled[:n_held]]
        train += [(label, line) for line in shuffled[n_held:]]
    rng.shuffle(train)
    return train, heldout


def _fit(train: list[tuple[str, str]], seed: int | None, **params: Any) -> Any:
    """A fastText supervised model of `train`, from a temporary training file."""
    with serial_imports():
        import fasttext

    with tempfile.TemporaryDirectory(prefix="refinery-quality-") as tmp:
        path = Path(tmp) / "train.txt"
        with path.open("w", encoding="utf-8") as f:
            f.writelines(f"{label} {line}\n" for label, line in train)
        _release_free_memory()
        return fasttext.train_supervised(
            input=str(path),
            thread=1 if seed is not None else THREADS,  # one thread: the same model every run
            seed=seed if seed is not None else 0,
            verbose=0,
            **params,
        )


def _accuracy(model: Any, heldout: list[tuple[str, str]]) -> float:
    scores = _positive_probability(model, [line for _, line in heldout])
    truth = pl.Series([label == POSITIVE for label, _ in heldout])
    return float(((scores >= 0.5) == truth).mean())


def _check_settings(word_ngrams: int, **settings: float | None) -> None:
    for name, value in settings.items():
        if value is not None and value <= 0:
            raise ValueError(f"`{name}` must be positive, got {value}")
    if word_ngrams < 2:  # fastText drops the n-gram buckets, and MIN_INPUT_BYTES with them
        raise ValueError(f"`word_ngrams` must be at least 2, got {word_ngrams}")


def _collect_classes(
    positive: Iterable[str | None], negative: Iterable[str | None], max_docs: int | None
) -> dict[str, tuple[list[str], int]]:
    """Each label's prepared lines and skipped count; raises if a class is too small."""
    classes = {POSITIVE: _collect(positive, max_docs), NEGATIVE: _collect(negative, max_docs)}
    for label, (lines, _) in classes.items():
        if len(lines) < MIN_DOCS:
            raise ValueError(
                f"{label}: {len(lines)} documents with text, at least {MIN_DOCS} are needed"
            )
    return classes


def train_quality_model(
    positive: Iterable[str | None],
    negative: Iterable[str | None],
    output: Path,
    *,
    epochs: int = 5,
    lr: float = 0.5,
    word_ngrams: int = 2,
    dim: int = 32,
    buckets: int = 1 << 19,
    seed: int | None = None,
    max_docs: int | None = 100_000,
) -> dict[str, Any]:
    """Train the fastText quality classifier and write it to `output` atomically.

    Each class is read up to `max_docs` documents with text, prepared with `prepare_texts`;
    `HELDOUT_FRACTION` of each is held out of training to measure accuracy. The model file is
    about `dim * buckets * 4` bytes (64 MiB by default) and never under `MIN_INPUT_BYTES`.

    Args:
        positive: Texts of the wanted kind (`__label__hq`); null or blank ones are skipped.
        negative: Texts of the unwanted kind (`__label__lq`).
        output: Where the `.bin` model goes.
        epochs: Passes over the training data.
        lr: Learning rate.
        word_ngrams: Longest word n-gram used as a feature.
        dim: Size of the word vectors.
        buckets: Hash buckets for word n-grams (raised to fill `MIN_INPUT_BYTES`).
        seed: Shuffle, split and training seed; given, training runs on one thread and the
            same inputs give the same model.
        max_docs: Documents read per class; None reads them all.

    Returns:
        `output`, documents used (`docs`) and skipped for having no text (`skipped`) per
        class, `heldout_docs`, `heldout_accuracy` (at a 0.5 threshold) and training `seconds`.

    Raises:
        ValueError: for a setting that is not positive, `word_ngrams` under 2, or a class with
            fewer than `MIN_DOCS` documents with text.
    """
    _check_settings(word_ngrams, epochs=epochs, lr=lr, dim=dim, buckets=buckets, max_docs=max_docs)
    classes = _collect_classes(positive, negative, max_docs)
    train, heldout = _split({k: lines for k, (lines, _) in classes.items()}, random.Random(seed))
    start = time.perf_counter()
    bucket = max(buckets, MIN_INPUT_BYTES // (4 * dim))
    model = _fit(train, seed, epoch=epochs, lr=lr, wordNgrams=word_ngrams, dim=dim, bucket=bucket)
    seconds = time.perf_counter() - start
    with atomic_path(output) as tmp:
        model.save_model(str(tmp))
    return {
        "output": str(output),
        "docs": {CLASS_NAMES[k]: len(lines) for k, (lines, _) in classes.items()},
        "skipped": {CLASS_NAMES[k]: skipped for k, (_, skipped) in classes.items()},
        "heldout_docs": len(heldout),
        "heldout_accuracy": _accuracy(model, heldout),
        "seconds": round(seconds, 3),
    }
