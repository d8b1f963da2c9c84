"""Outputs on object storage: `prepare` and `refilter` to s3:// on a real S3 API (moto's
server), byte for byte what a local run writes; a run killed on S3 resumes to the same output;
an output that cannot be written fails at once, naming it."""

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import s3fs

from flows.cli import main
from flows.config import load_config
from flows.prepare import prepare, refilter
from shards.failpoints import ENV
from shards.manifest import read_manifest
from shards.storage import location
from tests.conftest import SAMPLE

pytestmark = pytest.mark.usefixtures("prefect_server")

SETS = ["ingest.partition_bytes=60000", "shards.size_limit=60000", "tokenize.vocab_size=512",
        "tokenize.seq_len=64"]  # fmt: skip


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Web pages, Wikipedia paragraphs and broken records, in several partitions."""
    root = tmp_path_factory.mktemp("corpus")
    for name in ("web/dolma-sample-0000.warc.gz", "wiki.jsonl.gz", "junk.jsonl"):
        (root / Path(name).name).write_bytes((SAMPLE / name).read_bytes())
    return root


@pytest.fixture(scope="module")
def local(corpus, tmp_path_factory) -> Path:
    """The local run every run on S3 must match."""
    out = tmp_path_factory.mktemp("local") / "out"
    prepare([str(corpus)], str(out), load_config(None, SETS, {}))
    return out


@pytest.fixture
def bucket(s3_server) -> str:
    """A fresh, empty bucket."""
    name = f"refinery-{uuid.uuid4().hex[:8]}"
    s3fs.S3FileSystem().mkdir(name)
    return name


def digests(root: str | Path) -> dict[str, str]:
    """sha256 of every shard, ledger file and token shard under an output, by relative path."""
    out = location(str(root))
    found = [*out.glob("part-*.arrow"), *out.glob("ledger/*/part-*.arrow"),
             *out.glob("tokens/*/part-*.arrow"), *out.glob("tokens/tokenizer.json")]  # fmt: skip
    base = str(out).rstrip("/") + "/"
    return {str(p)[len(base) :]: hashlib.sha256(p.read_bytes()).hexdigest() for p in found}


def test_prepare_and_refilter_on_s3_write_what_a_local_run_writes(corpus, local, bucket, tmp_path):
    url = f"s3://{bucket}/run"
    remote = prepare([str(corpus)], url, load_config(None, SETS, {}))
    before = read_manifest(local)
    assert remote["shards"] == before["shards"] and remote["totals"] == before["totals"]
    shutil.copytree(local, tmp_path / "local")
    shards = digests(tmp_path / "local")
    assert len([p for p in shards if p.startswith("ledger/")]) > 3
    assert digests(url) == shards and any(p.startswith("tokens/") for p in shards)
    assert location(url).joinpath("report", "index.html").exists()

    stricter = load_config(None, [*SETS, "quality.gopher.min_words=120"], {})
    after_local = refilter(str(tmp_path / "local"), stricter)
    after_remote = refilter(url, stricter)
    assert after_remote["totals"] == after_local["totals"]
    assert after_remote["totals"]["kept"] < before["totals"]["kept"]
    assert digests(url) == digests(tmp_path / "local") != shards


def cli(args: list[str], log: Path, failpoint: str | None = None) -> tuple[int, str]:
    """Run `refinery` in a process group of its own, killed whole once it exits (a temporary
    Prefect server outlives a SIGKILLed run, holding any pipe open): exit status and stderr."""
    env = {k: v for k, v in os.environ.items() if k not in (ENV, "PREFECT_API_URL")}
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "flows.cli", *args], start_new_session=True,
                                env=env | ({ENV: failpoint} if failpoint else {}),
                                stdout=subprocess.DEVNULL, stderr=err)  # fmt: skip
        try:
            code = proc.wait(timeout=600)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    return code, log.read_text()[-3000:]


@pytest.mark.parametrize("failpoint", ["partition-stats:7", "atomic-rename:1:part-00001.arrow"])
def test_a_run_killed_on_s3_resumes_to_the_local_output(corpus, local, bucket, tmp_path, failpoint):
    sets = [arg for s in SETS for arg in ("--set", s)]
    args = ["prepare", "--input", str(corpus), *sets]
    log = tmp_path / "log"
    url = f"s3://{bucket}/run"
    code, err = cli([*args, "--output", url], log, failpoint)
    assert code == -signal.SIGKILL, err
    assert not location(url).joinpath("manifest.json").exists()
    code, err = cli([*args, "--output", url], log)
    assert code == 0, err
    assert digests(url) == digests(local)


@pytest.mark.parametrize(
    ("output", "named"),
    [
        ("s3://refinery-no-such-bucket/run", "s3://refinery-no-such-bucket/run"),
        ("nosuchstore://bucket/run", "nosuchstore://"),
    ],
)
def test_an_output_that_cannot_be_written_fails_at_once(s3_server, capsys, output, named):
    code = main(["prepare", "--input", str(SAMPLE / "junk.jsonl"), "--output", output])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and named in err, err
    assert not Path(output.split("://")[0] + ":").exists()  # never a local folder "s3:"
