"""The quality classifier, trained on the sample's English prose against generated web junk."""

import gzip
import json
import random
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from flows.cli import main
from shards.writer import ShardWriter, sha256_file, write_json
from tasks.filter.quality_model import (
    MAX_CHARS,
    MIN_INPUT_BYTES,
    load_quality_model,
    model_scores,
    prepare_texts,
    train_quality_model,
)
from tests.conftest import SAMPLE, write_jsonl

SEED = 7
# Small data needs more passes than the default; buckets=1 leaves the size to MIN_INPUT_BYTES.
FAST = {"epochs": 10, "seed": SEED, "buckets": 1}

# fmt: off
PRODUCTS = ["running shoes", "iphone case", "wireless earbuds", "yoga mat", "coffee maker",
            "gaming chair", "led strip lights", "air fryer", "phone charger", "smart watch",
            "backpack", "sunglasses", "vacuum cleaner", "baby stroller", "protein powder"]
PLACES = ["near me", "london", "new york", "2024", "online", "uk", "usa", "for sale", "cheap"]
SEO = ["best {p} {q}", "cheap {p} {q}", "buy {p} {q}", "{p} discount code", "{p} deals {q}",
       "top 10 {p}", "{p} free shipping", "{p} reviews {q}", "discount {p} sale"]
COOKIES = ["We use cookies to improve your experience on our website.",
           "By continuing to browse, you agree to our use of cookies.", "Accept all cookies",
           "Reject non-essential cookies", "Manage preferences", "Cookie settings",
           "Read our Privacy Policy and Cookie Policy.", "This site uses tracking technologies.",
           "Your privacy matters to us. Click OK to continue."]
MENU = ["Home", "About Us", "Contact", "Blog", "Shop", "FAQ", "Login", "Register", "Cart (0)",
        "My Account", "Wishlist", "Careers", "Press", "Sitemap", "Help Center", "Track Order"]
FOOTER = ["Copyright © {y} {c}. All rights reserved.", "Terms of Service | Privacy Policy",
          "Follow us on Facebook, Twitter and Instagram", "Subscribe to our newsletter",
          "Powered by {c}", "Sign in to continue reading.", "Subscribe now for only $1 a week."]
COMPANIES = ["ShopMax", "DealHub", "MegaStore", "BestBuyz", "PrimeMart", "WebCorp"]
LOREM = ["lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit", "sed",
         "do", "eiusmod", "tempor", "incididunt", "ut", "labore", "et", "dolore", "magna",
         "aliqua", "enim", "ad", "minim", "veniam", "quis"]
TAGS = ["#love", "#instagood", "#follow", "#like4like", "#sale", "#fashion", "#tbt", "#deal",
        "follow for follow", "link in bio", "DM for price", "!!!", "limited offer"]
# fmt: on


def seo_spam(r: random.Random) -> str:
    phrases = (r.choice(SEO).format(p=r.choice(PRODUCTS), q=r.choice(PLACES)) for _ in range(20))
    return ", ".join(phrases)


def cookie_notice(r: random.Random) -> str:
    return "\n".join(r.sample(COOKIES, r.randint(3, len(COOKIES))))


def menu(r: random.Random) -> str:
    return "\n".join(" | ".join(r.sample(MENU, r.randint(4, 9))) for _ in range(r.randint(1, 4)))


def shop_links(r: random.Random) -> str:
    items = (f"{r.choice(PRODUCTS).title()} {r.randint(100, 999)}" for _ in range(r.randint(5, 15)))
    return "\n".join(f"{item} - ${r.randint(5, 400)}.99 - Add to cart" for item in items)


def lorem_ipsum(r: random.Random) -> str:
    return " ".join(r.choice(LOREM) for _ in range(r.randint(30, 120))).capitalize() + "."


def hashtags(r: random.Random) -> str:
    return " ".join(r.choice(TAGS) for _ in range(r.randint(10, 30)))


def footer(r: random.Random) -> str:
    lines = (r.choice(FOOTER).format(y=r.randint(2005, 2024), c=r.choice(COMPANIES)) for _ in "ab")
    return "\n".join(lines)


def junk(seed: int) -> str:
    """A page of boilerplate and spam: one to four blocks of the kinds above."""
    r = random.Random(seed)
    kinds = [seo_spam, cookie_notice, menu, shop_links, lorem_ipsum, hashtags, footer]
    return "\n\n".join(r.choice(kinds)(r) for _ in range(r.randint(1, 4)))


def prose() -> list[str]:
    """English Wikipedia paragraphs, student essays and notes from the committed sample."""
    with gzip.open(SAMPLE / "wiki.jsonl.gz", "rt") as f:
        wiki = [row["text"] for row in map(json.loads, f) if row["lang_hint"] == "en"]
    files = sorted((SAMPLE / "essays").glob("*.txt")) + sorted((SAMPLE / "notes").glob("*.txt"))
    return wiki + [p.read_text(encoding="utf-8", errors="replace") for p in files]


