"""Shared fixtures: one temporary Prefect server per test session, and small corpora."""

import gzip
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")

DATA = Path(__file__).parent / "data"
SAMPLE = DATA / "sample"


@pytest.fixture(scope="session")
def prefect_server():
    """A temporary Prefect server shared by every flow test of the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 API on 127.0.0.1: moto's standalone server in its own process, as s3fs's own
    tests run it. The endpoint and dummy credentials go into the environment, where s3fs (and
    every process a test starts) finds them. Yields the endpoint URL."""
    import botocore.session  # noqa: F401 (fail here, not in the server, if s3 support is missing)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}"
    env = {"AWS_ENDPOINT_URL_S3": endpoint, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def write_jsonl(path: Path, rows: list[object], gz: bool = False) -> Path:
    """Write rows (dicts, or raw strings for malformed lines) as JSON lines."""
    lines = [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in rows]
    data = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


def english(seed: int, words: int = 80) -> str:
    """Deterministic English-like prose that passes the Gopher rules."""
    vocab = [
        "the", "river", "ran", "past", "the", "old", "mill", "and", "the", "children",
        "watched", "the", "water", "with", "quiet", "interest", "while", "their", "parents",
        "talked", "about", "harvest", "prices", "weather", "roads", "markets", "letters",
        "from", "cousins", "who", "had", "moved", "to", "the", "city", "to", "work", "in",
        "factories", "and", "shops",
    ]  # fmt: skip
    out = [vocab[(seed * 7 + i * (seed % 5 + 3)) % len(vocab)] for i in range(words)]
    return " ".join(out).capitalize() + "."


@pytest.fixture
def mixed_corpus(tmp_path: Path) -> Path:
    """Exact and near duplicates, empty, undecodable and unreadable records, in four files."""
    root = tmp_path / "corpus"
    root.mkdir()
    with gzip.open(SAMPLE / "wiki.jsonl.gz", "rt") as f:
        wiki = [json.loads(line) for line in f]
    en = [r for r in wiki if r["id"].startswith("xquad-en")][:12]
    docs = [{"id": r["id"], "text": r["text"]} for r in en]
    docs.append({"id": "copy-0", "text": en[0]["text"]})  # exact duplicate
    words = en[1]["text"].split()
    words[len(words) // 2] = "remarkably"
    docs.append({"id": "near-0", "text": " ".join(words)})  # near duplicate
    docs.append({"id": "empty-0", "text": "   \n  "})
    write_jsonl(root / "a.jsonl", docs)
    (root / "latin1.txt").write_bytes("Caf\xe9 cr\xe8me. ".encode("cp1252") * 30)
    (root / "bad.txt").write_bytes(b"\x81\x8d\x8f\x90\x9d" * 10)  # undefined in cp1252 too
    good = gzip.compress(
        "\n".join(json.dumps({"id": f"gz-{i}", "text": english(i)}) for i in range(6)).encode(),
        mtime=0,
    )
    (root / "cut.jsonl.gz").write_bytes(good[: len(good) * 2 // 3])  # truncated member
    return root


@pytest.fixture(scope="session")
def token_dir(tmp_path_factory) -> Path:
    """Token shards of the sample's Wikipedia paragraphs: vocabulary 512, 64-token sequences."""
    from tasks.output.tokenize import TokenizeConfig, load_or_train_tokenizer, write_token_shards

    root = tmp_path_factory.mktemp("text")
    with gzip.open(SAMPLE / "wiki.jsonl.gz", "rt") as f:
        rows = [json.loads(line) for line in f]
    import polars as pl

    frame = {"doc_id": [r["id"] for r in rows], "text": [r["text"] for r in rows],
             "lang": [r["lang_hint"] for r in rows],
             "source": [f"file:///corpus/{r['id'].rsplit('-', 1)[0]}.jsonl:{i}"
                        for i, r in enumerate(rows)]}  # fmt: skip
    pl.DataFrame(frame).write_ipc(root / "part-00000.arrow")
    cfg = TokenizeConfig(vocab_size=512, seq_len=64, heldout_fraction=0.05, rows_per_shard=500)
    tokens = root / "tokens"
    tokenizer = load_or_train_tokenizer(cfg, [root / "part-00000.arrow"], tokens / "tokenizer.json")
    manifest = write_token_shards([root / "part-00000.arrow"], tokenizer, cfg, tokens)
    from shards.tokens import write_token_manifest

    write_token_manifest(tokens, {**manifest, "fingerprint": "test"})
    return tokens
