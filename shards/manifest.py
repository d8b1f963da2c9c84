"""`manifest.json`: what a run wrote (shards with checksums) and where every document went.

`stages` maps each stage that ran, in order, to `in`, `kept`, `dropped` (reason to count),
`quarantined` (a count), `quarantined_reasons`, `seconds` (the stage's wall time in this
run) and `work` (its directory under `work/`, for the stages that have one). Every stage
balances (in = kept + dropped + quarantined) and each stage's `kept` is the next stage's
`in`, less what that stage `added` (augment's new documents, of which `new_kept` are kept);
`check_balance` enforces both. So documents + added = kept + dropped + quarantined.
"""

import json
from pathlib import Path
from typing import Any

from shards import failpoints
from shards.schema import SCHEMA_VERSION
from shards.writer import SHARD_GLOB, write_json


def manifest_path(directory: Path) -> Path:
    """The `manifest.json` of an output directory, or of its token shards."""
    return directory / "manifest.json"


def read_manifest(out_dir: Path) -> dict[str, Any]:
    """Load `<out_dir>/manifest.json`, raising FileNotFoundError with the path if missing."""
    path = manifest_path(out_dir)
    if not path.exists():
        raise FileNotFoundError(f"no manifest at {path}: is this a refinery output directory?")
    return json.loads(path.read_text())


def shard_paths(out_dir: Path, shards: list[dict[str, Any]]) -> list[Path]:
    """The files of the manifest entries `shards` (its `shards` list) of `out_dir`."""
    return [out_dir / shard["path"] for shard in shards]


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
    if added := stats.get("added"):  # documents the stage made, in `in`; new_kept of them kept
        entry |= {"added": added, "new_kept": stats["kept"] - stats["n_in"] + added}
    if stats.get("scores"):
        entry["scores"] = stats["scores"]
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
        came = s["in"] - s.get("added", 0)
        if previous is not None and previous[1] != came:
            raise ValueError(f"stage {name!r}: in={came} but {previous[0]!r} kept {previous[1]}")
        previous = (name, s["kept"])


def build_manifest(
    fingerprint: str,
    config: dict[str, Any],
    inputs: dict[str, Any],
    shards: list[dict[str, Any]],
    stages: dict[str, dict[str, Any]],
    work: list[str] | None = None,
) -> dict[str, Any]:
    """Assemble and check the manifest; `work` names every work directory the run's results
    come from (the stages' and those beside them, such as the quality signals)."""
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
            "added": sum(s.get("added", 0) for s in stages.values()),
            "augmented": sum(s.get("new_kept", 0) for s in stages.values()),
        },
        "stages": stages,
        "work": sorted(work or []),
        "config": config,
    }


def work_in_use(manifest: dict[str, Any]) -> set[str]:
    """The work directories a finished run's manifest names (`refinery gc` keeps them)."""
    named = {entry["work"] for entry in manifest["stages"].values() if "work" in entry}
    return named | set(manifest.get("work", []))


def write_manifest(out_dir: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest atomically; it is the last file a run writes."""
    failpoints.hit("manifest")
    write_json(manifest, manifest_path(out_dir))


def finished_manifest(out_dir: Path, fingerprint: str) -> dict[str, Any] | None:
    """The manifest of a finished run with the same fingerprint, if its shards are all there."""
    try:
        manifest = read_manifest(out_dir)
    except FileNotFoundError:
        return None
    same = manifest.get("fingerprint") == fingerprint
    return (
        manifest
        if same and all(p.exists() for p in shard_paths(out_dir, manifest["shards"]))
        else None
    )


def void_manifest(directory: Path) -> None:
    """Remove the manifest of `directory` (if any) before its files are rewritten: until a new
    one is written, the directory holds no finished run."""
    manifest_path(directory).unlink(missing_ok=True)


def remove_stale(directory: Path, pattern: str, keep: set[str]) -> None:
    """Delete files matching `pattern` in `directory` that a run no longer produces."""
    for path in directory.glob(pattern):
        if path.name not in keep:
            path.unlink()


def remove_unlisted_shards(out_dir: Path, shards: list[dict[str, Any]]) -> None:
    """Delete the shards of an earlier run that the manifest entries `shards` do not list."""
    remove_stale(out_dir, SHARD_GLOB, {shard["path"] for shard in shards})
