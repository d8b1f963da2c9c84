"""A near-duplicate corpus with ground truth, built from the real text in bench/data.

    python bench/dedup_corpus.py --docs 10000 --seed 0 --out data/bench/dedup/corpus-10000.parquet

Originals are about 4.5 KB of UTF-8 each: sentences sampled at random from the pool of one
language and joined into a few paragraphs, so two originals share almost nothing. Copies (about
`dup_fraction` of all documents, 1-5 per cluster) edit 1-10 % of an original's words (for
Chinese and Japanese: of its characters, in spans of 1-3) by replacing, deleting or inserting,
and add, drop or change a boilerplate line at the top or bottom. Many originals carry such
lines too, so boilerplate alone never marks a duplicate. Columns: doc_id, text, lang, cluster,
is_copy, edit_rate. The same seed gives the same corpus.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

POOL_PATH = Path(__file__).parent / "data" / "dedup-pool.jsonl.gz"
DEFAULT_MIX = {"en": 0.8, "zh": 0.1, "ja": 0.1}
SPACED = {"en"}
TARGET_BYTES = (3850, 4850)  # body size drawn uniformly: mean about 4.5 KB
EDIT_RATE = (0.01, 0.10)
MAX_COPIES = 5
CHUNK = 8192
EN_SENTENCE = re.compile(r"(?<=[.!?])\s+")
CJK_SENTENCE = re.compile(r"[^。！？]+[。！？]+[」』）”]*|[^。！？]+$")
BOILERPLATE = {
    "en": {
        "header": ["Posted by {name} on {date}", "By {name} | {date}", "Updated {date}",
                   "Home › {section}", "{site} › {section}"],
        "footer": ["Share this article", "© {year} {site}. All rights reserved.",
                   "Subscribe to our newsletter.", "Filed under {section}.", "{n} comments",
                   "Follow {site} for more stories like this."],
    },
    "zh": {
        "header": ["作者：{name}　发布时间：{date}", "来源：{site}　{date}", "首页 > {section}"],
        "footer": ["分享到：微博 微信 QQ空间", "© {year} {site} 版权所有", "责任编辑：{name}",
                   "点击查看更多{section}新闻", "已有{n}条评论"],
    },
    "ja": {
        "header": ["投稿者：{name}　{date}", "{site} > {section}", "更新日：{date}"],
        "footer": ["この記事をシェアする", "© {year} {site} All rights reserved.",
                   "関連記事：{section}", "コメント（{n}件）", "{site}編集部"],
    },
}  # fmt: skip
FILLERS = {
    "en": {"name": ["Anna Reyes", "Tom Becker", "Priya Nair", "Sam Okafor", "Lena Holm"],
           "site": ["Daily Ledger", "Metro Times", "TechWire", "The Courier", "Northside News"],
           "section": ["Politics", "Science", "Sports", "Business", "Culture", "Travel"]},
    "zh": {"name": ["王伟", "李娜", "张敏", "刘洋", "陈静"],
           "site": ["新华网", "人民网", "新浪新闻", "南方日报", "澎湃新闻"],
           "section": ["国内", "国际", "财经", "体育", "科技", "文化"]},
    "ja": {"name": ["佐藤健", "鈴木花子", "高橋誠", "田中美咲", "伊藤翔"],
           "site": ["朝日新報", "東京タイムズ", "日本経済ウェブ", "関西ニュース", "北海道日報"],
           "section": ["政治", "経済", "スポーツ", "科学", "文化", "国際"]},
}  # fmt: skip


@dataclass(frozen=True)
class LangPool:
    """Sampling material for one language."""

    sentences: list[str]
    sizes: np.ndarray  # UTF-8 bytes of each sentence
    vocab: list[str]  # whitespace words (en) or non-space characters (zh, ja), with repeats
    joiner: str  # between sentences of a paragraph


def load_pool(path: Path = POOL_PATH) -> dict[str, LangPool]:
    """Split the pool's text into unique sentences per language.

    Args:
        path: The gzipped JSON-lines pool written by bench/data/make_pool.py.

    Returns:
        A `LangPool` per language.
    """
    texts: dict[str, list[str]] = {}
    for line in gzip.decompress(path.read_bytes()).decode("utf-8").splitlines():
        row = json.loads(line)
        texts.setdefault(row["lang"], []).append(row["text"])
    return {lang: build_lang_pool(lang, rows) for lang, rows in texts.items()}


def build_lang_pool(lang: str, texts: list[str]) -> LangPool:
    """Sentences, their sizes and the replacement vocabulary of one language."""
    spaced = lang in SPACED
    found: dict[str, None] = {}  # ordered set: drops repeated sentences
    for para in (p.strip() for text in texts for p in text.splitlines()):
        parts = EN_SENTENCE.split(para) if spaced else CJK_SENTENCE.findall(para)
        for sentence in (s.strip() for s in parts):
            if len(sentence) >= (20 if spaced else 8):
                found[sentence] = None
    sentences = list(found)
    body = " ".join(sentences)
    vocab = body.split() if spaced else [c for c in body if not c.isspace()]
    sizes = np.array([len(s.encode("utf-8")) for s in sentences], dtype=np.int64)
    return LangPool(sentences, sizes, vocab, " " if spaced else "")


def sample_bodies(pool: LangPool, n: int, rng: np.random.Generator) -> list[str]:
    """`n` bodies of random sentences, about 4.5 KB each, in 3-5 paragraphs.

    Args:
        pool: The language's sentences.
        n: How many bodies.
        rng: Random source.

    Returns:
        The bodies, paragraphs separated by blank lines.
    """
    # Enough draws per row to pass the target almost always; a row that does not is just short.
    width = 3 * int(TARGET_BYTES[1] / pool.sizes.mean()) + 8
    picks = rng.integers(0, len(pool.sentences), size=(n, width), dtype=np.int32)
    reached = np.cumsum(pool.sizes[picks], axis=1) >= rng.integers(*TARGET_BYTES, size=(n, 1))
    counts = np.where(reached.any(axis=1), reached.argmax(axis=1) + 1, width)
    n_paras = rng.integers(3, 6, size=n)
    cut_fracs = np.sort(rng.random((n, 4)), axis=1)
    bodies = []
    for row, count, paras, fracs in zip(picks, counts, n_paras, cut_fracs, strict=True):
        cuts = [0, *sorted({int(f * count) for f in fracs[: paras - 1]} - {0}), int(count)]
        sentences = [pool.sentences[i] for i in row[:count]]
        chunks = (sentences[a:b] for a, b in itertools.pairwise(cuts))
        bodies.append("\n\n".join(pool.joiner.join(chunk) for chunk in chunks if chunk))
    return bodies


def boilerplate_line(lang: str, where: str, rng: np.random.Generator) -> str:
    """One random header or footer line such as "Posted by NAME on DATE"."""
    templates = BOILERPLATE[lang][where]
    fill = {key: values[rng.integers(len(values))] for key, values in FILLERS[lang].items()}
    year, month, day = int(rng.integers(2015, 2025)), int(rng.integers(1, 13)), rng.integers(1, 29)
    months = ["January", "February", "March", "April", "May", "June", "July", "August",
              "September", "October", "November", "December"]  # fmt: skip
    date = f"{months[month - 1]} {day}, {year}" if lang == "en" else f"{year}年{month}月{day}日"
    return templates[rng.integers(len(templates))].format(
        **fill, date=date, year=year, n=rng.integers(2, 300)
    )


def original_frame(lang: str, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """Header and footer lines of an original: often one header, often one or two footers."""
    header = [boilerplate_line(lang, "header", rng)] if rng.random() < 0.5 else []
    n_footers = int(rng.choice(3, p=[0.4, 0.4, 0.2]))
    return header, [boilerplate_line(lang, "footer", rng) for _ in range(n_footers)]


def change_frame(lines: list[str], lang: str, where: str, rng: np.random.Generator) -> list[str]:
    """Add, drop or change one boilerplate line (or keep them all, a quarter of the time)."""
    action = ["keep", "add", "drop", "change"][rng.integers(4)]
    if action == "add" or (action == "change" and not lines):
        line = boilerplate_line(lang, where, rng)
        return [line, *lines] if where == "header" else [*lines, line]
    if action == "keep" or not lines:
        return list(lines)
    i = int(rng.integers(len(lines)))
    new = [boilerplate_line(lang, where, rng)] if action == "change" else []
    return lines[:i] + new + lines[i + 1 :]


def edit_words(body: str, rate: float, pool: LangPool, rng: np.random.Generator) -> str:
    """Replace, delete or insert `rate` of a spaced body's words, keeping its paragraphs."""
    tokens = body.replace("\n\n", " \n\n ").split(" ")  # paragraph breaks become tokens
    n_edits = max(1, round(rate * len(tokens)))
    where = np.sort(rng.choice(len(tokens), size=n_edits, replace=False)).tolist()
    ops = rng.integers(0, 3, size=n_edits).tolist()
    fresh = [pool.vocab[i] for i in rng.integers(0, len(pool.vocab), size=n_edits)]
    out, prev = [], 0
    for i, op, word in zip(where, ops, fresh, strict=True):
        if tokens[i] == "\n\n":
            continue  # never edit a paragraph break
        out.extend(tokens[prev:i])
        if op == 0:  # replace
            out.append(word)
        elif op == 2:  # insert after
            out.extend((tokens[i], word))
        prev = i + 1
    out.extend(tokens[prev:])
    return " ".join(out).replace(" \n\n ", "\n\n")


