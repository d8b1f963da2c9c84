"""Hostile values stay data, config paths are used only as asked, no unsafe loader is called,
and an API key never reaches the outputs or the logs.

Config values that are paths, and what was checked of each (by reading the code; the run
below checks the two a prepare run reads by default or can be given without a model):

- `url_filter.domain_files`, `word_files`, `soft_word_files`: read (`tasks/web/url_filter.py`
  `_read_list`), never written. Checked below: the file given is read and left as it was.
- `tokenize.tokenizer`: read (`Tokenizer.from_file`); the copy refinery keeps is written to
  `<output>/tokens/tokenizer.json`. Checked below: the file given is left as it was.
- `langid.model`, `quality.model`: fastText files, read by `fasttext.load_model` (a binary
  format, no pickle). `normalize.pii.ner_model`: `spacy.load` of a package or directory the
  user names. `augment.model_a`, `model_b`, `model`: transformers `from_pretrained`;
  `augment.style`: a bundled prompt by name, else a prompt file read as text. Each is only
  read, at the path given.
- The output directory is the only place `prepare` writes: its work files, shards, ledger,
  manifest, tokens and report (checked below by a snapshot of the whole temporary tree).
- `pretrain`: `--tokens` is read (every shard's sha256 checked, `shards.tokens.TokenShards`);
  `--run` holds the checkpoints, which DeepSpeed's `engine.load_checkpoint` unpickles
  (`torch.load(weights_only=False)` inside DeepSpeed): resume only from a run directory that
  this code wrote. `pretrain.hostfile` is handed to the DeepSpeed launcher.
"""

import ast
import gzip
import json
import os
from pathlib import Path

import polars as pl
import pytest

from flows import cli
from flows.config import load_config
from flows.prepare import prepare
from shards.reader import read_shards
from tasks.filter.quality import QualityConfig, score_quality
from tests.conftest import SAMPLE

ROOT = Path(__file__).resolve().parents[1]
SETS = ["ingest.partition_bytes=3000", "shards.size_limit=20000"]
SECRET = "sk-test-5f1c0e9a7b3d4e21-never-to-be-written"


def good_texts(n: int) -> list[str]:
    """English Wikipedia paragraphs of the sample that every content filter keeps."""
    with gzip.open(SAMPLE / "wiki.jsonl.gz", "rt") as f:
        rows = [json.loads(line) for line in f if '"xquad-en-' in line]
    df = pl.DataFrame({"doc_id": [r["id"] for r in rows], "text": [r["text"] for r in rows]})
    return score_quality(df.with_columns(lang=pl.lit("en")), QualityConfig()).kept["text"][:n]


def snapshot(root: Path) -> dict[Path, tuple[int, int]]:
    """Every file under `root` with its size and mtime."""
    return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


def hostile_ids(tmp_path: Path) -> list[str]:
    return [
        "../../../../escape-up",
        "../../etc/passwd",
        str(tmp_path / "absolute-escape"),
        "/etc/passwd",
        "nul\x00inside",
        "line\nbreak\r\nand more",
        "work/../../../../manifest.json",
        "",
    ]


