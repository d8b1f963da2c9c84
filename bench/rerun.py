"""Time `refinery prepare` on the bundled sample twice into one fresh directory.

The second run finds every partition done, so it measures what resuming costs. Prints, for
both runs, the wall time of the whole command (Python start-up and Prefect's temporary server
included) and the time spent in the stages (the manifest's `seconds`), with their ratios.

    .venv/bin/python bench/rerun.py [--input tests/data/sample] [--config infra/configs/sample.yaml]
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed_prepare(inputs: str, output: Path, config: str) -> tuple[float, float]:
    """Wall seconds of one `refinery prepare`, and the seconds its stages took."""
    command = [sys.executable, "-m", "flows.cli", "prepare", "--input", inputs]
    start = time.perf_counter()
    subprocess.run([*command, "--output", str(output), "--config", config], check=True,
                   capture_output=True)  # fmt: skip
    wall = time.perf_counter() - start
    stages = json.loads((output / "manifest.json").read_text())["stages"]
    return wall, sum(s["seconds"] for s in stages.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input", default="tests/data/sample")
    parser.add_argument("--config", default="infra/configs/sample.yaml")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        first = timed_prepare(args.input, Path(tmp) / "out", args.config)
        second = timed_prepare(args.input, Path(tmp) / "out", args.config)
    print(f"{'':26}{'command':>10}{'stages':>10}")
    print(f"{'first run':26}{first[0]:9.1f}s{first[1]:9.1f}s")
    print(f"{'second run (all skipped)':26}{second[0]:9.1f}s{second[1]:9.1f}s")
    print(f"{'ratio':26}{second[0] / first[0]:10.2f}{second[1] / first[1]:10.2f}")


if __name__ == "__main__":
    main()