def auc(positive: pl.Series, negative: pl.Series) -> float:
    """The chance that a random positive scores above a random negative."""
    return float((positive.to_numpy()[:, None] > negative.to_numpy()[None, :]).mean())


@pytest.fixture(scope="module")
def data() -> dict[str, list[str]]:
    """Three quarters of each class to train on, a quarter held out of every training run."""
    pos = prose()
    random.Random(SEED).shuffle(pos)
    neg = [junk(i) for i in range(len(pos))]
    cut = len(pos) * 3 // 4
    return {"pos": pos[:cut], "neg": neg[:cut], "pos_test": pos[cut:], "neg_test": neg[cut:]}


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("model") / "quality.bin"
    return path, train_quality_model(data["pos"], data["neg"], path, **FAST)


def test_prepare_texts_gives_one_bounded_lower_case_line():
    texts = pl.Series(["Cookies.\nAccept ALL\t now!", None, "  \n ", "x" * (MAX_CHARS + 50)])
    lines = prepare_texts(texts)
    assert lines[:3] == ["cookies . accept all now !", "", ""]
    assert len(lines[3]) == MAX_CHARS


def test_model_ranks_held_out_prose_above_junk(data, trained):
    model = load_quality_model(str(trained[0]))
    pos = model_scores(pl.Series(data["pos_test"]), model)
    neg = model_scores(pl.Series(data["neg_test"]), model)
    assert auc(pos, neg) >= 0.98
    assert pos.mean() - neg.mean() > 0.5, (pos.describe(), neg.describe())


def test_stats_count_each_class_and_the_held_out_tenth(data, trained):
    path, stats = trained
    n = len(data["pos"])
    assert stats["output"] == str(path)
    assert stats["docs"] == {"hq": n, "lq": n}
    assert stats["skipped"] == {"hq": 0, "lq": 0}
    assert stats["heldout_docs"] == 2 * round(n / 10)
    assert stats["heldout_accuracy"] >= 0.9
    assert stats["seconds"] > 0


def test_training_with_a_seed_is_deterministic(data, trained, tmp_path):
    # A freed 30 MB block lets glibc hand the next allocation of that size out of the heap,
    # unzeroed: the model must not start from such leftovers (see MIN_INPUT_BYTES).
    np.ones(30 << 17).sum()  # 30 MiB of float64, allocated and freed
    again = train_quality_model(data["pos"], data["neg"], tmp_path / "again.bin", **FAST)
    assert sha256_file(tmp_path / "again.bin") == sha256_file(trained[0])
    assert again["heldout_accuracy"] == trained[1]["heldout_accuracy"]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files


def test_scores_are_float32_probabilities_from_one_predict_call(data, trained):
    model = load_quality_model(str(trained[0]))
    calls = []

    class Counting:
        def predict(self, lines, k):
            calls.append(len(lines))
            return model.predict(lines, k=k)

    texts = pl.Series([data["pos_test"][0], None, "", " \n\t ", data["neg_test"][0]])
    scores = model_scores(texts, Counting())
    assert calls == [5]
    assert (scores.name, scores.dtype) == ("q_model", pl.Float32)
    assert scores.is_null().to_list() == [False, True, True, True, False]
    assert 0 <= scores[4] < 0.5 < scores[0] <= 1
    assert model_scores(pl.Series([], dtype=pl.String), model).to_list() == []


def test_empty_texts_are_skipped_and_max_docs_caps_each_class(data, tmp_path):
    pos = [None, "", "  \n", *data["pos"]]
    stats = train_quality_model(pos, data["neg"], tmp_path / "m.bin", max_docs=30, **FAST)
    assert stats["docs"] == {"hq": 30, "lq": 30}
    assert stats["skipped"] == {"hq": 3, "lq": 0}
    assert stats["heldout_docs"] == 6


def test_too_few_documents_or_a_bad_setting_raise(data, tmp_path):
    with pytest.raises(ValueError, match="__label__lq: 9 documents with text, at least 10"):
        train_quality_model(data["pos"], data["neg"][:9], tmp_path / "m.bin", seed=1)
    with pytest.raises(ValueError, match="`epochs` must be positive, got 0"):
        train_quality_model(data["pos"], data["neg"], tmp_path / "m.bin", epochs=0)
    with pytest.raises(ValueError, match="`word_ngrams` must be at least 2, got 1"):
        train_quality_model(data["pos"], data["neg"], tmp_path / "m.bin", word_ngrams=1)
    assert not (tmp_path / "m.bin").exists()


