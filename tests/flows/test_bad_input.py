"""Bad input through the whole prepare flow: every record is kept, dropped or quarantined,
with a reason and the `uri:offset` it came from, and the good records beside it are kept.

The fuzz corpus is built here, in `tmp_path`: one file (or record) per kind in `BAD_INPUT_KINDS`,
with good records mixed into the same files.
"""

import gzip
import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from flows.config import load_config
from flows.prepare import prepare
from shards.reader import read_shards
from tasks.filter.quality import QualityConfig, score_quality
from tests.conftest import SAMPLE, english

pytestmark = pytest.mark.usefixtures("prefect_server")

# Each kind of bad input the corpus holds, and the reason it must end with (None: kept in a
# repaired form the test checks, or a file with nothing to read).
BAD_INPUT_KINDS = {
    "invalid_utf8_undecodable": "normalize_undecodable",
    "cp1252_bytes_in_jsonl": None,
    "cp1252_txt": None,
    "latin1_txt": None,
    "utf16_bom_txt": None,
    "undecodable_txt": "normalize_undecodable",
    "nul_bytes_in_json_line": "ingest_bad_json",
    "nul_only_line": "ingest_bad_json",
    "escaped_nul_in_text": None,
    "nul_bytes_in_txt": None,
    "control_chars_only": "normalize_empty",
    "malformed_json": "ingest_bad_json",
    "deep_json_array": "ingest_bad_json",
    "deep_json_object": "ingest_bad_json",
    "json_not_an_object": "ingest_not_an_object",
    "missing_text": "ingest_missing_text",
    "null_text": "ingest_missing_text",
    "int_text": "ingest_bad_text_type",
    "list_text": "ingest_bad_text_type",
    "object_text": "ingest_bad_text_type",
    "bool_text": "ingest_bad_text_type",
    "lone_surrogate_in_text": None,
    "invalid_utf8_in_url_and_id": None,
    "truncated_gzip": "ingest_unreadable",
    "truncated_zstd": "ingest_unreadable",
    "gzip_second_member_fails": "ingest_unreadable",
    "empty_jsonl": None,
    "empty_gz": None,
    "empty_gzip_member": None,
    "empty_txt": "normalize_empty",
    "parquet_wrong_schema": "ingest_bad_schema",
    "parquet_null_text": "ingest_missing_text",
    "not_parquet": "ingest_unreadable",
    "huge_document_50mb": "gopher_long_doc",
    "html_all_script": "ingest_no_text",
    "warc_http_404": "ingest_warc_http_status",
    "warc_not_html": "ingest_warc_not_html",
    "warc_garbled_type_header": "ingest_warc_bad_record",
    "warc_bad_content_length": "ingest_warc_bad_record",
    "warc_truncated_record": "ingest_warc_bad_record",
    "not_a_warc": "ingest_unreadable",
}
HUGE_BYTES = 50 << 20
SETS = ["ingest.partition_bytes=4000", "shards.size_limit=20000"]


@pytest.fixture(scope="module")
def good_texts() -> list[str]:
    """English Wikipedia paragraphs of the sample that every content filter keeps."""
    with gzip.open(SAMPLE / "wiki.jsonl.gz", "rt") as f:
        rows = [json.loads(line) for line in f]
    en = [r for r in rows if r["id"].startswith("xquad-en")]
    df = pl.DataFrame({"doc_id": [r["id"] for r in en], "text": [r["text"] for r in en]})
    kept = score_quality(df.with_columns(lang=pl.lit("en")), QualityConfig()).kept
    assert kept.height >= 21, "the sample has too few English paragraphs that pass quality"
    return kept["text"].to_list()


