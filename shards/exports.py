"""Where `refinery export` writes each format (`tasks.output.export` writes the files).

    <to>/megatron/<split>_text_document.bin, .idx    Megatron's indexed dataset, per split
    <to>/hf/dataset_dict.json                         a Hugging Face DatasetDict:
    <to>/hf/<split>/data-<shard>.arrow                  Arrow IPC streams, one per text shard
    <to>/hf/<split>/state.json, dataset_info.json       as `save_to_disk` writes them
    <to>/<format>/manifest.json                       the export's manifest, written last

`<to>` is `<output>/export` unless the export names another folder or URI.
"""

from pathlib import Path


def export_dir(out: Path, to: Path | None, fmt: str) -> Path:
    """The folder of format `fmt`'s export of the output `out`."""
    return (to if to is not None else out / "export") / fmt


def megatron_file(dest: Path, split: str, ext: str) -> Path:
    """A split's `.bin` (tokens) or `.idx` (index); without `ext`, the prefix Megatron takes."""
    return dest / f"{split}_text_document{'.' + ext if ext else ''}"


def hf_part(dest: Path, split: str, shard: int) -> Path:
    return dest / split / f"data-{shard:05d}.arrow"


def hf_split_file(dest: Path, split: str, name: str) -> Path:
    """`state.json` or `dataset_info.json` of a split."""
    return dest / split / name


def hf_dict(dest: Path) -> Path:
    return dest / "dataset_dict.json"
