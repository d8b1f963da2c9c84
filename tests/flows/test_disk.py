"""A full disk and an output that cannot be written: the run fails with one line naming the
problem, leaves no half-written file under a final name, and a re-run once there is room
again writes the same shards as a run that never failed."""

import errno
import fnmatch
import gzip
import json
import os
import threading
from pathlib import Path

import pyarrow.ipc as ipc
import pytest

from flows import cli
from flows.config import load_config
from flows.prepare import prepare
from shards.reader import verify_shards
from tests.conftest import SAMPLE, write_jsonl

pytestmark = pytest.mark.usefixtures("prefect_server")

SETS = ["ingest.partition_bytes=2000", "shards.size_limit=5000"]
NO_SPACE = os.strerror(errno.ENOSPC)  # "No space left on device"


class FullDisk:
    """`os.replace` into `root` that runs out of room: the first `room` renames of files
    matching `pattern` (a glob of the path relative to `root`) go through, then the disk is
    full. refinery writes every file to a temporary name and renames it into place, so this
    stops every write: the temporary file is cut to the bytes that fit, and ENOSPC raised.
    `failed` lists the files that did not fit."""

    def __init__(self, root: Path, pattern: str = "*", room: int = 0) -> None:
        self.root, self.pattern, self.room = root, pattern, room
        self.hits, self.failed = 0, []
        self._replace, self._lock = os.replace, threading.Lock()

    def __call__(self, src: str | Path, dst: str | Path, *args: object, **kwargs: object) -> None:
        target = Path(dst)
        if target.is_relative_to(self.root) and fnmatch.fnmatch(
            str(target.relative_to(self.root)), self.pattern
        ):
            with self._lock:
                self.hits += 1
                full = self.hits > self.room
            if full:
                if os.stat(src).st_nlink == 1:  # a hard link (the ledger's) wrote no bytes
                    os.truncate(src, os.path.getsize(src) // 2)
                self.failed.append(target)
                raise OSError(errno.ENOSPC, NO_SPACE, str(target))
        self._replace(src, dst, *args, **kwargs)


def run(corpus: Path, out: Path, sets: list[str] = ()) -> dict:
    return prepare(inputs=[str(corpus)], output=str(out), config=load_config(sets=[*SETS, *sets]))


def shard_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("part-*.arrow"))}


def assert_nothing_half_written(out: Path) -> None:
    """Every Arrow file under `out` opens and reads to its end, every JSON file parses, and
    no temporary file is left."""
    for path in out.rglob("*"):
        assert ".tmp-" not in path.name, path
        if path.suffix == ".arrow":
            with ipc.open_file(path) as reader:
                reader.read_all()
        elif path.suffix == ".json":
            json.loads(path.read_text())


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory) -> tuple[Path, Path]:
    """A small corpus (English paragraphs, one exact copy, one empty record) and a run of it
    on a disk with room."""
    root = tmp_path_factory.mktemp("disk")
    with gzip.open(SAMPLE / "wiki.jsonl.gz", "rt") as f:
        rows = [json.loads(line) for line in f if '"xquad-en-' in line][:30]
    rows += [{"id": "copy", "text": rows[0]["text"]}, {"id": "empty", "text": " "}]
    corpus = root / "corpus"
    corpus.mkdir()
    for i in range(0, len(rows), 4):  # a partition per file: shards end between partitions
        write_jsonl(corpus / f"docs-{i:02d}.jsonl", rows[i : i + 4])
    out = root / "clean"
    manifest = run(corpus, out)
    assert len(manifest["shards"]) >= 2  # so that a shard can fail after another is written
    return corpus, out


@pytest.mark.parametrize(
    ("pattern", "room"),
    [
        ("work/*", 6),  # a work file of an early stage
        ("part-*.arrow", 1),  # the second shard
        ("ledger/*", 3),  # publishing the ledger
        ("tokens/*", 0),  # the token shards
        ("manifest.json", 0),  # the last file of all
    ],
)
def test_a_full_disk_fails_the_run_and_a_rerun_writes_the_same_shards(
    clean_run, tmp_path, monkeypatch, pattern, room
):
    corpus, clean = clean_run
    out = tmp_path / "out"
    disk = FullDisk(out, pattern, room)
    monkeypatch.setattr(os, "replace", disk)
    with pytest.raises(OSError, match=NO_SPACE) as failure:
        run(corpus, out)
    assert failure.value.errno == errno.ENOSPC
    assert disk.failed, "the full disk was never hit"
    assert not (out / "manifest.json").exists()  # no manifest of a run that failed
    assert_nothing_half_written(out)

    monkeypatch.undo()
    manifest = run(corpus, out)
    assert shard_bytes(out) == shard_bytes(clean)
    assert manifest["shards"] == json.loads((clean / "manifest.json").read_text())["shards"]
    assert verify_shards(out) == []


def test_a_full_disk_while_shards_are_replaced_leaves_no_stale_manifest(
    clean_run, tmp_path, monkeypatch
):
    """A finished output re-run with other shard sizes: the old manifest must not survive to
    describe shards that are half replaced."""
    corpus, clean = clean_run
    out = tmp_path / "out"
    run(corpus, out)
    monkeypatch.setattr(os, "replace", FullDisk(out, "part-*.arrow", 1))
    with pytest.raises(OSError, match=NO_SPACE):
        run(corpus, out, ["shards.size_limit=3000"])
    assert not (out / "manifest.json").exists()
    assert_nothing_half_written(out)
    monkeypatch.undo()
    run(corpus, out)
    assert shard_bytes(out) == shard_bytes(clean)


def cli_prepare(corpus: Path, out: Path) -> list[str]:
    sets = [arg for s in SETS for arg in ("--set", s)]
    return ["prepare", "--input", str(corpus), "--output", str(out), *sets]


def refinery_lines(text: str) -> list[str]:
    """The lines the command itself printed (Prefect's run log lines go to stderr too)."""
    return [line for line in text.splitlines() if line.startswith("refinery:")]


def test_the_command_line_reports_a_full_disk_in_one_line(clean_run, tmp_path, monkeypatch, capsys):
    corpus, _ = clean_run
    out = tmp_path / "out"
    monkeypatch.setattr(os, "replace", FullDisk(out, "work/*", 4))
    code = cli.main(cli_prepare(corpus, out))
    err = capsys.readouterr().err
    assert code != 0
    [line] = refinery_lines(err)
    assert line.startswith("refinery: error: ") and NO_SPACE in line
    assert "Traceback" not in line


def test_an_output_under_a_file_fails_in_one_line(clean_run, tmp_path, capsys):
    corpus, _ = clean_run
    (tmp_path / "file.txt").write_text("a regular file\n")
    before = sorted(tmp_path.rglob("*"))
    code = cli.main(cli_prepare(corpus, tmp_path / "file.txt" / "out"))
    err = capsys.readouterr().err
    assert code != 0
    [line] = refinery_lines(err)
    assert line.startswith("refinery: error: ") and "Not a directory" in line
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a 0o500 directory regardless")
def test_a_read_only_output_fails_in_one_line(clean_run, tmp_path, capsys):
    corpus, _ = clean_run
    out = tmp_path / "readonly"
    out.mkdir(mode=0o500)
    try:
        code = cli.main(cli_prepare(corpus, out))
    finally:
        out.chmod(0o700)
    [line] = refinery_lines(capsys.readouterr().err)
    assert code != 0 and line.startswith("refinery: error: ") and "Permission denied" in line
