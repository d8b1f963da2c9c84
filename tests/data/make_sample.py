"""Build the bundled sample corpus in tests/data/sample/ from the shared source data.

Usage:
    python tests/data/make_sample.py --shared /path/to/shared/data --out tests/data/sample

The output is committed, so a clone does not need the source data. Running the script twice
gives byte-identical files: inputs are read in sorted order, all randomness comes from one
random.Random(0), and gzip streams are written with mtime=0. Sources and licences of every
file are listed in tests/data/NOTICE. Only the standard library and pyarrow are used.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import random
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

Record = dict  # one JSON object
SPACED_LANGS = {"en", "es", "de", "ru", "el", "tr", "ro", "vi", "ar", "hi"}
# Natural near-duplicates: Spanish variants, German before and after the 1996 spelling reform.
UDHR_NEAR_DUPS = ["042", "spa", "deu_1901", "deu_1996"]
UDHR_REQUIRED = [*UDHR_NEAR_DUPS, "arb", "cmn_hans", "eng", "fra", "hin", "jpn", "rus"]
UDHR_TOTAL, UDHR_MAX_CHARS = 60, 4000
LICENSE_FILES = [
    "multilingual-wiki-paragraphs/LICENSE-CC-BY-SA-4.0-xquad.txt",
    "udhr-multilingual/LICENSE-udhr-package-MIT.txt",
]
FOOTERS = [
    "Share this page.",
    "All rights reserved.",
    "Read more on our website.",
    "Subscribe to our newsletter for updates.",
]


def read_jsonl(path: Path) -> list[Record]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def dumps(record: Record) -> str:
    return json.dumps(record, ensure_ascii=False)


def jsonl_bytes(records: list[Record]) -> bytes:
    return "".join(dumps(r) + "\n" for r in records).encode("utf-8")


def write_gzip(path: Path, data: bytes) -> None:
    path.write_bytes(gzip.compress(data, compresslevel=9, mtime=0))


def copy_file(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(src.read_bytes())  # bytes only: no timestamps or read-only modes


def wiki_record(row: Record, rid: str | None = None) -> Record:
    return {
        "id": rid or row["id"],
        "text": row["text"],
        "title": row["title"],
        "lang_hint": row["lang"],
    }


def parallel_rows(rows: list[Record], groups: range) -> list[Record]:
    wanted = {f"xquad-{g:03d}" for g in groups}
    picked = [r for r in rows if r["parallel_group"] in wanted]
    return sorted(picked, key=lambda r: (r["parallel_group"], r["lang"]))


# One paragraph of each of the 48 XQuAD articles (every fifth parallel group, from 3: it
# includes group 38, and leaves groups 50-52 to broken.jsonl.gz), and native paragraphs taken
# evenly through the Chinese and Japanese sets, so the sample's paragraphs are spread over
# all the articles rather than the first few.
WIKI_GROUPS = range(3, 240, 5)


def build_wiki(rows: list[Record]) -> list[Record]:
    zh = [r for r in rows if r["lang"] == "zh" and r["source"].startswith("cmrc2018")][3::7]
    ja = [r for r in rows if r["lang"] == "ja" and r["source"].startswith("jsquad")][3::9]
    return [wiki_record(r) for r in parallel_rows(rows, WIKI_GROUPS) + zh[:120] + ja[:120]]


def udhr_line_count(text: str) -> int:
    """Number of leading lines that fit in UDHR_MAX_CHARS (at least one)."""
    total, count = 0, 0
    for line in text.split("\n"):
        total += len(line) + 1
        if total > UDHR_MAX_CHARS + 1:
            break
        count += 1
    return max(count, 1)


def build_udhr(rows: list[Record], rng: random.Random) -> list[Record]:
    """Required versions plus a seeded sample of stage>=4 versions, truncated at line ends.

    Versions of one ISO 639-3 code keep the same number of lines so near-duplicate pairs
    (German spellings, Spanish variants) stay near-duplicates after truncation.
    """
    by_code = {r["code"]: r for r in rows if r["stage"] >= 4}
    others = sorted(set(by_code) - set(UDHR_REQUIRED))
    codes = sorted(UDHR_REQUIRED + rng.sample(others, UDHR_TOTAL - len(UDHR_REQUIRED)))
    n_lines: dict[str, int] = {}
    for code in codes:
        iso, count = by_code[code]["iso6393"], udhr_line_count(by_code[code]["text"])
        n_lines[iso] = min(n_lines.get(iso, count), count)
    out = []
    for code in codes:
        row = by_code[code]
        text = "\n".join(row["text"].split("\n")[: n_lines[row["iso6393"]]])
        out.append(
            {"id": f"udhr-{code}", "text": text, "title": row["name"], "lang_hint": row["bcp47"]}
        )
    return out


def perturb_words(text: str, rng: random.Random) -> str:
    """Change ~3% of words: swap neighbours or replace with another word of the text."""
    tokens = re.split(r"(\s+)", text)  # words at even indices, whitespace at odd ones
    words = list(range(0, len(tokens), 2))
    vocab = sorted({tokens[i] for i in words if tokens[i]})
    for _ in range(max(1, round(0.03 * len(words)))):
        k = rng.randrange(len(words) - 1)
        i, j = words[k], words[k + 1]
        if rng.random() < 0.5:
            tokens[i], tokens[j] = tokens[j], tokens[i]
        else:
            tokens[i] = rng.choice(vocab)
    out = "".join(tokens)
    return out + "\n" + rng.choice(FOOTERS) if rng.random() < 0.5 else out


def perturb_chars(text: str, rng: random.Random) -> str:
    """Change ~3% of characters: swap neighbours or replace with another character."""
    chars = list(text)
    vocab = sorted({c for c in chars if not c.isspace()})
    for _ in range(max(1, round(0.03 * len(chars)))):
        i = rng.randrange(len(chars) - 1)
        if rng.random() < 0.5:
            chars[i], chars[i + 1] = chars[i + 1], chars[i]
        else:
            chars[i] = rng.choice(vocab)
    return "".join(chars)


def base_lang(doc: Record) -> str:
    return doc["lang_hint"].split("-")[0]


def variant(doc: Record, rid: str, text: str) -> Record:
    rec = {"id": rid, "text": text, "title": doc["title"], "lang_hint": doc["lang_hint"]}
    return {**rec, "dup_of": doc["id"]}


def build_variants(docs: list[Record], rng: random.Random) -> list[Record]:
    docs = sorted(docs, key=lambda d: d["id"])
    spaced = [d for d in docs if base_lang(d) in SPACED_LANGS and len(d["text"].split()) >= 80]
    cjk = [d for d in docs if base_lang(d) in {"zh", "ja"} and len(d["text"]) >= 100]
    out = [variant(d, f"dup-exact-{i:03d}", d["text"]) for i, d in enumerate(rng.sample(docs, 40))]
    out += [
        variant(d, f"dup-near-{i:03d}", perturb_words(d["text"], rng))
        for i, d in enumerate(rng.sample(spaced, 40))
    ]
    out += [
        variant(d, f"dup-near-cjk-{i:03d}", perturb_chars(d["text"], rng))
        for i, d in enumerate(rng.sample(cjk, 10))
    ]
    return out


def junk_lines() -> list[str]:
    mojibake = "The café was fine — really. We’ll be back".encode().decode("cp1252")
    control = "This sentence has a NUL\x00 byte.\x07 The bell rang\x1b[0m twice.\x0b It ended."
    records: list[object] = [
        {"text": ""},
        {"text": "   \n\t  \n "},
        {"title": "record without a text field"},
        {"text": 123},
        {"text": None},
        '{"id": "junk-005", "text": "unterminated',
        "{'id': 'junk-006', 'text': 'single quotes are not JSON'}",
        {"text": "CLICK HERE!!! Buy now, limited offer. Click here to buy now. Free shipping!!!"},
        {"text": "#love #instagood #photooftheday ### @@@ *** !!! $$$ %%% ^^^ &&& #### ~~~ |||"},
        {"text": "cheap flights, hotels, car rental, best price, discount, deals, travel, booking"},
        {"text": "\n".join(["Lorem ipsum dolor sit amet, consectetur adipiscing elit."] * 40)},
        {"text": f"{mojibake}. The soup was warm and the bread was fresh. We paid and left."},
        {"text": control},
        {"text": "ok"},
        {
            "url": "https://free-xxx-movies.example/watch?v=1",
            "text": "Watch the newest videos free every day, no sign-up needed. Thousands of "
            "clips are added each week and the player works on every phone and tablet.",
        },
    ]
    lines = []
    for i, rec in enumerate(records):
        lines.append(rec if isinstance(rec, str) else dumps({"id": f"junk-{i:03d}", **rec}))
    return lines


NOTES = {
    "bicycle-repair.txt": "Fixing a flat tyre on a bicycle takes less time than most people expect. Shift to the smallest rear cog, open the brake if it has a quick release, and take the wheel out. Use two plastic levers to lift one side of the tyre off the rim, then pull out the tube. Before fitting a new one, run your fingers slowly around the inside of the tyre, because the thorn or shard of glass that caused the puncture is often still there. Put a little air into the new tube so it holds its shape, tuck it in, and work the bead back over the rim with your thumbs. Pump it to the pressure printed on the sidewall, refit the wheel, and check the brake before you ride away.",  # noqa: E501
    "bread-baking.txt": "A simple loaf of bread needs only flour, water, salt and yeast, but patience matters just as much. Mix the dough until no dry flour remains, then let it rest for twenty minutes so the flour can absorb the water. Knead it on a lightly floured table, folding and pushing, until it feels smooth and springs back when pressed. Leave it covered in a warm corner until it has roughly doubled, which can take an hour or three depending on the kitchen. Shape it gently, let it rise again, and bake it in a very hot oven with a tray of water underneath for steam. The crust should sound hollow when tapped. Wait before slicing, since the crumb keeps cooking as it cools.",  # noqa: E501
    "marche-du-samedi.txt": "Le samedi matin, le marché de la place envahit les rues étroites du vieux quartier. Dès sept heures, les maraîchers déchargent des cagettes de poireaux, de pommes reinettes et de fraises gariguettes. On se faufile entre les étals, on goûte un morceau de comté affiné dix-huit mois, on hésite devant les huîtres de Marennes. La boulangère crie ses prix, le fromager plaisante avec les habitués, et un accordéoniste joue près de la fontaine. Vers midi, les allées se vident, les cafés se remplissent, et l'on rentre chez soi, le panier trop lourd, en se promettant d'être plus raisonnable la semaine prochaine.",  # noqa: E501
    "tide-pools.txt": "At low tide the rocks along the northern beach turn into a maze of small pools, each one a separate little world. Sea anemones close into green knobs when the water leaves them and open again like flowers when it returns. Hermit crabs drag borrowed shells across the sand at the bottom, and tiny fish dart under ledges whenever a shadow passes overhead. Periwinkles and limpets cling to the sides so tightly that prying them loose would kill them, so visitors are asked to look without touching. The best time to explore is an hour before the lowest tide, with shoes that grip wet stone, and it is wise to keep an eye on the sea, because it comes back faster than you think.",  # noqa: E501
}
NOTES["bread-baking-copy.txt"] = NOTES["bread-baking.txt"]  # exact duplicate on purpose


def build_broken(rows: list[Record]) -> bytes:
    """Five English JSON lines, gzip-compressed, with the last ~30% of the stream cut off."""
    english = [r for r in parallel_rows(rows, range(60, 65)) if r["lang"] == "en"]
    data = jsonl_bytes([wiki_record(r, f"broken-{i:03d}") for i, r in enumerate(english)])
    full = gzip.compress(data, compresslevel=9, mtime=0)
    return full[: int(len(full) * 0.7)]


def check_broken(blob: bytes) -> int:
    """Return how many full lines are readable before the truncated stream fails."""
    good = 0
    try:
        with gzip.open(io.BytesIO(blob), "rt", encoding="utf-8") as f:
            for line in f:
                json.loads(line)
                good += 1
    except (EOFError, gzip.BadGzipFile, json.JSONDecodeError):
        return good
    raise AssertionError("broken.jsonl.gz decompressed without an error")


def write_parquet(path: Path, rows: list[Record]) -> None:
    picked = parallel_rows(rows, range(50, 53))[:30]
    table = pa.table(
        {col: pa.array([r[col] for r in picked], pa.string()) for col in ("id", "text", "title")}
    )
    pq.write_table(table, path, compression="zstd")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, required=True, help="shared source data dir")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "sample")
    args = parser.parse_args()
    src, out, rng = args.shared, args.out, random.Random(0)
    for sub in ("essays", "notes", "web"):
        (out / sub).mkdir(parents=True, exist_ok=True)

    wiki_rows = read_jsonl(src / "multilingual-wiki-paragraphs" / "paragraphs.jsonl")
    wiki = build_wiki(wiki_rows)
    udhr = build_udhr(read_jsonl(src / "udhr-multilingual" / "udhr.jsonl"), rng)
    broken = build_broken(wiki_rows)
    assert check_broken(broken) >= 2, "broken.jsonl.gz must keep at least 2 readable lines"

    (out / "broken.jsonl.gz").write_bytes(broken)  # already gzip, deliberately truncated
    write_parquet(out / "extra.parquet", wiki_rows)
    (out / "junk.jsonl").write_text("".join(line + "\n" for line in junk_lines()), encoding="utf-8")
    write_gzip(out / "udhr.jsonl.gz", jsonl_bytes(udhr))
    write_gzip(out / "variants.jsonl.gz", jsonl_bytes(build_variants(wiki + udhr, rng)))
    write_gzip(out / "wiki.jsonl.gz", jsonl_bytes(wiki))

    for path in sorted((src / "dedup-clough-stevenson" / "corpus").glob("*.txt")):
        copy_file(path, out / "essays" / path.name)
    for lic in LICENSE_FILES:
        # Beside the sample, not in it: a .txt in the sample would be read as a document.
        copy_file(src / lic, out.parent / "LICENSES" / Path(lic).name)
    for name in sorted(NOTES):
        (out / "notes" / name).write_text(NOTES[name] + "\n", encoding="utf-8")
    for path in sorted((src / "web-warc").glob("*.gz")):  # every real crawl file: WARC, WET, WAT
        copy_file(path, out / "web" / path.name)


if __name__ == "__main__":
    main()
