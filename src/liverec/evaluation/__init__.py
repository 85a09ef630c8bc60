"""Evaluation: splits, metrics, baselines, replay — the offline twin of the serving path.

``splits`` turns an event log into leak-checked train/test protocols; ``metrics`` are
pure functions of a ranked list and the held-out items.
"""

from .metrics import (
    METRICS,
    RankingMetric,
    catalog_coverage,
    hr_at_k,
    intra_list_diversity,
    map_at_k,
    mrr_at_k,
    ndcg_at_k,
    novelty,
    precision_at_k,
    recall_at_k,
)
from .splits import (
    ColdSplit,
    Split,
    StreamSplit,
    check_no_overlap,
    cold_item_split,
    stream_split,
    temporal_user_split,
)

__all__ = [
    "METRICS",
    "ColdSplit",
    "RankingMetric",
    "Split",
    "StreamSplit",
    "catalog_coverage",
    "check_no_overlap",
    "cold_item_split",
    "hr_at_k",
    "intra_list_diversity",
    "map_at_k",
    "mrr_at_k",
    "ndcg_at_k",
    "novelty",
    "precision_at_k",
    "recall_at_k",
    "stream_split",
    "temporal_user_split",
]
