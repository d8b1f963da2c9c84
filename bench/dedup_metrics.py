"""Document-level precision and recall of a near-duplicate filter against known clusters.

Of a true cluster of k documents the ideal filter removes k - 1 and keeps one. A removed
document counts as a true positive when its cluster has at least two documents and at least one
of them is kept; if every member of a cluster is removed, k - 1 removals are true positives and
one is a false positive. Removing a singleton is a false positive. Recall divides the true
positives by the sum of k - 1 over all clusters.

    >>> truth = pl.DataFrame({"doc_id": ["a", "b", "c", "d", "e"], "cluster": [1, 1, 1, 2, 3]})
    >>> score(truth, {"b", "c"})["f1"]
    1.0
    >>> s = score(truth, {"a", "b", "c", "d"})  # a whole cluster and a singleton
    >>> s["tp"], s["removed"], s["should_remove"], s["precision"], s["recall"]
    (2, 4, 2, 0.5, 1.0)
    >>> s = score(truth, {"b"})
    >>> s["precision"], s["recall"], round(s["f1"], 4)
    (1.0, 0.5, 0.6667)
    >>> score(truth, set())["f1"]
    0.0
"""

from __future__ import annotations

import polars as pl


def score(truth: pl.DataFrame, removed: set[str]) -> dict:
    """Score the set of removed documents against the true clusters.

    Args:
        truth: One row per document of the corpus, with `doc_id` and `cluster`.
        removed: The doc_ids the filter removed.

    Returns:
        precision, recall and f1 (0.0 where undefined), and the counts removed, tp and
        should_remove.

    Raises:
        ValueError: If `removed` names documents that are not in `truth`.
    """
    flagged = truth.select("doc_id", "cluster").with_columns(
        is_removed=pl.col("doc_id").is_in(sorted(removed))
    )
    per_cluster = flagged.group_by("cluster").agg(
        size=pl.len(), n_removed=pl.col("is_removed").sum().cast(pl.Int64)
    )
    n_removed = int(per_cluster["n_removed"].sum())
    if n_removed != len(removed):
        raise ValueError(f"{len(removed) - n_removed} removed doc_ids are not in the corpus")
    tp_expr = (
        pl.when(pl.col("size") < 2)
        .then(0)
        .otherwise(pl.min_horizontal("n_removed", pl.col("size") - 1))
    )
    tp = int(per_cluster.select(tp_expr.sum()).item() or 0)
    should_remove = int((per_cluster["size"] - 1).sum())
    precision = tp / n_removed if n_removed else 0.0
    recall = tp / should_remove if should_remove else 0.0
    f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "removed": n_removed,
        "tp": tp,
        "should_remove": should_remove,
    }


if __name__ == "__main__":
    import doctest

    failed, attempted = doctest.testmod(extraglobs={"pl": pl})
    print(f"{attempted - failed} passed, {failed} failed")