def edit_chars(body: str, rate: float, pool: LangPool, rng: np.random.Generator) -> str:
    """Replace, delete or insert `rate` of an unspaced body's characters, in spans of 1-3."""
    n_spans = max(1, round(rate * len(body) / 2))  # spans average 2 characters
    starts = np.sort(rng.choice(len(body), size=n_spans, replace=False))
    lengths, ops = rng.integers(1, 4, size=n_spans), rng.integers(0, 3, size=n_spans)
    sources = rng.integers(0, len(pool.vocab) - 3, size=n_spans)
    pieces, pos = [], 0
    for start, length, op, src in zip(starts, lengths, ops, sources, strict=True):
        if start < pos or "\n" in body[start : start + length]:
            continue  # overlaps the previous span or would merge paragraphs
        fresh = "".join(pool.vocab[src : src + length])
        pieces.append(body[pos:start])
        if op == 2:  # insert before
            pieces.append(fresh)
            pos = start
        else:  # replace or delete
            pieces.append(fresh if op == 0 else "")
            pos = start + length
    pieces.append(body[pos:])
    return "".join(pieces)


def assemble(header: list[str], body: str, footer: list[str]) -> str:
    """Header lines, the body, then footer lines."""
    return "\n".join([*header, body, *footer])


def cluster_sizes(n_docs: int, dup_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Copies per duplicated original (1-5 each), adding up to `dup_fraction` of `n_docs`."""
    n_copies = round(dup_fraction * n_docs)
    draws = rng.integers(1, MAX_COPIES + 1, size=n_copies + 1)
    ends = np.cumsum(draws)
    m = int(np.searchsorted(ends, n_copies)) + 1  # first m draws reach n_copies
    sizes = draws[:m].copy()
    sizes[-1] -= ends[m - 1] - n_copies
    return sizes[sizes > 0]


def make_corpus(
    n_docs: int,
    seed: int = 0,
    mix: dict[str, float] | None = None,
    dup_fraction: float = 0.3,
) -> pl.DataFrame:
    """Build a near-duplicate corpus with known clusters.

    Args:
        n_docs: Documents in all, originals and copies.
        seed: Random seed; the same seed gives the same corpus.
        mix: Share of originals per language (en, zh, ja); defaults to 80/10/10.
        dup_fraction: Share of documents that are copies of another document.

    Returns:
        doc_id, text, lang, cluster, is_copy, edit_rate, sorted by doc_id in shuffled order.

    Raises:
        ValueError: If `dup_fraction` is outside [0, 0.5] or `mix` names an unknown language.
    """
    mix = DEFAULT_MIX if mix is None else mix
    if not 0 <= dup_fraction <= 0.5:
        raise ValueError(f"`dup_fraction` must be in [0, 0.5], got {dup_fraction}")
    pools = load_pool()
    if unknown := set(mix) - set(pools):
        raise ValueError(f"`mix` names languages not in the pool: {sorted(unknown)}")
    rng = np.random.default_rng(seed)
    copies = cluster_sizes(n_docs, dup_fraction, rng)
    n_orig = n_docs - int(copies.sum())
    langs = list(mix)
    weights = np.array([mix[lang] for lang in langs], dtype=float)
    orig_lang = rng.choice(len(langs), size=n_orig, p=weights / weights.sum())
    bodies = np.empty(n_orig, dtype=object)
    for k, lang in enumerate(langs):
        idx = np.flatnonzero(orig_lang == k)
        for chunk in np.array_split(idx, len(idx) // CHUNK + 1):  # bounds the draw matrix
            bodies[chunk] = sample_bodies(pools[lang], len(chunk), rng)
    frames = [original_frame(langs[k], rng) for k in orig_lang]
    texts = [assemble(h, b, f) for (h, f), b in zip(frames, bodies, strict=True)]
    rows = {"text": texts, "lang": [langs[k] for k in orig_lang],
            "cluster": list(range(n_orig)), "edit_rate": [0.0] * n_orig}  # fmt: skip
    for cluster, n_copy in enumerate(copies.tolist()):
        lang = langs[orig_lang[cluster]]
        for _ in range(n_copy):
            rate = float(rng.uniform(*EDIT_RATE))
            edit = edit_words if lang in SPACED else edit_chars
            body = edit(bodies[cluster], rate, pools[lang], rng)
            header, footer = frames[cluster]
            header, footer = copy_frame(header, footer, lang, rng)
            rows["text"].append(assemble(header, body, footer))
            rows["lang"].append(lang)
            rows["cluster"].append(cluster)
            rows["edit_rate"].append(rate)
    return finish(rows, n_orig, rng)


def copy_frame(
    header: list[str], footer: list[str], lang: str, rng: np.random.Generator
) -> tuple[list[str], list[str]]:
    """A copy's boilerplate: at least one line added, dropped or changed at top or bottom."""
    while True:
        new_header = change_frame(header, lang, "header", rng)
        new_footer = change_frame(footer, lang, "footer", rng)
        if (new_header, new_footer) != (header, footer):
            return new_header, new_footer


def finish(rows: dict, n_orig: int, rng: np.random.Generator) -> pl.DataFrame:
    """Shuffle the rows and number them, so that copies do not sit next to their originals."""
    schema = {"text": pl.String, "lang": pl.String, "cluster": pl.Int64, "edit_rate": pl.Float64}
    df = pl.DataFrame(rows, schema=schema).with_columns(is_copy=pl.int_range(pl.len()) >= n_orig)
    df = df[rng.permutation(df.height)]
    ids = pl.format("d{}", pl.int_range(pl.len()).cast(pl.String).str.zfill(7))
    return df.select(doc_id=ids, text="text", lang="lang", cluster="cluster",
                     is_copy="is_copy", edit_rate="edit_rate")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--docs", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dup-fraction", type=float, default=0.3)
    parser.add_argument("--out", type=Path, required=True, help="output .parquet file")
    args = parser.parse_args()
    df = make_corpus(args.docs, seed=args.seed, dup_fraction=args.dup_fraction)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    df.write_parquet(args.out)
    stats = corpus_stats(df)
    stats_path(args.out).write_text(json.dumps(stats, indent=2) + "\n")
    print(f"{args.out}: {describe(stats)}")


def corpus_stats(df: pl.DataFrame) -> dict:
    """Docs, clusters, copies, mean UTF-8 bytes and documents per language of a corpus."""
    return {
        "docs": df.height,
        "clusters": df["cluster"].n_unique(),
        "copies": int(df["is_copy"].sum()),
        "mean_bytes": round(float(df["text"].str.len_bytes().mean()), 1),
        "langs": dict(df.group_by("lang").len().sort("lang").iter_rows()),
    }


def stats_path(corpus: Path) -> Path:
    """Where the CLI writes a corpus's stats: beside it, as .stats.json."""
    return corpus.with_suffix(".stats.json")


def describe(stats: dict) -> str:
    """Corpus stats as one line."""
    return (f"{stats['docs']} docs, {stats['clusters']} clusters, {stats['copies']} copies, "
            f"mean {stats['mean_bytes']:.0f} bytes, by language {stats['langs']}")  # fmt: skip


if __name__ == "__main__":
    main()
