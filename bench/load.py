"""How `refinery prepare` scales: the bundled sample at 1x, 10x and 50x, time and peak memory.

A scaled corpus is the sample as it is plus `scale - 1` generated copies of its text
documents. Copy k of a document is the document followed by another document of the same
file (chosen by k), each re-cut at a different sentence, so copies are new documents (word
3-gram Jaccard with any other about 0.3, under the near-duplicate threshold), not copies
dedup would fold away, and they keep their language. Every scale runs with the same
partition size, so the work per task, and memory outside the dedup index, should stay flat
while time grows linearly.

Prints per scale: documents, kept, wall seconds, documents per second, peak resident memory
of the whole process tree (sampled every 0.1 s), and the stages' seconds.

    .venv/bin/python bench/load.py [--scales 1 10 50] [--json PATH]
"""

import argparse
import gzip
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

SAMPLE = Path(__file__).resolve().parents[1] / "tests" / "data" / "sample"
TEXT_FILES = ("wiki.jsonl.gz", "udhr.jsonl.gz", "variants.jsonl.gz")
SETTINGS = ["ingest.partition_bytes=4194304", "shards.size_limit=16777216"]


def read_jsonl(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def recombined(docs: list[dict], k: int, rng: random.Random) -> list[dict]:
    """Copy `k` of every document: itself joined to another document of the same file."""
    out = []
    for i, doc in enumerate(docs):
        other = docs[(i + 7 * k + rng.randrange(len(docs))) % len(docs)]["text"]
        cut = rng.randrange(max(len(other) // 2, 1))
        text = doc["text"] + "\n\n" + other[cut:].lstrip()
        out.append({"id": f"{doc.get('id', i)}~x{k}", "text": text})
    return out


def build_corpus(root: Path, scale: int) -> int:
    """The sample plus `scale - 1` generated copies of its JSONL documents; returns how many
    generated documents were written."""
    subprocess.run(["cp", "-r", str(SAMPLE), str(root / "sample")], check=True)
    rng, written = random.Random(scale), 0
    for name in TEXT_FILES:
        docs = [d for d in read_jsonl(SAMPLE / name) if isinstance(d.get("text"), str)]
        for k in range(1, scale):  # a file per copy: a file is never split across partitions
            with gzip.open(root / f"scaled-{k:03d}-{name}", "wt", encoding="utf-8") as f:
                for doc in recombined(docs, k, rng):
                    f.write(json.dumps(doc, ensure_ascii=False) + "\n")
                    written += 1
    return written


class PeakMemory:
    """Peak resident set size of a process and all its children, sampled in a thread."""

    def __init__(self, pid: int) -> None:
        self.root, self.peak, self._stop = psutil.Process(pid), 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            try:
                procs = [self.root, *self.root.children(recursive=True)]
                rss = sum(p.memory_info().rss for p in procs if p.is_running())
            except psutil.Error:
                continue
            self.peak = max(self.peak, rss)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def run(root: Path) -> dict:
    out = root / "out"
    command = [sys.executable, "-m", "flows.cli", "prepare", "--input", str(root), "--output",
               str(out), *[a for s in SETTINGS for a in ("--set", s)]]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    memory = PeakMemory(proc.pid)
    _, err = proc.communicate()
    wall, peak = time.perf_counter() - start, memory.stop()
    if proc.returncode != 0:
        raise SystemExit(f"prepare failed:\n{err.decode()[-2000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    stages = {name: s["seconds"] for name, s in manifest["stages"].items()}
    docs = manifest["totals"]["documents"]
    return {"documents": docs, "kept": manifest["totals"]["kept"], "wall_s": round(wall, 1),
            "docs_per_s": round(docs / wall, 1), "peak_rss_mb": round(peak / 2**20),
            "partitions": len(manifest["inputs"]["partitions"]), "stages_s": stages}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = {}
    for scale in args.scales:
        with tempfile.TemporaryDirectory() as tmp:
            build_corpus(Path(tmp), scale)
            results[scale] = run(Path(tmp))
        r = results[scale]
        print(f"{scale}x: {r['documents']} documents, {r['kept']} kept, {r['partitions']} "
              f"partitions, {r['wall_s']} s, {r['docs_per_s']} docs/s, peak RSS "
              f"{r['peak_rss_mb']} MB", flush=True)  # fmt: skip
    base = results[args.scales[0]]
    print("\n| scale | documents | partitions | wall s | docs/s | peak RSS MB | time ÷ 1x |"
          " docs ÷ 1x |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for scale, r in results.items():
        print(f"| {scale}x | {r['documents']} | {r['partitions']} | {r['wall_s']} | "
              f"{r['docs_per_s']} | {r['peak_rss_mb']} | {r['wall_s'] / base['wall_s']:.1f} | "
              f"{r['documents'] / base['documents']:.1f} |")  # fmt: skip
    print("\nstage seconds: " + "; ".join(
        f"{scale}x " + ", ".join(f"{k} {v:.1f}" for k, v in r["stages_s"].items())
        for scale, r in results.items()))  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
