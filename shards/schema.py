"""Column names and Arrow schemas of refinery's outputs.

Every file refinery writes (work partitions, shards, ledger) is an Arrow IPC file. Shards carry
`SHARD_SCHEMA`; the ledger carries `LEDGER_SCHEMA`. Bump `SCHEMA_VERSION` on any change.
"""

import pyarrow as pa

SCHEMA_VERSION = 2

DOC_ID = "doc_id"
TEXT = "text"
SOURCE = "source"
URL = "url"
TITLE = "title"
LANG = "lang"
LANG_SCORE = "lang_score"
# How many input documents a kept one stands for: itself and its exact and near duplicates.
CLUSTER_SIZE = "cluster_size"

# Gopher quality signals, one column each, so shards can be re-filtered without recomputing.
QUALITY_SIGNALS = (
    "q_word_count",
    "q_mean_word_length",
    "q_symbol_word_ratio",
    "q_bullet_lines_ratio",
    "q_ellipsis_lines_ratio",
    "q_alpha_words_ratio",
    "q_stop_words",
)

SHARD_SCHEMA = pa.schema(
    [
        pa.field(DOC_ID, pa.string(), nullable=False),
        pa.field(SOURCE, pa.string()),
        pa.field(URL, pa.string()),
        pa.field(TITLE, pa.string()),
        pa.field(TEXT, pa.large_string(), nullable=False),
        pa.field(LANG, pa.string()),
        pa.field(LANG_SCORE, pa.float32()),
        pa.field(CLUSTER_SIZE, pa.uint32()),
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
