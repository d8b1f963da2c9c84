"""Properties over generated input: normalize is idempotent, exact dedup keeps exactly one
document of each group of equal texts whatever the partitioning, and ingest's line reader
returns every line whole through any zstd frames and chunk sizes."""

import io
import itertools
import unicodedata

import polars as pl
import pytest
import zstandard
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tasks.clean.normalize import NormalizeConfig, normalize_batch
from tasks.dedup.exact_dedup import DUPLICATE, content_keys, find_duplicates
from tasks.ingest.ingest import ZstdStream, iter_lines
from tasks.records import drop_duplicates

SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])

WORDS = ["café", "naïve", "Straße", "Ångström", "日本語", "année", "the", "river", "résumé"]
# What normalize keeps as written (curly quotes, full-width forms) or repairs (ligatures).
WORDS += ["don’t", "“quoted”", "你好，世界（测试）", "ＡＢＣ１", "ｶﾀｶﾅ", "ﬁle", "ĳs"]
CONTROLS = [
    "\x00",
    "\x07",
    "\x0b",
    "\x1b",
    "\x1b[0m",
    "\x7f",
    "\x85",
    "\x9f",
    "\u200b",
    "\ufeff",
    "\r",
]
SPACES = [" ", "  ", "\t", "\n", "\n\n\n", " \n ", "\r\n", "\u00a0", "\u3000"]


def mojibake(word: str) -> str:
    """UTF-8 read as cp1252, the commonest mojibake ("cafÃ©")."""
    return word.encode("utf-8").decode("cp1252", "replace")


piece = st.one_of(
    st.sampled_from(WORDS),
    st.sampled_from(WORDS).map(mojibake),
    st.sampled_from(WORDS).map(lambda w: unicodedata.normalize("NFD", w)),
    st.sampled_from(CONTROLS),
    st.sampled_from(SPACES),
    st.text(max_size=8),
    # PII with a space each side (`test_pii_glued_to_pii_is_masked_in_one_run`: the glued case)
    st.sampled_from(["name@example.org", "+44 20 7946 0958", "10.0.0.1", "<EMAIL>"]).map(
        lambda pii: f" {pii} "
    ),
)
texts = st.lists(piece, max_size=30).map("".join)


def frame(values: list[str]) -> pl.DataFrame:
    return pl.DataFrame(
        {"doc_id": [f"d{i:03d}" for i in range(len(values))], "text": values,
         "raw": [None] * len(values)},
        schema={"doc_id": pl.String, "text": pl.String, "raw": pl.Binary},
    )  # fmt: skip


@pytest.mark.parametrize(
    "cfg",
    [
        NormalizeConfig(),
        NormalizeConfig(fix_mojibake=False),
        NormalizeConfig(uncurl_quotes=True, fix_character_width=True, fold_whitespace=False),
    ],
    ids=["defaults", "no-ftfy", "ftfy-style-no-folding"],
)
@SETTINGS
@given(values=st.lists(texts, min_size=1, max_size=8))
# Found by this test: a character that tidying removed after ftfy had run hid mojibake, or an
# accent, from the first run.
@example(values=["cafÃ\u200b© ok", "a\u200b\u0301b", "\xa0\x8a¯", "rang\x1b[0m twice"])
@example(values=["\x8dÂ\x95"])  # a C1 control left by ftfy hid "Â•", the mojibake of "•"
def test_normalize_is_idempotent(cfg, values):
    once = normalize_batch(frame(values), cfg).kept
    twice = normalize_batch(once.with_columns(raw=pl.lit(None, pl.Binary)), cfg)
    assert twice.removed.height == 0  # what was kept once stays kept
    assert twice.kept["text"].to_list() == once["text"].to_list()


@SETTINGS
@given(st.lists(texts, min_size=1, max_size=8))
def test_normalize_keeps_or_quarantines_every_row(values):
    result = normalize_batch(frame(values), NormalizeConfig())
    ids = [*result.kept["doc_id"], *result.removed["doc_id"]]
    assert sorted(ids) == [f"d{i:03d}" for i in range(len(values))]
    assert result.removed["reason"].is_in(["normalize_empty", "normalize_undecodable"]).all()