def test_missing_model_names_the_setting_and_path(tmp_path):
    path = str(tmp_path / "nope.bin")
    with pytest.raises(FileNotFoundError) as e:
        load_quality_model(path)
    assert str(e.value) == f"quality.model: no fastText model at {path}"


def test_a_model_without_the_positive_label_is_refused(tmp_path):
    import fasttext

    (tmp_path / "t.txt").write_text("__label__a one two\n__label__b three four\n" * 10)
    bucket = MIN_INPUT_BYTES // (4 * 8)  # a smaller matrix could start from leftover memory
    model = fasttext.train_supervised(
        str(tmp_path / "t.txt"), dim=8, wordNgrams=2, bucket=bucket, thread=1, verbose=0
    )
    model.save_model(str(tmp_path / "ab.bin"))
    with pytest.raises(ValueError, match="has no __label__hq label"):
        load_quality_model(str(tmp_path / "ab.bin"))


def fake_prepare_output(out: Path, texts: list[str]) -> Path:
    """Shards and a manifest, as `refinery prepare` leaves them (only the columns read here)."""
    schema = pa.schema([("doc_id", pa.string()), ("text", pa.large_string())])
    table = pa.table({"doc_id": [f"d{i}" for i in range(len(texts))], "text": texts})
    with ShardWriter(out, schema, size_limit=1) as writer:  # a shard per write
        for offset in range(0, len(texts), 40):
            writer.write(table.slice(offset, 40))
    write_json({"shards": writer.shards}, out / "manifest.json")
    return out


def train_quality(positive: list, negative: list, output: Path, *options: str) -> int:
    """`refinery train-quality` as a user runs it (in this process)."""
    return main(
        ["train-quality", "--positive", *map(str, positive), "--negative", *map(str, negative),
         "--output", str(output), *options]
    )  # fmt: skip


def test_cli_trains_from_jsonl_files(data, tmp_path, capsys):
    rows = [{"id": f"p{i}", "text": t} for i, t in enumerate(data["pos"])]
    write_jsonl(tmp_path / "pos.jsonl", rows)
    (tmp_path / "neg").mkdir()
    write_jsonl(tmp_path / "neg" / "a.jsonl.gz", [{"text": t} for t in data["neg"]], gz=True)
    output = tmp_path / "out" / "quality.bin"
    options = ("--epochs", "10", "--seed", "1")
    assert train_quality([tmp_path / "pos.jsonl"], [tmp_path / "neg"], output, *options) == 0
    line = capsys.readouterr().out.strip()
    n = len(data["pos"])
    assert line.startswith(f"refinery: quality model at {output} ({n} hq and {n} lq documents")
    assert "held-out accuracy 1.000" in line and "\n" not in line
    model = load_quality_model(str(output))
    pos = model_scores(pl.Series(data["pos_test"]), model)
    assert auc(pos, model_scores(pl.Series(data["neg_test"]), model)) >= 0.98


def test_cli_reads_prepare_outputs_globs_and_text_files(data, tmp_path, capsys):
    shards = fake_prepare_output(tmp_path / "prepared", data["pos"])
    assert len(json.loads((shards / "manifest.json").read_text())["shards"]) > 1
    assert any("©" in text for text in data["neg"][:40])
    for i, text in enumerate(data["neg"][:40]):  # not UTF-8 where "©" is: decoded as normalize does
        (tmp_path / f"junk-{i:02d}.txt").write_text(text, encoding="cp1252")
    negative = [tmp_path / "junk-*.txt"]
    assert train_quality([shards], negative, tmp_path / "m.bin", "--max-docs", "40") == 0
    assert "(40 hq and 40 lq documents, 0 without text skipped;" in capsys.readouterr().out


@pytest.mark.parametrize("where", ["positive", "negative"])
def test_cli_missing_input_is_a_one_line_error(data, tmp_path, capsys, where):
    write_jsonl(tmp_path / "ok.jsonl", [{"text": t} for t in data["pos"]])
    paths = {"positive": str(tmp_path / "ok.jsonl"), "negative": str(tmp_path / "ok.jsonl")}
    paths[where] = str(tmp_path / "nowhere")
    assert train_quality([paths["positive"]], [paths["negative"]], tmp_path / "m.bin") == 2
    assert capsys.readouterr().err == f"refinery: error: input not found: {tmp_path / 'nowhere'}\n"
    assert not (tmp_path / "m.bin").exists()


def test_cli_input_with_no_readable_files_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.docx").write_bytes(b"PK")
    notes = [tmp_path / "notes"]
    assert train_quality(notes, notes, tmp_path / "m.bin") == 2
    expected = f"no file refinery can read in {tmp_path / 'notes'} (1 skipped for its extension)"
    assert capsys.readouterr().err == f"refinery: error: {expected}\n"
