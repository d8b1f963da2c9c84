"""`manifest.json`: what a run wrote (shards with checksums) and where every document went.

`stages` maps each stage that ran, in order, to `in`, `kept`, `dropped` (reason to count),
`quarantined` (a count), `quarantined_reasons`, `seconds` (the stage's wall time in this
run) and `work` (its directory under `work/`, for the stages that have one). Every stage
balances (in = kept + dropped + quarantined) and each stage's `kept` is the next stage's
`in`; `check_balance` enforces both.
"""

from pathlib import Path
from typing import Any

from shards.schema import SCHEMA_VERSION
from shards.writer import write_json


def stage_entry(stats: dict[str, Any], seconds: float, work: str | None = None) -> dict[str, Any]:
    """One stage's manifest entry from its stats (`tasks.records.StageStats.to_dict`), with
    the name of its work directory when it has one."""
    entry = {
        "in": stats["n_in"],
        "kept": stats["kept"],
        "dropped": stats["dropped"],
        "quarantined": sum(stats["quarantined"].values()),
        "quarantined_reasons": stats["quarantined"],
        "bytes_in": stats["bytes_in"],
        "bytes_out": stats["bytes_out"],
        "seconds": round(seconds, 3),
    }
    return entry | ({"work": work} if work else {})


def check_balance(stages: dict[str, dict[str, Any]]) -> None:
    """Raise ValueError naming the first stage whose counts do not add up."""
    previous: tuple[str, int] | None = None
    for name, s in stages.items():
        removed = sum(s["dropped"].values()) + s["quarantined"]
        if s["in"] != s["kept"] + removed:
            raise ValueError(
                f"stage {name!r}: in={s['in']} != kept={s['kept']} + removed={removed}"
            )
        if previous is not None and previous[1] != s["in"]:
            raise ValueError(f"stage {name!r}: in={s['in']} but {previous[0]!r} kept {previous[1]}")
        previous = (name, s["kept"])


def build_manifest(
    fingerprint: str,
    config: dict[str, Any],
    inputs: dict[str, Any],
    shards: list[dict[str, Any]],
    stages: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """Assemble and check the manifest."""
    check_balance(stages)
    first = next(iter(stages.values()))
    return {
        "schema_version": SCHEMA_VERSION,
        "fingerprint": fingerprint,
        "inputs": inputs,
        "shards": shards,
        "totals": {
            "documents": first["in"],
            "kept": sum(s["rows"] for s in shards),
            "dropped": sum(sum(s["dropped"].values()) for s in stages.values()),
            "quarantined": sum(s["quarantined"] for s in stages.values()),
        },
        "stages": stages,
        "config": config,
    }


def write_manifest(out_dir: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest atomically; it is the last file a run writes."""
    write_json(manifest, out_dir / "manifest.json")
