"""A finished output with one byte flipped, or a shard cut or gone: `refinery verify` names the
file and fails, and the readers refuse the shard."""

import gzip
import json
import shutil
from pathlib import Path

import pytest

from flows import cli
from flows.config import load_config
from flows.prepare import prepare
from shards.reader import read_shards, verify_shards
from shards.tokens import TokenShards
from tests.conftest import SAMPLE, write_jsonl


@pytest.fixture(scope="module")
def finished(tmp_path_factory, prefect_server) -> Path:
    """A prepare output of a few English paragraphs: text shards and token shards."""
    root = tmp_path_factory.mktemp("integrity")
    with gzip.open(SAMPLE / "wiki.jsonl.gz", "rt") as f:
        rows = [json.loads(line) for line in f if '"xquad-en-' in line][:24]
    (root / "corpus").mkdir()
    for i in range(0, len(rows), 6):
        write_jsonl(root / "corpus" / f"docs-{i:02d}.jsonl", rows[i : i + 6])
    sets = ["ingest.partition_bytes=2000", "shards.size_limit=5000", "tokenize.rows_per_shard=4"]
    config = load_config(sets=[*sets, "tokenize.vocab_size=512", "tokenize.seq_len=64"])
    prepare(inputs=[str(root / "corpus")], output=str(root / "out"), config=config)
    return root / "out"


@pytest.fixture
def output(finished, tmp_path) -> Path:
    """A copy of the finished output, for this test to damage."""
    return Path(shutil.copytree(finished, tmp_path / "out"))


def flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def verify(output: Path, capsys) -> tuple[int, str, str]:
    code = cli.main(["verify", "--output", str(output)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_an_intact_output_verifies(output, capsys):
    code, out, err = verify(output, capsys)
    assert (code, err) == (0, "")
    assert out.strip().endswith("0 problems")
    assert read_shards(output, verify=True).height == read_shards(output).height > 0
    assert len(TokenShards(output / "tokens", "train")) > 0


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_a_flipped_byte_in_a_shard_is_named_by_verify_and_refused_by_the_reader(
    output, capsys, where
):
    shards = json.loads((output / "manifest.json").read_text())["shards"]
    assert len(shards) >= 2
    path = output / shards[1]["path"]
    size = path.stat().st_size
    flip(path, {"first": 0, "middle": size // 2, "last": size - 1}[where])

    code, out, err = verify(output, capsys)
    assert code != 0
    assert err.splitlines() == [f"{path}: sha256 mismatch (file is corrupt or was modified)"]
    assert out.strip().endswith("1 problems")
    assert verify_shards(output) == err.splitlines()
    with pytest.raises(ValueError, match="sha256 mismatch") as refused:
        read_shards(output, verify=True)
    assert str(path) in str(refused.value)


def test_a_cut_or_missing_shard_is_named(output, capsys):
    shards = json.loads((output / "manifest.json").read_text())["shards"]
    cut, gone = output / shards[0]["path"], output / shards[1]["path"]
    cut.write_bytes(cut.read_bytes()[:-100])
    gone.unlink()
    code, _, err = verify(output, capsys)
    assert code != 0
    assert err.splitlines() == [
        f"{cut}: sha256 mismatch (file is corrupt or was modified)",
        f"{gone}: missing",
    ]
    with pytest.raises(ValueError, match=str(cut)):
        read_shards(output, verify=True)


def test_a_flipped_byte_in_a_token_shard_is_named_by_verify_and_refused_by_training(output, capsys):
    tokens = json.loads((output / "tokens" / "manifest.json").read_text())
    path = output / "tokens" / "train" / tokens["splits"]["train"]["shards"][0]["path"]
    flip(path, path.stat().st_size // 2)
    code, _, err = verify(output, capsys)
    assert code != 0
    assert err.splitlines() == [f"{path}: sha256 mismatch (file is corrupt or was modified)"]
    with pytest.raises(ValueError, match="sha256 mismatch"):
        TokenShards(output / "tokens", "train")


def test_verify_of_a_directory_that_is_no_output_fails_in_one_line(tmp_path, capsys):
    code, out, err = verify(tmp_path, capsys)
    assert code != 0 and out == ""
    assert err.splitlines() == [
        f"refinery: error: no manifest at {tmp_path / 'manifest.json'}: "
        "is this a refinery output directory?"
    ]
