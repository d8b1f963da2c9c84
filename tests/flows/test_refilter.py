"""`refinery refilter`: new quality thresholds on a finished output, as a fresh run gives."""

import time
from pathlib import Path

import polars as pl
import pytest

from flows.cli import main
from flows.config import ConfigError, load_config, refilter_config
from flows.prepare import prepare, refilter
from shards.manifest import work_in_use
from shards.reader import read_manifest, read_shards

pytestmark = pytest.mark.usefixtures("prefect_server")

SETS = ["ingest.partition_bytes=200000", "shards.size_limit=200000", "tokenize.enabled=false"]
NEW = ["quality.gopher.min_words=100", "quality.c4.min_sentences=3",
       "quality.languages.ja.c4.min_sentences=2"]  # fmt: skip


def ledger(out: Path) -> pl.DataFrame:
    files = sorted((out / "ledger").glob("*/part-*.arrow"))
    return pl.concat([pl.read_ipc(p) for p in files]).sort("stage", "doc_id")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    from tests.conftest import SAMPLE

    root = tmp_path_factory.mktemp("corpus")
    for name in ("wiki.jsonl.gz", "junk.jsonl", "variants.jsonl.gz"):
        (root / name).write_bytes((SAMPLE / name).read_bytes())
    return root


def test_refilter_gives_what_a_fresh_run_with_the_new_thresholds_gives(corpus, tmp_path):
    first, fresh = tmp_path / "first", tmp_path / "fresh"
    before = prepare(inputs=[str(corpus)], output=str(first), config=load_config(sets=SETS))
    signals = sorted((first / "work").glob("signals-*"))
    cfg = refilter_config(read_manifest(first)["config"], NEW)
    after = refilter(output=str(first), config=cfg)
    expected = prepare(inputs=[str(corpus)], output=str(fresh), config=load_config(sets=SETS + NEW))

    assert after["totals"] == expected["totals"]
    assert after["totals"]["kept"] != before["totals"]["kept"]
    assert read_shards(first).equals(read_shards(fresh))
    assert ledger(first).equals(ledger(fresh))
    assert after["stages"]["quality"] == expected["stages"]["quality"] | {
        "seconds": after["stages"]["quality"]["seconds"]
    }
    # nothing was computed again: the same signals, and no stage before quality ran anew
    assert sorted((first / "work").glob("signals-*")) == signals
    for stage in ("ingest", "normalize", "exact_dedup", "minhash", "langid"):
        assert after["stages"][stage]["work"] == before["stages"][stage]["work"]


def test_refilter_refuses_changes_that_need_a_new_run(tmp_path):
    finished = load_config(sets=SETS).model_dump(mode="json")
    with pytest.raises(ConfigError, match="minhash"):
        refilter_config(finished, ["minhash.threshold=0.7"])
    with pytest.raises(ConfigError, match=r"quality\.model"):
        refilter_config(finished, ["quality.stop_words.en=[a, b]"])
    assert main(["refilter", "--output", str(tmp_path / "none")]) == 2


def test_gc_lists_then_removes_only_the_work_the_manifest_does_not_name(corpus, tmp_path, capsys):
    out = tmp_path / "out"
    first = prepare(inputs=[str(corpus)], output=str(out), config=load_config(sets=SETS))
    shards = read_shards(out)
    refilter(output=str(out), config=refilter_config(first["config"], NEW))
    old = out / "work" / first["stages"]["quality"]["work"]  # the first thresholds' quality
    work = {p.name for p in (out / "work").iterdir()}
    assert old.is_dir() and old.name not in work_in_use(read_manifest(out))

    assert main(["gc", "--output", str(out)]) == 0
    listed = capsys.readouterr().out
    assert f"MB  {old}\n" in listed and "1 work directories" in listed and "--delete" in listed
    assert {p.name for p in (out / "work").iterdir()} == work  # listed only
    assert main(["gc", "--output", str(out), "--delete"]) == 0
    assert {p.name for p in (out / "work").iterdir()} == work - {old.name}

    # What is left is all a refilter needs: back to the first thresholds, no stage before
    # quality and no signal is computed again, and the shards are the first run's.
    again = refilter(output=str(out), config=load_config(sets=SETS))
    assert {p.name for p in (out / "work").iterdir()} == work
    for stage in ("ingest", "normalize", "exact_dedup", "minhash", "langid"):
        assert again["stages"][stage]["work"] == first["stages"][stage]["work"]
    assert read_shards(out).equals(shards)


def stages_with_rows(out: Path) -> set[str]:
    """The stages whose work directory still holds the rows of some finished partition."""
    found = set()
    for d in (out / "work").iterdir():
        parts = [m.name.removesuffix(".stats.json") for m in d.glob("*.stats.json")]
        if any((d / f"{p}.arrow").exists() for p in parts):
            found.add(d.name.rsplit("-", 1)[0])
    return found


