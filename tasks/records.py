"""Per-stage bookkeeping: stats that balance, removal rules, and ledger rows.

Every stage turns a batch into a `StageResult`: the rows it keeps and the rows it removes. A
removed row is either *dropped* (filtered out on purpose, with a reason) or *quarantined* (it
could not be read or processed, with the error). Both become ledger rows; nothing disappears.
"""

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from shards.schema import (
    CLUSTER_SIZE,
    DOC_ID,
    DROPPED,
    LEDGER_SCHEMA,
    QUARANTINED,
    SOURCE,
    TEXT,
)

LEDGER_COLUMNS = LEDGER_SCHEMA.names


@dataclass
class StageStats:
    """Counts for one stage over one or more partitions; merge with `+`."""

    stage: str
    n_in: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    quarantined: dict[str, int] = field(default_factory=dict)
    bytes_in: int = 0
    bytes_out: int = 0
    seconds: float = 0.0
    added: int = 0  # documents a stage made (augment), counted in n_in
    scores: dict[str, float] = field(default_factory=dict)  # figures of the whole stage

    def __add__(self, other: "StageStats") -> "StageStats":
        if other.stage != self.stage:
            raise ValueError(f"cannot add stats of {other.stage!r} to {self.stage!r}")
        return StageStats(
            stage=self.stage,
            n_in=self.n_in + other.n_in,
            kept=self.kept + other.kept,
            dropped=dict(Counter(self.dropped) + Counter(other.dropped)),
            quarantined=dict(Counter(self.quarantined) + Counter(other.quarantined)),
            bytes_in=self.bytes_in + other.bytes_in,
            bytes_out=self.bytes_out + other.bytes_out,
            seconds=self.seconds + other.seconds,
            added=self.added + other.added,
            scores={**self.scores, **other.scores},
        )

    @property
    def n_removed(self) -> int:
        return sum(self.dropped.values()) + sum(self.quarantined.values())

    def check(self) -> "StageStats":
        """Raise if `n_in != kept + dropped + quarantined`; return self otherwise."""
        if self.n_in != self.kept + self.n_removed:
            raise RuntimeError(
                f"stage {self.stage!r} does not balance: in={self.n_in} kept={self.kept} "
                f"dropped={self.dropped} quarantined={self.quarantined}"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return (
            {
                "stage": self.stage,
                "n_in": self.n_in,
                "kept": self.kept,
                "dropped": dict(sorted(self.dropped.items())),
                "quarantined": dict(sorted(self.quarantined.items())),
                "bytes_in": self.bytes_in,
                "bytes_out": self.bytes_out,
                "seconds": round(self.seconds, 3),
            }
            | ({"added": self.added} if self.added else {})
            | ({"scores": self.scores} if self.scores else {})
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StageStats":
        return cls(**d)

    @classmethod
    def from_entry(cls, stage: str, entry: dict[str, Any]) -> "StageStats":
        """From a stage's manifest entry (`shards.manifest.stage_entry`)."""
        return cls(stage, entry["in"], entry["kept"], dict(entry["dropped"]),
                   dict(entry["quarantined_reasons"]), entry["bytes_in"], entry["bytes_out"],
                   entry["seconds"], entry.get("added", 0))  # fmt: skip

    def summary(self) -> str:
        """One log line: counts in, kept, dropped and quarantined by reason."""
        parts = [f"{self.stage}: in={self.n_in} kept={self.kept}"]
        parts += [f"{reason}={n}" for reason, n in sorted(self.dropped.items())]
        parts += [f"{reason}={n} (quarantined)" for reason, n in sorted(self.quarantined.items())]
        return " ".join(parts)


@dataclass
class StageResult:
    """What a stage made of one batch: kept rows and ledger rows (`LEDGER_COLUMNS`)."""

    kept: pl.DataFrame
    removed: pl.DataFrame

    def stats(self, stage: str, n_in: int, bytes_in: int, seconds: float) -> StageStats:
        """Count this result; raises if it does not balance with `n_in`."""
        counts = self.removed.group_by("kind", "reason").len().rows() if self.removed.height else []
        return StageStats(
            stage=stage,
            n_in=n_in,
            kept=self.kept.height,
            dropped={reason: n for kind, reason, n in counts if kind == DROPPED},
            quarantined={reason: n for kind, reason, n in counts if kind == QUARANTINED},
            bytes_in=bytes_in,
            bytes_out=text_bytes(self.kept),
            seconds=seconds,
        ).check()


@dataclass(frozen=True)
class Rule:
    """Remove the rows where `when` is true, with `reason` (and an optional `detail`)."""

    reason: str
    when: pl.Expr
    detail: pl.Expr | None = None
    kind: str = DROPPED


def text_bytes(df: pl.DataFrame) -> int:
    """UTF-8 bytes of the `text` column (0 when there is none)."""
    if TEXT not in df.columns or df.height == 0:
        return 0
    return int(df.select(pl.col(TEXT).str.len_bytes().sum()).item() or 0)


def empty_ledger() -> pl.DataFrame:
    return pl.DataFrame(schema={name: pl.String for name in LEDGER_COLUMNS})


ROW = "__row"  # a row's position among partitions read together (`tasks.partition`)


def ledger_rows(
    df: pl.DataFrame,
    stage: str,
    kind: str | pl.Expr,
    reason: str | pl.Expr,
    detail: pl.Expr | None = None,
) -> pl.DataFrame:
    """Turn rows of `df` into ledger rows of `stage` with the given kind, reason and detail
    (and `ROW`, first, when `df` has it)."""
    kind_expr = pl.lit(kind) if isinstance(kind, str) else kind
    reason_expr = pl.lit(reason) if isinstance(reason, str) else reason
    source = pl.col(SOURCE) if SOURCE in df.columns else pl.lit(None, pl.String)
    text = pl.col(TEXT) if TEXT in df.columns else pl.lit(None, pl.String)
    return df.select(
        *([pl.col(ROW)] if ROW in df.columns else []),
        pl.col(DOC_ID).cast(pl.String),
        pl.lit(stage).alias("stage"),
        kind_expr.cast(pl.String).alias("kind"),
        reason_expr.cast(pl.String).alias("reason"),
        (detail if detail is not None else pl.lit(None)).cast(pl.String).alias("detail"),
        source.cast(pl.String).alias(SOURCE),
        text.cast(pl.String).alias(TEXT),
    )


def apply_rules(df: pl.DataFrame, stage: str, rules: list[Rule]) -> StageResult:
    """Split `df` by `rules`: a row is removed by the first rule that matches it.

    A rule whose `when` is null for a row does not match it.
    """
    reason: pl.Expr = pl.lit(None, pl.String)
    kind: pl.Expr = pl.lit(None, pl.String)
    detail: pl.Expr = pl.lit(None, pl.String)
    for rule in reversed(rules):  # built inside out, so the first rule wins
        hit = rule.when.fill_null(False)
        reason = pl.when(hit).then(pl.lit(rule.reason)).otherwise(reason)
        kind = pl.when(hit).then(pl.lit(rule.kind)).otherwise(kind)
        rule_detail = rule.detail if rule.detail is not None else pl.lit(None, pl.String)
        detail = pl.when(hit).then(rule_detail.cast(pl.String)).otherwise(detail)
    tagged = df.with_columns(_reason=reason, _kind=kind, _detail=detail)
    removed = tagged.filter(pl.col("_reason").is_not_null())
    return StageResult(
        kept=tagged.filter(pl.col("_reason").is_null()).drop("_reason", "_kind", "_detail"),
        removed=ledger_rows(removed, stage, pl.col("_kind"), pl.col("_reason"), pl.col("_detail")),
    )


def drop_duplicates(df: pl.DataFrame, dups: pl.DataFrame, stage: str, reason: str) -> StageResult:
    """Drop the rows of `df` whose `duplicate_of` in `dups` is set, with `reason`.

    `dups` has `row`, `duplicate_of` (null for a cluster's kept row) and `cluster_size`, which
    the kept rows take; rows not in `dups` keep theirs (1 when there is none yet). Rows are
    matched by position in the partition, so repeated doc_ids cannot confuse it.
    """
    own = pl.col(CLUSTER_SIZE) if CLUSTER_SIZE in df.columns else pl.lit(1)
    tagged = (
        df.with_row_index("_row")
        .join(dups.rename({CLUSTER_SIZE: "_size"}), left_on="_row", right_on="row", how="left")
        .with_columns(pl.coalesce("_size", own).cast(pl.UInt32).alias(CLUSTER_SIZE))
        .drop("_size")
    )
    rule = Rule(reason, pl.col("duplicate_of").is_not_null(), pl.col("duplicate_of"))
    result = apply_rules(tagged.sort("_row"), stage, [rule])
    return StageResult(result.kept.drop("_row", "duplicate_of"), result.removed)
