"""The ledger: every row a run removed, as `<out>/ledger/<stage>/part-{i:05d}.arrow`.

Each stage's removed rows of partition `i` (`LEDGER_SCHEMA`: doc_id, stage, kind, reason,
detail and the original row) are written into its work directory; `publish` exposes them in the
output as hard links (copies across file systems; server-side copies, each whole, on object
storage), and removes the files of stages and partitions that a run no longer has.
"""

import os
from pathlib import Path

from shards import failpoints
from shards.manifest import remove_stale
from shards.storage import is_remote
from shards.writer import SHARD_GLOB, atomic_path, shard_name


def ledger_dir(out_dir: Path) -> Path:
    """The ledger folder of an output directory."""
    return out_dir / "ledger"


def ledger_files(out_dir: Path) -> list[Path]:
    """Every ledger file of an output directory, sorted by stage, then partition."""
    return sorted(ledger_dir(out_dir).glob(f"*/{SHARD_GLOB}"))


def link(src: Path, dst: Path) -> None:
    """Make `dst` a hard link to `src` (a copy on another file system), atomically."""
    with atomic_path(dst) as tmp:
        try:
            os.link(src, tmp)
        except OSError:  # another file system: copy instead
            tmp.write_bytes(src.read_bytes())


def copy_objects(pairs: list[tuple[Path, Path]]) -> None:
    """Copy each object (src, dst) on the same object store, whole, all requests at once."""
    if pairs:
        fs = pairs[0][1].fs
        fs.copy([src.path for src, _ in pairs], [dst.path for _, dst in pairs])


def publish(out_dir: Path, ledgers: dict[str, list[Path]]) -> None:
    """Expose each stage's ledger files as `<out>/ledger/<stage>/part-{i:05d}.arrow`.

    Args:
        out_dir: The output directory.
        ledgers: Each stage that removes rows, in order, to its ledger file of each partition
            (in partition order).
    """
    root = ledger_dir(out_dir)
    for stage, paths in ledgers.items():
        names = {shard_name(i): path for i, path in enumerate(paths)}
        if is_remote(root):  # one batch of concurrent server-side copies
            copy_objects([(path, root / stage / name) for name, path in names.items()])
        else:
            for name, path in names.items():
                failpoints.hit("ledger-link")
                link(path, root / stage / name)
        remove_stale(root / stage, SHARD_GLOB, set(names))
    for stale in root.glob(f"*/{SHARD_GLOB}"):
        if stale.parent.name not in ledgers:
            stale.unlink()
