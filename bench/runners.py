"""Wall time of `refinery prepare` on the bundled sample with each task runner.

    .venv/bin/python bench/runners.py [--workers 2] [--input tests/data/sample]

Each runner writes to a fresh directory; the shards must come out byte-identical.
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(runner: str, workers: int, inputs: str, out: Path) -> float:
    command = [sys.executable, "-m", "flows.cli", "prepare", "--input", inputs, "--output",
               str(out), "--config", "infra/configs/sample.yaml", "--runner", runner,
               "--workers", str(workers)]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--input", default="tests/data/sample")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        times, shards = {}, {}
        for runner in ("local", "process", "dask"):
            out = Path(tmp) / runner
            times[runner] = run(runner, args.workers, args.input, out)
            shards[runner] = {p.name: p.read_bytes() for p in sorted(out.glob("part-*.arrow"))}
    same = shards["local"] == shards["process"] == shards["dask"]
    print(f"{'runner':10}{'wall s':>8}   ({args.workers} workers; identical shards: {same})")
    for runner, seconds in times.items():
        print(f"{runner:10}{seconds:8.1f}")


if __name__ == "__main__":
    main()
