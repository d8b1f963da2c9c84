"""Column names and Arrow schemas of refinery's outputs.

Every file refinery writes (work partitions, shards, ledger) is an Arrow IPC file. Shards carry
`SHARD_SCHEMA`; the ledger carries `LEDGER_SCHEMA`. Bump `SCHEMA_VERSION` on any change.
"""

import pyarrow as pa

SCHEMA_VERSION = 5

DOC_ID = "doc_id"
TEXT = "text"
SOURCE = "source"
URL = "url"
TITLE = "title"
DATE = "date"  # ISO 8601: the date a page states, else its capture date
DECLARED_LANG = "declared_lang"  # the language a page declares (html lang), ISO 639-1 if any
# The trafilatura settings that found a page's text: precision, default, recall or baseline
# (null for text that was not extracted from HTML: JSONL, Parquet, WET).
EXTRACTION = "extraction"
LANG = "lang"
LANG_SCORE = "lang_score"
# How many input documents a kept one stands for: itself and its exact and near duplicates.
CLUSTER_SIZE = "cluster_size"

SCRIPT = "script"  # ISO 15924 code of the script most letters are written in
LANG_TOP = "lang_top"  # the model's top 3 labels: list of {lang, score}
PII_REPLACED = "pii_replaced"  # e-mail addresses, phones, IPs (and names) replaced
# Augmented documents: the doc_id rewritten, how, by which model, and chrF against it (0-100).
AUGMENTED_FROM = "augmented_from"
AUGMENT_METHOD = "augment_method"
AUGMENT_MODEL = "augment_model"
AUGMENT_CHRF = "augment_chrf"

# Quality signals, one column each, so shards can be re-filtered without recomputing.
QUALITY_SIGNALS = (
    # Gopher quality (Rae et al., 2021)
    "q_gopher_words",
    "q_gopher_mean_word_length",
    "q_gopher_symbol_word_ratio",
    "q_gopher_bullet_lines_ratio",
    "q_gopher_ellipsis_lines_ratio",
    "q_gopher_alpha_words_ratio",
    "q_gopher_stop_words",
    # Gopher repetition
    "q_gopher_dup_para_ratio",
    "q_gopher_dup_para_char_ratio",
    "q_gopher_dup_line_ratio",
    "q_gopher_dup_line_char_ratio",
    *(f"q_gopher_top_{n}gram_char_ratio" for n in (2, 3, 4)),
    *(f"q_gopher_dup_{n}gram_char_ratio" for n in range(5, 11)),
    # C4 (Raffel et al., 2020)
    "q_c4_lorem_ipsum",
    "q_c4_curly_bracket",
    "q_c4_sentences",
    "q_c4_bad_words",
    "q_c4_javascript_lines",
    "q_c4_policy_lines",
    # FineWeb (Penedo et al., 2024)
    "q_fineweb_line_punct_ratio",
    "q_fineweb_short_line_ratio",
    "q_fineweb_char_dup_ratio",
    "q_fineweb_list_ratio",
    # a trained classifier's probability of the positive class (null without a model)
    "q_model",
)

LANG_TOP_TYPE = pa.list_(pa.struct([("lang", pa.string()), ("score", pa.float32())]))

SHARD_SCHEMA = pa.schema(
    [
        pa.field(DOC_ID, pa.string(), nullable=False),
        pa.field(SOURCE, pa.string()),
        pa.field(URL, pa.string()),
        pa.field(TITLE, pa.string()),
        pa.field(DATE, pa.string()),
        pa.field(DECLARED_LANG, pa.string()),
        pa.field(EXTRACTION, pa.string()),
        pa.field(TEXT, pa.large_string(), nullable=False),
        pa.field(LANG, pa.string()),
        pa.field(LANG_SCORE, pa.float32()),
        pa.field(SCRIPT, pa.string()),
        pa.field(LANG_TOP, LANG_TOP_TYPE),
        pa.field(PII_REPLACED, pa.uint32()),
        pa.field(CLUSTER_SIZE, pa.uint32()),
        pa.field(AUGMENTED_FROM, pa.string()),
        pa.field(AUGMENT_METHOD, pa.string()),
        pa.field(AUGMENT_MODEL, pa.string()),
        pa.field(AUGMENT_CHRF, pa.float32()),
        *[pa.field(name, pa.float32()) for name in QUALITY_SIGNALS],
    ],
    metadata={"refinery.schema_version": str(SCHEMA_VERSION)},
)

DROPPED = "dropped"
QUARANTINED = "quarantined"

LEDGER_SCHEMA = pa.schema(
    [
        pa.field(DOC_ID, pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),  # DROPPED or QUARANTINED
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string()),  # duplicate_of for duplicates, the error otherwise
        pa.field(SOURCE, pa.string()),
        pa.field(TEXT, pa.large_string()),
    ],
    metadata={"refinery.schema_version": str(SCHEMA_VERSION)},
)
