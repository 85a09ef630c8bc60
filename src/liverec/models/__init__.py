"""Learners: every model follows the one protocol in ``base``."""

from .base import REGISTRY, FeedbackConfig, InteractionLog, Learner, Recommender, UserState, register
from .content import ContentProfile
from .mf import ALS, BPR
from .popularity import Trending

__all__ = [
    "ALS", "BPR", "REGISTRY", "ContentProfile", "FeedbackConfig", "InteractionLog", "Learner",
    "Recommender", "Trending", "UserState", "register",
]