def test_pii_glued_to_pii_is_masked_in_one_run():
    once = normalize_batch(frame(["call +44 20 7946 0958+44 20 7946 0959"]), NormalizeConfig())
    twice = normalize_batch(once.kept.with_columns(raw=pl.lit(None, pl.Binary)), NormalizeConfig())
    assert twice.kept["text"].to_list() == once.kept["text"].to_list()


# A few base texts, each also written with extra whitespace and decomposed accents, so that
# exact duplicates appear only after normalization.
BASES = ["Café au lait.", "The river ran.", "Straße und Weg.", "naïve résumé", "x"]
VARIANTS = [
    lambda t: t,
    lambda t: "  " + t.replace(" ", "   ") + "\n",
    lambda t: unicodedata.normalize("NFD", t),
    lambda t: t + "\u200b",
]
documents = st.lists(
    st.tuples(st.sampled_from(BASES), st.sampled_from(range(len(VARIANTS)))),
    min_size=1,
    max_size=40,
)


@SETTINGS
@given(documents, st.data())
def test_exact_dedup_keeps_one_document_per_text(docs, data):
    raw = frame([VARIANTS[v](base) for base, v in docs])
    # doc_ids in a shuffled order, so the kept one is not always the first row
    ids = data.draw(st.permutations([f"doc-{i:03d}" for i in range(raw.height)]))
    df = normalize_batch(raw.with_columns(doc_id=pl.Series(ids)), NormalizeConfig()).kept
    cuts = sorted(data.draw(st.sets(st.integers(1, max(df.height - 1, 1)), max_size=3)))
    bounds = [0, *(c for c in cuts if c < df.height), df.height]
    parts = {f"p{i}": df.slice(a, b - a) for i, (a, b) in enumerate(itertools.pairwise(bounds))}

    keys = pl.concat(
        [
            content_keys(part).with_row_index("row").with_columns(part=pl.lit(name))
            for name, part in parts.items()
        ]
    )
    dups = find_duplicates(keys)
    kept, removed = [], []
    for name, part in parts.items():
        result = drop_duplicates(part, dups.filter(pl.col("part") == name).drop("part"),
                                 "exact_dedup", DUPLICATE)  # fmt: skip
        kept.append(result.kept)
        removed.append(result.removed)
    kept_df, removed_df = pl.concat(kept), pl.concat(removed)

    groups = df.group_by("text").agg(pl.col("doc_id").min().alias("first"), pl.len().alias("n"))
    assert sorted(kept_df["doc_id"]) == sorted(groups["first"])
    assert kept_df["text"].n_unique() == kept_df.height == groups.height
    first = dict(zip(groups["text"], groups["first"], strict=True))
    assert (removed_df["reason"] == DUPLICATE).all()
    for doc_id, text, duplicate_of in removed_df.select("doc_id", "text", "detail").rows():
        assert duplicate_of == first[text] != doc_id
    sizes = dict(zip(groups["first"], groups["n"], strict=True))
    assert {d: s for d, s in kept_df.select("doc_id", "cluster_size").rows()} == sizes
    assert kept_df.height + removed_df.height == df.height


@SETTINGS
@given(
    lines=st.lists(st.binary(max_size=300).map(lambda b: b.replace(b"\n", b"")), max_size=40),
    frames=st.integers(1, 4),
    chunk_size=st.integers(1, 5000),
)
def test_lines_come_back_whole_through_any_zstd_frames_and_chunks(lines, frames, chunk_size):
    data = b"".join(line + b"\n" for line in lines)
    step = -(-len(data) // frames) or 1
    pieces = [data[i : i + step] for i in range(0, len(data), step)]
    compressed = b"".join(zstandard.ZstdCompressor().compress(p) for p in pieces)
    stream = ZstdStream(io.BytesIO(compressed))
    assert list(iter_lines(stream, chunk_size)) == lines
    assert list(iter_lines(io.BytesIO(data), chunk_size)) == lines
    if compressed:
        with pytest.raises(EOFError):
            ZstdStream(io.BytesIO(compressed[:-1])).read()
