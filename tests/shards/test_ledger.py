import pyarrow as pa

from shards import ledger
from shards.writer import write_table


def test_publish_links_each_partition_and_removes_what_a_run_no_longer_has(tmp_path):
    work = tmp_path / "work"
    files = []
    for i in range(3):
        write_table(pa.table({"doc_id": [f"d{i}"]}), work / f"p{i}.ledger.arrow")
        files.append(work / f"p{i}.ledger.arrow")
    out = tmp_path / "out"
    ledger.publish(out, {"normalize": files, "langid": files[:1]})
    found = ledger.ledger_files(out)
    assert [p.relative_to(out).as_posix() for p in found] == [
        "ledger/langid/part-00000.arrow",
        "ledger/normalize/part-00000.arrow",
        "ledger/normalize/part-00001.arrow",
        "ledger/normalize/part-00002.arrow",
    ]
    assert found[2].read_bytes() == files[1].read_bytes()
    ledger.publish(out, {"normalize": files[:2]})  # langid off, one partition fewer
    assert [p.relative_to(ledger.ledger_dir(out)).as_posix() for p in ledger.ledger_files(out)] == [
        "normalize/part-00000.arrow",
        "normalize/part-00001.arrow",
    ]
