"""Large inputs read in byte ranges: planning cuts splittable files into pieces, and reading
every piece of a file gives exactly the rows of reading it whole (ids, sources, text, ledger
rows), in the same order, wherever the cuts fall."""

import gzip
import io
import itertools
import json
import pickle
import random
import zlib
from dataclasses import asdict
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from polars.testing import assert_frame_equal
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from tasks.ingest import ingest as ing
from tasks.ingest import inputs
from tasks.ingest.extract import Extractor
from tasks.ingest.inputs import InputFile, Piece
from tests.conftest import SAMPLE, english

CFG = ing.IngestConfig()
SEEDS = range(25)


class CachedExtractor(Extractor):
    """The real extractor, each page extracted once: the cut sets read the same pages."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.pages: dict = {}

    def extract(self, html: bytes, url: str | None):
        if (html, url) not in self.pages:
            self.pages[html, url] = super().extract(html, url)
        return self.pages[html, url]


@pytest.fixture(scope="module")
def ex():
    with CachedExtractor(CFG.extract) as extractor:
        yield extractor


def input_file(path: Path) -> InputFile:
    [f], _ = inputs.discover([str(path)])
    return f


def read(pieces: list[Piece], ex: Extractor | None = None) -> pl.DataFrame:
    rows = [row for p in pieces for row in ing.read_file(p, CFG, ex)]
    return pl.DataFrame(rows, schema=ing.COLUMNS, orient="row")


def pieces_at(f: InputFile, cuts: list[int]) -> list[Piece]:
    bounds = sorted(set(cuts) - {0})
    return [Piece(f, a, b) for a, b in zip([0, *bounds], [*bounds, None], strict=True)]


def assert_same(whole: pl.DataFrame, pieces: list[Piece], ex: Extractor | None) -> None:
    assert_frame_equal(read(pieces, ex), whole)


def random_cuts(rng: random.Random, size: int, near: list[int]) -> list[int]:
    """1 to 12 cut points: some anywhere, some at or next to a record boundary in `near`."""
    cuts = [rng.randrange(1, size) for _ in range(rng.randint(0, 6))]
    cuts += [rng.choice(near) + rng.choice((-1, 0, 1)) for _ in range(rng.randint(1, 6))]
    return [c for c in cuts if 0 < c < size]


# JSONL


def jsonl_corpus(rng: random.Random) -> bytes:
    """Good records with and without ids, bad ones, empty and blank lines, CRLF line ends,
    lines far longer than a piece, and a last line without a newline."""
    kinds = [
        lambda i: json.dumps({"id": f"r{i}", "text": english(i, rng.randint(1, 30))}),
        lambda i: json.dumps({"text": f"no id {i} café"}, ensure_ascii=False),
        lambda i: json.dumps({"id": f"crlf{i}", "text": "x"}) + "\r",
        lambda i: json.dumps({"id": f"long{i}", "text": english(i, 400)}),
        lambda i: '{"id": "broken", "text": "unterminated',
        lambda i: "[1, 2]",
        lambda i: json.dumps({"id": f"nt{i}"}),
        lambda i: "",
        lambda i: "   ",
    ]
    lines = [rng.choice(kinds)(i) for i in range(300)]
    return "\n".join(lines).encode() + b'\n{"id": "last", "text": "no newline"}'


def line_starts(data: bytes) -> list[int]:
    return [0] + [i + 1 for i, b in enumerate(data) if b == ord("\n")]


def test_jsonl_offsets_are_byte_positions(tmp_path):
    data = b'{"id": "a", "text": "x"}\n\n{"text": "y"}\n[1]\n'
    (tmp_path / "a.jsonl").write_bytes(data)
    rows = read([Piece(input_file(tmp_path / "a.jsonl"))])
    assert [s.rsplit(":", 1)[1] for s in rows["source"]] == ["0", "26", "40"]
    assert rows["doc_id"][1] == ing.derived_id("a.jsonl", 26)
    assert rows["_reason"].to_list() == [None, None, ing.NOT_AN_OBJECT]


def test_jsonl_every_single_cut_gives_the_whole_file(tmp_path):
    data = b'{"id": "a", "text": "x"}\n\n{"text": "y"}\r\n' + b'{"text": "' + b"z" * 60
    data += b'"}\n[1]\n{"id": "e", "text": "end"}'
    (tmp_path / "s.jsonl").write_bytes(data)
    f = input_file(tmp_path / "s.jsonl")
    whole = read([Piece(f)])
    assert whole.height == 5
    for cut in range(1, len(data)):
        assert_same(whole, pieces_at(f, [cut]), None)


@pytest.mark.parametrize("seed", SEEDS)
def test_jsonl_pieces_give_the_whole_file(tmp_path, seed):
    rng = random.Random(seed)
    data = jsonl_corpus(rng)
    (tmp_path / "big.jsonl").write_bytes(data)
    f = input_file(tmp_path / "big.jsonl")
    whole = read([Piece(f)])
    assert whole.height > 200 and whole["_reason"].null_count() < whole.height
    assert_same(whole, pieces_at(f, random_cuts(rng, len(data), line_starts(data))), None)
    plan = inputs.plan_partitions([f], rng.randint(50, 5000), min_piece_bytes=1)
    assert_same(whole, [p for part in plan for p in part.pieces], None)


def test_a_piece_inside_a_long_line_reads_nothing_and_stops_at_its_end(tmp_path):
    data = b'{"text": "' + b"w" * 100_000 + b'"}\n{"text": "after"}\n'
    (tmp_path / "long.jsonl").write_bytes(data)
    f = input_file(tmp_path / "long.jsonl")
    stream = io.BytesIO(data)
    assert list(ing.jsonl_lines(stream, 500, 600)) == []
    assert stream.tell() <= 600  # it did not read to the end of the line
    assert [o for o, _ in ing.jsonl_lines(io.BytesIO(data), 1, None)] == [data.index(b"\n") + 1]
    assert read([Piece(f, 0, 10)])["text"].to_list() == ["w" * 100_000]


# WARC: one gzip member per record, as Common Crawl writes them


def split_members(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        member = zlib.decompressobj(31)
        member.decompress(data[pos:])
        end = len(data) - len(member.unused_data)
        out.append(data[pos:end])
        pos = end
    return out


def warc_record(url: str, text: str, status: str = "200 OK") -> bytes:
    buf = io.BytesIO()
    writer = WARCWriter(buf, gzip=False)
    body = f"<html><head><title>{url}</title></head><body><article><p>{text}</p></article>"
    http = StatusAndHeaders(status, [("Content-Type", "text/html")], protocol="HTTP/1.1")
    body_io = io.BytesIO(body.encode())
    writer.write_record(writer.create_warc_record(url, "response", body_io, http_headers=http))
    return buf.getvalue()


@pytest.fixture(scope="module")
def warc_gz(tmp_path_factory) -> tuple[Path, list[int]]:
    """The two Dolma sample WARCs, member by member, with members of other shapes between
    them: three records in one member, a record cut across two members, an empty member, a
    record of no known type (quarantined) and a 404 (dropped). Returns the path and where
    each member starts."""
    members = split_members((SAMPLE / "web" / "dolma-sample-0000.warc.gz").read_bytes())
    three = b"".join(warc_record(f"https://example.org/m{i}", english(i)) for i in range(3))
    spanning = warc_record("https://example.org/span", english(7))
    garbled = warc_record("https://example.org/bad", english(8))
    garbled = garbled.replace(b"WARC-Type: response", b"WARC-Type: nonsense", 1)
    members += [gzip.compress(three, mtime=0), gzip.compress(spanning[:300], mtime=0)]
    members += [gzip.compress(spanning[300:], mtime=0), gzip.compress(b"", mtime=0)]
    members += [gzip.compress(garbled, mtime=0)]
    members += split_members((SAMPLE / "web" / "dolma-sample-0001.warc.gz").read_bytes())
    gone = warc_record("https://example.org/gone", english(9), "404 Not Found")
    members.append(gzip.compress(gone, mtime=0))
    path = tmp_path_factory.mktemp("warc") / "big.warc.gz"
    path.write_bytes(b"".join(members))
    return path, [sum(len(m) for m in members[:i]) for i in range(len(members))]


@pytest.fixture(scope="module")
def warc_whole(warc_gz, ex) -> pl.DataFrame:
    return read([Piece(input_file(warc_gz[0]))], ex)


def test_warc_gz_read_whole_keeps_fastwarcs_offsets(warc_gz, warc_whole):
    path, starts = warc_gz
    assert path.stat().st_size > 400_000
    offsets = [int(s.rsplit(":", 1)[1]) for s in warc_whole["source"]]
    assert offsets == sorted(set(offsets)) and offsets[0] >= 0
    three = starts[48]  # the member that holds three records
    assert [o for o in offsets if three <= o < starts[49]] == [three, three + 1, three + 2]
    assert set(offsets) - {three + 1, three + 2} <= set(starts)
    reasons = warc_whole["_reason"].to_list()
    assert {"ingest_warc_bad_record", "ingest_warc_http_status"} <= set(reasons)
    assert warc_whole.filter(pl.col("url") == "https://example.org/span")["text"][0]


@pytest.mark.parametrize("seed", SEEDS)
def test_warc_gz_pieces_give_the_whole_file(warc_gz, warc_whole, ex, seed):
    path, starts = warc_gz
    rng = random.Random(seed)
    f = input_file(path)
    assert_same(warc_whole, pieces_at(f, random_cuts(rng, f.size, starts)), ex)


def test_warc_gz_planned_pieces_give_the_whole_file(warc_gz, warc_whole, ex):
    f = input_file(warc_gz[0])
    plan = inputs.plan_partitions([f], 1 << 30, 9, min_piece_bytes=1)
    assert len(plan) >= 9
    assert_same(warc_whole, [p for part in plan for p in part.pieces], ex)


def test_a_gzipped_warc_inside_a_record_is_not_taken_for_a_member(tmp_path, ex):
    """A page that is itself a .warc.gz, in a member written without compression: its own
    member shows as is in the file, and inflates to b"WARC/" too."""
    inner = gzip.compress(warc_record("https://example.org/inner", english(1)), mtime=0)
    buf = io.BytesIO()
    writer = WARCWriter(buf, gzip=False)
    http = StatusAndHeaders("200 OK", [("Content-Type", "application/gzip")], "HTTP/1.1")
    record = writer.create_warc_record(
        "https://example.org/a.warc.gz", "response", io.BytesIO(inner), http_headers=http
    )
    writer.write_record(record)
    first = gzip.compress(buf.getvalue(), compresslevel=0, mtime=0)
    after = gzip.compress(warc_record("https://example.org/after", english(2)), mtime=0)
    (tmp_path / "nested.warc.gz").write_bytes(first + after)
    f = input_file(tmp_path / "nested.warc.gz")
    at = first.index(inner)
    whole = read([Piece(f)], ex)
    assert whole["url"].to_list() == ["https://example.org/a.warc.gz", "https://example.org/after"]
    for cut in range(at - 2, at + 3):
        assert_same(whole, pieces_at(f, [cut]), ex)


def test_a_cut_warc_gz_is_quarantined_once(tmp_path, warc_gz, ex):
    data = warc_gz[0].read_bytes()
    (tmp_path / "cut.warc.gz").write_bytes(data[: len(data) - 1000])
    f = input_file(tmp_path / "cut.warc.gz")
    whole = read([Piece(f)], ex)
    pieces = read(pieces_at(f, [f.size // 3, f.size // 2, f.size - 3000]), ex)
    for rows in (whole, pieces):
        assert rows.filter(pl.col("_reason") == ing.UNREADABLE).height == 1
        assert rows["source"].n_unique() == rows.height
    good = pl.col("_reason").is_null()
    assert_frame_equal(pieces.filter(good), whole.filter(good))


def test_a_warc_gz_that_is_not_gzipped_is_read_whole_by_its_first_piece(tmp_path, ex):
    data = gzip.decompress((SAMPLE / "web" / "cc-main-2024-22-whirlwind.warc.gz").read_bytes())
    (tmp_path / "plain.warc.gz").write_bytes(data)
    f = input_file(tmp_path / "plain.warc.gz")
    whole = read([Piece(f)], ex)
    assert whole.height > 0 and whole["_reason"].to_list().count(ing.UNREADABLE) == 0
    assert_same(whole, pieces_at(f, [f.size // 3, f.size // 2]), ex)


@pytest.mark.parametrize(
    ("name", "start", "end"),
    [
        ("a.warc", 0, 5),
        ("a.jsonl.gz", 5, None),
        ("a.txt", 1, 2),
        ("a.jsonl", 5, 5),
        ("a.jsonl", -1, 3),
    ],
)
def test_a_piece_that_cannot_be_read_is_refused(name, start, end):
    with pytest.raises(ValueError, match=rf"no piece {start}-{end} of s3://b/{name} can be read"):
        Piece(fake(name, 10), start, end)


# Parquet: pieces own the row groups that start in them


@pytest.mark.parametrize("dictionary", [True, False])
@pytest.mark.parametrize("seed", range(5))
def test_parquet_pieces_give_the_whole_file(tmp_path, dictionary, seed):
    rng = random.Random(seed)
    n = 200
    table = pa.table({
        "id": [None if i % 7 == 0 else f"pq{i}" for i in range(n)],
        "text": [None if i % 11 == 0 else english(i, rng.randint(1, 20)) for i in range(n)],
        "url": [f"https://example.org/{i % 5}" for i in range(n)],
    })  # fmt: skip
    path = tmp_path / "rows.parquet"
    pq.write_table(table, path, row_group_size=13, use_dictionary=dictionary)
    f = input_file(path)
    meta = pq.ParquetFile(path).metadata
    starts = [ing.row_group_start(meta.row_group(i)) for i in range(meta.num_row_groups)]
    assert meta.num_row_groups == 16 and starts == sorted(starts)
    whole = read([Piece(f)])
    assert whole.height == n
    assert whole["source"][150].endswith("rows.parquet:150")
    for _ in range(5):
        assert_same(whole, pieces_at(f, random_cuts(rng, f.size, starts)), None)
    plan = inputs.plan_partitions([f], 1 << 30, 6, min_piece_bytes=1)
    assert len(plan) == 6
    assert_same(whole, [p for part in plan for p in part.pieces], None)


def test_parquet_of_the_wrong_schema_is_one_row_whatever_the_pieces(tmp_path):
    pq.write_table(pa.table({"body": ["x"] * 100}), tmp_path / "w.parquet", row_group_size=10)
    f = input_file(tmp_path / "w.parquet")
    rows = read(pieces_at(f, [f.size // 4, f.size // 2]))
    assert rows["_reason"].to_list() == [ing.BAD_SCHEMA]


def test_pieces_read_from_s3_give_the_whole_file(s3_server, ex):
    import s3fs

    fs, bucket = s3fs.S3FileSystem(), f"split-{random.Random().getrandbits(32):08x}"
    fs.mkdir(bucket)
    fs.pipe(f"{bucket}/big.jsonl", jsonl_corpus(random.Random(0)))
    fs.pipe(f"{bucket}/web.warc.gz", (SAMPLE / "web" / "dolma-sample-0001.warc.gz").read_bytes())
    files, _ = inputs.discover([f"s3://{bucket}/"])
    assert len(files) == 2
    for f in files:
        plan = inputs.plan_partitions([f], 1 << 30, 7, min_piece_bytes=1)
        assert len(plan) == 7
        assert_same(read([Piece(f)], ex), [p for part in plan for p in part.pieces], ex)


# Planning


def fake(name: str, size: int) -> InputFile:
    return InputFile(f"s3://b/{name}", name, size, "v1")


def test_one_large_file_is_cut_for_min_partitions():
    f = fake("big.jsonl", 10 << 30)
    plan = inputs.plan_partitions([f], 64 << 20, min_partitions=4)
    assert len(plan) == 160
    assert all(len(p.pieces) == 1 and p.pieces[0].size <= 64 << 20 for p in plan)
    plan = inputs.plan_partitions([fake("a.parquet", 100 << 20)], 64 << 20, min_partitions=8)
    assert len(plan) == 8


@pytest.mark.parametrize("name", ["a.jsonl", "a.ndjson", "a.parquet", "a.warc.gz", "a.wet.gz"])
def test_pieces_cover_the_file_in_order(name):
    f = fake(name, 1_000_003)
    pieces = [
        p for part in inputs.plan_partitions([f], 10**9, 7, min_piece_bytes=1) for p in part.pieces
    ]
    assert len(pieces) == 7
    assert pieces[0].start == 0 and pieces[-1].end is None
    assert all(a.end == b.start for a, b in itertools.pairwise(pieces))
    assert sum(p.size for p in pieces) == f.size
    assert max(p.size for p in pieces) - min(p.size for p in pieces) <= 1


@pytest.mark.parametrize("name", ["a.jsonl.gz", "a.jsonl.zst", "a.txt", "a.txt.gz", "a.warc"])
def test_unsplittable_files_stay_whole(name):
    plan = inputs.plan_partitions([fake(name, 1 << 30)], 1 << 20, min_partitions=8)
    assert [p.pieces for p in plan] == [(Piece(fake(name, 1 << 30)),)]


def test_small_files_are_shared_among_min_partitions():
    files = [fake(f"f{i}.jsonl", 8 << 20) for i in range(4)]
    assert len(inputs.plan_partitions(files, 64 << 20)) == 1
    plan = inputs.plan_partitions(files, 64 << 20, min_partitions=2)
    assert [[p.file.name for p in part.pieces] for part in plan] == [
        ["f0.jsonl", "f1.jsonl"],
        ["f2.jsonl", "f3.jsonl"],
    ]
    assert all(p == Piece(p.file) for part in plan for p in part.pieces)


def old_plan(files: list[InputFile], partition_bytes: int) -> list[list[InputFile]]:
    """How files were grouped before files were cut."""
    groups: list[list[InputFile]] = []
    size = 0
    for f in files:
        if not groups or size + f.size > partition_bytes:
            groups.append([])
            size = 0
        groups[-1].append(f)
        size += f.size
    return groups


@pytest.mark.parametrize("seed", range(20))
def test_files_no_larger_than_a_partition_are_grouped_as_before(seed):
    rng = random.Random(seed)
    limit = rng.randint(100, 10_000)
    exts = [".jsonl", ".jsonl.gz", ".parquet", ".warc.gz", ".txt"]
    files = [fake(f"f{i}{rng.choice(exts)}", rng.randint(0, limit)) for i in range(30)]
    files += [fake("huge.jsonl.gz", 10 * limit)]  # unsplittable: alone, as before
    plan = inputs.plan_partitions(files, limit)
    assert [[p.file for p in part.pieces] for part in plan] == old_plan(files, limit)
    assert all(p.start == 0 and p.end is None for part in plan for p in part.pieces)
    assert [part.name for part in plan] == [f"p{i:05d}" for i in range(len(plan))]


def test_plans_are_deterministic_picklable_and_json():
    files = [fake("a.jsonl", 5000), fake("b.txt", 300), fake("c.warc.gz", 12_345)]
    plan = inputs.plan_partitions(files, 4000, min_partitions=3, min_piece_bytes=1)
    assert plan == inputs.plan_partitions(list(files), 4000, 3, min_piece_bytes=1)
    assert [len(part.pieces) for part in plan] == [1, 2, 1, 1, 1, 1]
    assert pickle.loads(pickle.dumps(plan)) == plan
    doc = json.loads(json.dumps([[asdict(p) for p in part.pieces] for part in plan]))
    assert doc[0][0] == {"file": asdict(files[0]), "start": 0, "end": 2500}


@pytest.mark.parametrize("args", [(0, 1, 1), (10, 0, 1), (10, 1, 0)])
def test_bad_plan_arguments_are_named(args):
    with pytest.raises(ValueError, match="must be at least 1"):
        inputs.plan_partitions([fake("a.jsonl", 10)], *args)


def test_no_piece_is_smaller_than_min_piece_bytes():
    files = [fake("huge.jsonl", 50 << 20), fake("mid.jsonl", 900_000), fake("b.parquet", 3 << 20)]
    plan = inputs.plan_partitions(files, 4000)
    sizes = {}
    for part in plan:
        for p in part.pieces:
            sizes.setdefault(p.file.name, []).append(p.size)
    assert sizes["huge.jsonl"] == [1 << 20] * 50
    assert sizes["mid.jsonl"] == [900_000]
    assert sizes["b.parquet"] == [1 << 20] * 3
    assert len(inputs.plan_partitions(files, 4000, min_piece_bytes=4000)) > 13_000