@dataclass
class Corpus:
    """What the test wrote: every record's offset per file, where each bad-input kind is, and
    the good records with a piece of text each must keep."""

    root: Path
    records: dict[str, list[int]] = field(default_factory=dict)  # uri -> offsets written
    kinds: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # -> (uri, source)
    good: dict[str, str] = field(default_factory=dict)  # source -> a fragment of its text
    unreadable: set[str] = field(default_factory=set)  # uris whose rest is quarantined whole

    def uri(self, name: str) -> str:
        return f"file://{self.root / name}"

    def write(self, name: str, data: bytes, offsets: list[int]) -> None:
        (self.root / name).write_bytes(data)
        self.records[self.uri(name)] = offsets

    def kind(self, kind: str, name: str, offset: int | None = None) -> None:
        """Where `kind` is: a record's offset, or None for the rest of a file."""
        if offset is None and BAD_INPUT_KINDS[kind] == "ingest_unreadable":
            self.unreadable.add(self.uri(name))
        self.kinds[kind] = (
            self.uri(name),
            None if offset is None else f"{self.uri(name)}:{offset}",
        )

    def keep(self, name: str, offset: int, fragment: str = "") -> None:
        self.good[f"{self.uri(name)}:{offset}"] = fragment


def jsonl(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in lines)


def record(doc_id: str, text: object, **extra: object) -> bytes:
    return json.dumps({"id": doc_id, "text": text, **extra}, ensure_ascii=False).encode()


def filler(prefix: str, n: int) -> list[bytes]:
    return [record(f"{prefix}-{i}", english(i)) for i in range(n)]


def starts_of(lines: list[bytes]) -> list[int]:
    """The byte offset of each line in `jsonl(lines)`: a JSONL record's offset."""
    return [sum(len(line) + 1 for line in lines[:i]) for i in range(len(lines))]


def words(text: str, n: int = 6) -> str:
    return " ".join(text.split()[:n])


def write_records_jsonl(c: Corpus, good: list[str]) -> None:
    """One JSONL file of every per-record problem, with good records between them."""
    cp1252 = record("cp1252", good[1] + " Café crème.").decode().encode("cp1252")
    surrogate = json.dumps({"id": "surrogate", "text": good[3].replace(" ", " \ud800 ", 1)})
    bad_meta = b'{"id": "id-\xff", "url": "https://example.org/\xfe", "text": '
    lines = [
        ("good", record("good-0", good[0])),
        ("invalid_utf8_undecodable", b'{"id": "bad-utf8", "text": "\x81\x8d\x8f\x90\x9d"}'),
        ("cp1252_bytes_in_jsonl", cp1252),
        ("malformed_json", b'{"id": "broken", "text": "unterminated'),
        ("deep_json_array", b"[" * 100_000 + b"]" * 100_000),
        ("deep_json_object", b'{"a": ' * 100_000 + b"1" + b"}" * 100_000),
        ("json_not_an_object", b"[1, 2, 3]"),
        ("missing_text", json.dumps({"id": "no-text", "body": "words"}).encode()),
        ("null_text", record("null-text", None)),
        ("int_text", record("int-text", 42)),
        ("list_text", record("list-text", ["a", "b"])),
        ("object_text", record("object-text", {"a": 1})),
        ("bool_text", record("bool-text", True)),
        ("nul_bytes_in_json_line", b'{"id": "raw-nul", "text": "a\x00b"}'),
        ("nul_only_line", b"\x00\x00\x00"),
        ("escaped_nul_in_text", record("escaped-nul", good[2].replace(" ", " \u0000 ", 3))),
        ("control_chars_only", record("controls", "\u0000\u200b \t\u0007\n\u001b\ufeff")),
        ("lone_surrogate_in_text", surrogate.encode()),
        ("invalid_utf8_in_url_and_id", bad_meta + json.dumps(good[4]).encode() + b"}"),
        ("good", record("good-5", good[5])),
    ]
    name, at = "records.jsonl", starts_of([line for _, line in lines])
    c.write(name, jsonl([line for _, line in lines]) + b"\n  \n", at)
    for offset, (kind, _) in zip(at, lines, strict=True):
        if kind == "good":
            c.keep(name, offset)
        else:
            c.kind(kind, name, offset)
    c.keep(name, at[2], "Café crème.")
    c.keep(name, at[15], words(good[2]))
    c.keep(name, at[17], "\ufffd")
    c.keep(name, at[18], words(good[4]))