def test_released_work_is_computed_again_only_when_a_run_needs_it(corpus, tmp_path):
    keep, lean = tmp_path / "keep", tmp_path / "lean"
    lean_sets = [*SETS, "runner.keep_work=false"]
    prepare(inputs=[str(corpus)], output=str(keep), config=load_config(sets=SETS))
    first = prepare(inputs=[str(corpus)], output=str(lean), config=load_config(sets=lean_sets))
    assert read_shards(lean).equals(read_shards(keep)) and ledger(lean).equals(ledger(keep))
    # Left: the rows refilter starts from (langid's), the quality signals and the last stage's.
    assert stages_with_rows(lean) == {"langid", "signals", "quality"}
    assert not list((lean / "work").glob("minhash-*/*.keys.arrow"))
    assert stages_with_rows(keep) >= {"ingest", "normalize", "exact_dedup", "minhash"}

    # The same run again computes nothing, and refilter finds what it starts from.
    again = prepare(inputs=[str(corpus)], output=str(lean), config=load_config(sets=lean_sets))
    assert again["stages"] == first["stages"] | {
        s: first["stages"][s] | {"seconds": again["stages"][s]["seconds"]} for s in first["stages"]
    }
    assert stages_with_rows(lean) == {"langid", "signals", "quality"}
    refilter(output=str(lean), config=refilter_config(first["config"], NEW))

    # A new MinHash threshold needs exact dedup's rows: they, and the rows they are made
    # from, are computed again, to what a run that kept its work gives.
    changed = ["minhash.threshold=0.7"]
    prepare(inputs=[str(corpus)], output=str(keep), config=load_config(sets=SETS + changed))
    started = time.time()
    prepare(inputs=[str(corpus)], output=str(lean), config=load_config(sets=lean_sets + changed))
    assert read_shards(lean).equals(read_shards(keep)) and ledger(lean).equals(ledger(keep))
    remade = [m.stat().st_mtime > started for m in (lean / "work").glob("ingest-*/*.stats.json")]
    assert remade and all(remade)


def test_decontam_drops_the_documents_with_an_evaluation_passage(corpus, tmp_path):
    """Passages of two Wikipedia paragraphs (English, Chinese) as an evaluation set: no kept
    document holds one, every document dropped for it does, its translations are kept, and
    refilter without the set gives them back."""
    from tasks.filter.decontam import words
    from tests.conftest import write_jsonl

    wiki = pl.read_ndjson(corpus / "wiki.jsonl.gz").select("id", "text")
    texts = dict(wiki.iter_rows())
    passages = []
    for doc in ("xquad-en-003", "xquad-zh-023"):
        _, found = words(texts[doc])
        passages.append(texts[doc][found[4].start() : found[24].end()])
    (tmp_path / "evals").mkdir()
    evals = write_jsonl(tmp_path / "evals" / "qa.jsonl", [{"context": p} for p in passages])
    sets = [*SETS, f"decontam.eval_sets.qa={evals.parent}"]
    out = tmp_path / "out"
    before = prepare(inputs=[str(corpus)], output=str(out), config=load_config(sets=sets))

    def spaced(text: str) -> str:  # its words, one space apart
        return " ".join(m.group() for m in words(text)[1])

    def holds_passage(text: str) -> bool:
        return any(spaced(p) in spaced(text) for p in passages)

    everything = ledger(out)
    dropped = everything.filter(pl.col("stage") == "decontam")
    assert set(dropped["reason"]) == {"decontam_overlap"}
    # Each paragraph is dropped: by decontam, or by a stage before it.
    assert {"xquad-en-003", "xquad-zh-023"} <= set(everything["doc_id"])
    assert dropped.height >= 1
    assert all(holds_passage(texts[d]) for d in dropped["doc_id"] if d in texts)
    assert all(d.startswith("qa: ") for d in dropped["detail"])
    kept = read_shards(out)
    assert not any(holds_passage(t) for t in kept["text"])
    langs = ("ar", "de", "el", "en", "es", "hi", "ro", "ru", "th", "tr", "vi", "zh")
    translations = {f"xquad-{lang}-{n}" for lang in langs for n in ("003", "023")}
    translations -= {"xquad-en-003", "xquad-zh-023"}
    assert not translations & set(dropped["doc_id"])
    assert len(translations & set(kept["doc_id"])) >= 5
    assert before["stages"]["decontam"]["dropped"] == {"decontam_overlap": dropped.height}
    index = [w for w in work_in_use(read_manifest(out)) if w.startswith("evalset-")]
    assert len(index) == 1 and (out / "work" / index[0] / "index.arrow").exists()

    cfg = refilter_config(read_manifest(out)["config"], ["decontam.eval_sets={}"])
    after = refilter(output=str(out), config=cfg)
    assert "decontam" not in after["stages"]
    assert after["totals"]["kept"] == before["totals"]["kept"] + dropped.height
    assert any(holds_passage(t) for t in read_shards(out)["text"])