@pytest.mark.usefixtures("prefect_server")
def test_hostile_ids_urls_titles_and_file_names_stay_data(tmp_path, capsys):
    corpus = tmp_path / "in"
    corpus.mkdir()
    out = tmp_path / "deep" / "down" / "out"  # a path climbing out of it still lands in tmp_path
    ids = hostile_ids(tmp_path)
    texts = good_texts(len(ids) + 1)
    rows = [
        {"id": doc_id, "text": text, "url": f"file:///etc/passwd?{i}", "title": doc_id,
         "date": "../../1970", "source": "../../../../source-escape"}
        for i, (doc_id, text) in enumerate(zip(ids, texts, strict=False))
    ]  # fmt: skip
    (corpus / "hostile.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # A file name with a newline and a byte that is not UTF-8.
    odd = os.fsencode(corpus) + b"/new\nline \xff.jsonl"
    with open(odd, "w") as f:
        f.write(json.dumps({"id": "odd-name", "text": texts[-1]}) + "\n")
    (tmp_path / "deep" / "down").mkdir(parents=True)
    before = snapshot(tmp_path)
    passwd = Path("/etc/passwd").stat().st_mtime_ns if Path("/etc/passwd").exists() else None

    prepare(inputs=[str(corpus)], output=str(out), config=load_config(sets=SETS))
    assert cli.main(["explain", ids[1], "--output", str(out)]) == 0
    assert cli.main(["explain", ids[4], "--output", str(out)]) == 0

    after = snapshot(tmp_path)
    new = [p for p in after if p not in before]
    assert new and [p for p in new if not p.is_relative_to(out)] == []
    assert {p: after[p] for p in before} == before  # the inputs are not touched
    # nor anything a climbing path could reach above the temporary tree or the working directory
    for above in {*out.parents, *Path.cwd().parents, Path.cwd()}:
        assert not any((above / name).exists() for name in ("escape-up", "source-escape")), above
    if passwd is not None:
        assert Path("/etc/passwd").stat().st_mtime_ns == passwd

    shards = read_shards(out)
    assert sorted(shards["doc_id"]) == sorted([*ids, "odd-name"])
    kept = {row["doc_id"]: row for row in shards.iter_rows(named=True)}
    for doc_id in ids:
        assert kept[doc_id]["title"] == doc_id
        assert kept[doc_id]["source"].startswith(f"file://{corpus}/hostile.jsonl:")
    assert kept["odd-name"]["source"] == f"file://{corpus}/new\nline \ufffd.jsonl:0"
    assert ids[1] in capsys.readouterr().out


@pytest.mark.usefixtures("prefect_server")
def test_config_paths_are_read_only_where_given(tmp_path):
    from tasks.output.tokenize import train_tokenizer

    corpus = tmp_path / "in"
    corpus.mkdir()
    texts = good_texts(6)
    (corpus / "docs.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    domains = tmp_path / "lists" / "domains.txt"
    domains.parent.mkdir()
    domains.write_text("blocked.example\n")
    tokenizer = tmp_path / "lists" / "tokenizer.json"
    train_tokenizer(iter(texts), 300).save(str(tokenizer))
    before = snapshot(tmp_path)

    out = tmp_path / "out"
    sets = [*SETS, f"url_filter.domain_files=['{domains}']", f"tokenize.tokenizer={tokenizer}"]
    manifest = prepare(inputs=[str(corpus)], output=str(out), config=load_config(sets=sets))

    after = snapshot(tmp_path)
    assert {p: after[p] for p in before} == before
    assert all(p.is_relative_to(out) for p in after if p not in before)
    assert (out / "tokens" / "tokenizer.json").read_bytes() == tokenizer.read_bytes()
    assert manifest["config"]["url_filter"]["domain_files"] == [str(domains)]


# Calls that run code or unpickle data from a file or the network. tasks/ingest/extract.py unpickles
# frames on the pipes to its own worker process, which it starts with `sys.executable`, so
# both ends are this code: trusted, and the one exemption.
PICKLE_EXEMPT = {("tasks/ingest/extract.py", "pickle.loads")}
UNSAFE = {
    "eval", "exec", "pickle.load", "pickle.loads", "marshal.load", "marshal.loads",
    "shelve.open", "dill.load", "dill.loads", "cloudpickle.load", "cloudpickle.loads",
    "joblib.load", "yaml.unsafe_load", "yaml.full_load", "os.system", "os.popen",
}  # fmt: skip


def dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    return "?"


def keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def is_true(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def unsafe_calls(path: Path, exempt: set[tuple[str, str]] = PICKLE_EXEMPT) -> list[str]:
    """The unsafe calls in one source file, as `file:line: what`."""
    found, rel = [], path.relative_to(ROOT).as_posix()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        name = dotted(node.func)
        why = None
        if name in UNSAFE and (rel, name) not in exempt:
            why = name
        elif name == "torch.load" and not is_true(keyword(node, "weights_only")):
            why = "torch.load without weights_only=True"
        elif name == "yaml.load" and dotted(keyword(node, "Loader") or ast.Name("?")) not in (
            "yaml.SafeLoader", "yaml.CSafeLoader", "SafeLoader", "CSafeLoader",
        ):  # fmt: skip
            why = "yaml.load without a safe Loader"
        elif is_true(keyword(node, "shell")):
            why = f"{name}(shell=True)"
        elif name in ("np.load", "numpy.load") and is_true(keyword(node, "allow_pickle")):
            why = "np.load(allow_pickle=True)"
        if why:
            found.append(f"{rel}:{node.lineno}: {why}")
    return found


def test_no_unsafe_loaders_or_shells_in_the_code():
    files = [p for d in ("flows", "tasks", "shards", "model") for p in (ROOT / d).rglob("*.py")]
    assert len(files) > 30
    assert [hit for path in sorted(files) for hit in unsafe_calls(path)] == []
    # the exemption covers a call that is there: without it, the scan finds it
    assert unsafe_calls(ROOT / "tasks" / "ingest" / "extract.py", exempt=set())


def test_the_scan_finds_what_it_looks_for(tmp_path, monkeypatch):
    monkeypatch.setattr("tests.test_security.ROOT", tmp_path)
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import pickle, torch, yaml, subprocess\n"
        "pickle.loads(b'')\ntorch.load('x')\ntorch.load('x', weights_only=False)\n"
        "torch.load('x', weights_only=True)\nyaml.load('a')\n"
        "yaml.load('a', Loader=yaml.SafeLoader)\n"
        "subprocess.run('ls', shell=True)\neval('1')\n"
    )
    assert [hit.split(": ", 1)[1] for hit in unsafe_calls(bad)] == [
        "pickle.loads",
        "torch.load without weights_only=True",
        "torch.load without weights_only=True",
        "yaml.load without a safe Loader",
        "subprocess.run(shell=True)",
        "eval",
    ]


@pytest.mark.usefixtures("prefect_server")
def test_an_api_key_reaches_no_output_and_no_log(tmp_path, monkeypatch, capfd, caplog):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterTimestamp
    from prefect.types import DateTime

    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    corpus = tmp_path / "in"
    corpus.mkdir()
    rows = [{"id": f"doc-{i}", "text": t} for i, t in enumerate(good_texts(6))]
    (corpus / "docs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    sets = [*SETS, "augment.enabled=true", "augment.backend=llm", "augment.llm_model=m",
            "augment.endpoint=http://127.0.0.1:9/v1", "augment.retries=1",
            "augment.backoff_s=0", "augment.max_new_docs=3"]  # fmt: skip
    started = DateTime.now("UTC")
    manifest = prepare(inputs=[str(corpus)], output=str(out), config=load_config(sets=sets))
    assert manifest["stages"]["augment"]["quarantined_reasons"] == {"augment_failed": 3}

    ledger = pl.concat([pl.read_ipc(p) for p in (out / "ledger" / "augment").glob("*.arrow")])
    failed = ledger.filter(pl.col("reason") == "augment_failed")
    assert failed.height == 3 and failed["detail"].str.contains("127.0.0.1:9").all()
    for path in out.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    captured = capfd.readouterr()
    assert SECRET not in captured.out + captured.err
    assert all(SECRET not in record.getMessage() for record in caplog.records)
    logs, since = [], LogFilter(timestamp=LogFilterTimestamp(after_=started))
    with get_client(sync_client=True) as client:  # what the run sent to the Prefect server
        while page := client.read_logs(since, limit=200, offset=len(logs)):
            logs += page
    assert logs and all(SECRET not in log.message for log in logs)