def write_compressed(c: Corpus, good: list[str]) -> None:
    """Cut and broken gzip and zstd files: what was read before the break is kept."""
    lines = [record("gz-good", good[6]), *filler("gz", 30)]
    data = gzip.compress(jsonl(lines), mtime=0)
    c.write("cut.jsonl.gz", data[: len(data) * 3 // 4], starts_of(lines))
    c.keep("cut.jsonl.gz", 0)
    c.kind("truncated_gzip", "cut.jsonl.gz")

    # Two frames, as a streaming compressor writes them; the second is cut short.
    lines = [record("zst-good", good[7]), *filler("zst", 30)]
    first = zstandard.ZstdCompressor().compress(jsonl(lines[:1]))
    second = zstandard.ZstdCompressor().compress(jsonl(lines[1:]))
    c.write("cut.jsonl.zst", first + second[: len(second) // 2], starts_of(lines))
    c.keep("cut.jsonl.zst", 0)
    c.kind("truncated_zstd", "cut.jsonl.zst")

    lines = [record("m-0", good[8]), record("m-1", good[9]), *filler("member", 40)]
    head = gzip.compress(jsonl(lines[:2]), mtime=0)
    tail = gzip.compress(jsonl(lines[2:]), mtime=0)
    at = starts_of(lines)
    c.write("members.jsonl.gz", head + tail[: len(tail) // 2], at)
    c.keep("members.jsonl.gz", at[0])
    c.keep("members.jsonl.gz", at[1])
    c.kind("gzip_second_member_fails", "members.jsonl.gz")

    for name, data, kind in [
        ("empty.jsonl", b"", "empty_jsonl"),
        ("empty.jsonl.gz", b"", "empty_gz"),
        ("empty-member.jsonl.gz", gzip.compress(b"", mtime=0), "empty_gzip_member"),
    ]:
        c.write(name, data, [])
        c.kind(kind, name)


def write_parquet_and_text(c: Corpus, good: list[str]) -> None:
    """Parquet of the wrong schema, with a null text, and not Parquet; text in five encodings."""
    for name, table in [
        ("wrong.parquet", pa.table({"id": ["w0", "w1"], "body": ["a", "b"]})),
        ("nulls.parquet", pa.table({"id": ["pq-good", "pq-null"], "text": [good[10], None]})),
    ]:
        pq.write_table(table, c.root / name)
        c.records[c.uri(name)] = [0, 1]
    c.records[c.uri("wrong.parquet")] = [0]  # the file is one quarantined row
    c.kind("parquet_wrong_schema", "wrong.parquet", 0)
    c.keep("nulls.parquet", 0)
    c.kind("parquet_null_text", "nulls.parquet", 1)
    c.write("not.parquet", b"PAR1 this is no Parquet file", [])
    c.kind("not_parquet", "not.parquet")

    texts = [
        ("cp1252_txt", "cp1252.txt", (good[11] + " Café crème.").encode("cp1252"), "Café crème."),
        ("latin1_txt", "latin1.txt", (good[12] + " Naïve façade.").encode("latin-1"), "façade"),
        ("utf16_bom_txt", "utf16.txt", (good[13] + " Łódź, Kraków.").encode("utf-16"), "Łódź"),
        (
            "nul_bytes_in_txt",
            "nul.txt",
            good[14].replace(" ", "\x00 ", 5).encode(),
            words(good[14]),
        ),
    ]
    for kind, name, data, fragment in texts:
        c.write(name, data, [0])
        c.kind(kind, name, 0)
        c.keep(name, 0, fragment)
    c.write("undecodable.txt", b"\x81\x8d\x8f\x90\x9d" * 10, [0])
    c.kind("undecodable_txt", "undecodable.txt", 0)
    c.write("empty.txt", b"", [0])
    c.kind("empty_txt", "empty.txt", 0)


def write_huge(c: Corpus, good: list[str]) -> None:
    """A single 50 MB document, then a good one in the same JSONL file."""
    sentence = "The river ran past the old mill while the children watched the water. "
    huge = sentence * (HUGE_BYTES // len(sentence) + 1)
    lines = [record("huge", huge), record("after-huge", good[15])]
    c.write("huge.jsonl", jsonl(lines), starts_of(lines))
    c.kind("huge_document_50mb", "huge.jsonl", 0)
    c.keep("huge.jsonl", starts_of(lines)[1])


def page(text: str) -> bytes:
    body = f"<article><p>{html.escape(text)}</p></article>"
    return f"<html lang='en'><head><title>T</title></head><body>{body}</body></html>".encode()


HTML = "text/html; charset=utf-8"


def warc_records(pages: list[tuple[str, bytes, str, str]], gz: bool) -> list[bytes]:
    """One WARC response record (a gzip member with `gz`) per (url, body, status, type)."""
    out = []
    for url, body, status, content_type in pages:
        buf = io.BytesIO()
        writer = WARCWriter(buf, gzip=gz)
        http = StatusAndHeaders(status, [("Content-Type", content_type)], protocol="HTTP/1.1")
        rec = writer.create_warc_record(url, "response", io.BytesIO(body), http_headers=http)
        writer.write_record(rec)
        out.append(buf.getvalue())
    return out


def starts(records: list[bytes]) -> list[int]:
    """The byte offset of each record in the records joined."""
    return [sum(len(r) for r in records[:i]) for i in range(len(records))]


def write_warcs(c: Corpus, good: list[str]) -> None:
    """A WARC of good, script-only, 404 and PDF pages; WARCs with broken headers, a cut
    record, and no WARC at all."""
    script = b"<html><head><script>" + b"var x = 1;" * 300 + b"</script></head>"
    script += b"<body><script>run()</script></body></html>"
    records = warc_records([
        ("https://example.org/a", page(good[16]), "200 OK", HTML),
        ("https://example.org/script", script, "200 OK", HTML),
        ("https://example.org/gone", page(good[17]), "404 Not Found", HTML),
        ("https://example.org/doc.pdf", b"%PDF-1.4 binary", "200 OK", "application/pdf"),
        ("https://example.org/b", page(good[17]), "200 OK", HTML),
    ], gz=True)  # fmt: skip
    at = starts(records)
    c.write("web.warc.gz", b"".join(records), at)
    c.keep("web.warc.gz", at[0], words(good[16], 3))
    c.keep("web.warc.gz", at[4], words(good[17], 3))
    for kind, i in [("html_all_script", 1), ("warc_http_404", 2), ("warc_not_html", 3)]:
        c.kind(kind, "web.warc.gz", at[i])

    records = warc_records([
        ("https://example.org/c", page(good[18]), "200 OK", HTML),
        ("https://example.org/garbled", page(english(1)), "200 OK", HTML),
        ("https://example.org/d", page(good[19]), "200 OK", HTML),
        ("https://example.org/length", page(english(2)), "200 OK", HTML),
    ], gz=False)  # fmt: skip
    records[1] = records[1].replace(b"WARC-Type: response", b"WARC-Type response garbled", 1)
    records[3] = records[3].replace(b"Content-Length: ", b"Content-Length: x", 1)
    at = starts(records)
    c.write("broken.warc", b"".join(records), at)
    c.keep("broken.warc", at[0])
    c.keep("broken.warc", at[2])
    c.kind("warc_garbled_type_header", "broken.warc", at[1])
    c.kind("warc_bad_content_length", "broken.warc", at[3])
    c.unreadable.add(c.uri("broken.warc"))  # its bad length makes the next header unreadable

    records = warc_records([
        ("https://example.org/e", page(good[20]), "200 OK", HTML),
        ("https://example.org/cut", page(english(3)), "200 OK", HTML),
    ], gz=False)  # fmt: skip
    c.write("cut.warc", records[0] + records[1][: len(records[1]) // 2], starts(records))
    c.keep("cut.warc", 0)
    c.kind("warc_truncated_record", "cut.warc", len(records[0]))

    c.write("junk.warc", b"this is not a WARC file\r\n" * 20, [])
    c.kind("not_a_warc", "junk.warc")


@pytest.fixture(scope="module")
def fuzz_run(tmp_path_factory, good_texts) -> tuple[Corpus, Path, dict]:
    root = tmp_path_factory.mktemp("fuzz")
    corpus = Corpus(root / "corpus")
    corpus.root.mkdir()
    writers = [write_records_jsonl, write_compressed, write_parquet_and_text, write_huge]
    for write in [*writers, write_warcs]:
        write(corpus, good_texts)
    out = root / "out"
    manifest = prepare(inputs=[str(corpus.root)], output=str(out), config=load_config(sets=SETS))
    return corpus, out, manifest


def ledger(out: Path) -> pl.DataFrame:
    return pl.concat([pl.read_ipc(p) for p in sorted((out / "ledger").glob("*/part-*.arrow"))])


def test_every_bad_input_kind_is_in_the_corpus(fuzz_run):
    corpus, _, _ = fuzz_run
    assert set(corpus.kinds) == set(BAD_INPUT_KINDS)


def test_the_run_finishes_and_balances(fuzz_run):
    _, out, manifest = fuzz_run
    t = manifest["totals"]
    assert t["added"] == 0
    assert t["documents"] == t["kept"] + t["dropped"] + t["quarantined"]
    for name, s in manifest["stages"].items():
        assert s["in"] == s["kept"] + sum(s["dropped"].values()) + s["quarantined"], name
    assert read_shards(out, verify=True).height == t["kept"]


def test_each_bad_record_ends_with_a_reason_at_its_source(fuzz_run):
    corpus, out, _ = fuzz_run
    removed = ledger(out)
    by_source = {row["source"]: row for row in removed.iter_rows(named=True)}
    for kind, (uri, source) in corpus.kinds.items():
        reason = BAD_INPUT_KINDS[kind]
        if reason is None:  # kept, repaired, or nothing to read: checked below
            continue
        if source is None:  # the rest of the file, as one row naming the file
            rows = removed.filter(pl.col("source").str.starts_with(uri + ":-"))
            assert rows.height == 1, kind
            row = rows.row(0, named=True)
            assert row["detail"].startswith(uri) and "after" in row["detail"], kind
        else:
            assert source in by_source, f"{kind}: nothing in the ledger at {source}"
            row = by_source[source]
        assert row["detail"], kind
        assert row["reason"] == reason, (kind, row["reason"], row["detail"])
        if row["reason"] == "ingest_bad_json":
            assert row["detail"].startswith(f"{source}: ")  # names the file and the line


def test_good_records_in_the_same_files_are_kept(fuzz_run):
    corpus, out, _ = fuzz_run
    shards = read_shards(out)
    texts = dict(zip(shards["source"], shards["text"], strict=True))
    for source, fragment in corpus.good.items():
        assert source in texts, f"the good record at {source} was not kept"
        assert fragment in texts[source], (source, fragment)
        assert "\x00" not in texts[source] and "ÿþ" not in texts[source], source
    assert set(texts) == set(corpus.good)
    _, source = corpus.kinds["invalid_utf8_in_url_and_id"]
    meta = shards.filter(pl.col("source") == source).row(0, named=True)
    assert (meta["doc_id"], meta["url"]) == ("id-\ufffd", "https://example.org/\ufffd")


def test_every_input_record_is_accounted_for(fuzz_run):
    corpus, out, _ = fuzz_run
    sources = [*read_shards(out)["source"], *ledger(out)["source"]]
    assert len(sources) == len(set(sources)), "a record is in two places"
    seen: dict[str, list[int]] = {}
    for source in sources:
        uri, _, offset = source.rpartition(":")
        seen.setdefault(uri, []).append(int(offset))
    assert set(seen) <= set(corpus.records)
    for uri, written in corpus.records.items():
        found = sorted(o for o in seen.get(uri, []) if o >= 0)
        cut = [o for o in seen.get(uri, []) if o < 0]  # -1 - (records read before the break)
        if uri in corpus.unreadable:  # what was read before the break, then one row for the rest
            assert found == written[: len(found)] and cut == [-1 - len(found)], uri
        else:
            assert not cut and found == written, uri


def test_the_huge_document_is_dropped_by_a_named_rule(fuzz_run):
    corpus, out, manifest = fuzz_run
    _, source = corpus.kinds["huge_document_50mb"]
    [row] = ledger(out).filter(pl.col("source") == source).iter_rows(named=True)
    assert (row["stage"], row["kind"], row["reason"]) == ("quality", "dropped", "gopher_long_doc")
    assert manifest["stages"]["ingest"]["bytes_in"] > HUGE_BYTES
