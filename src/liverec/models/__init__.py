"""Learners: every model follows the one protocol in ``base``."""

from .base import REGISTRY, FeedbackConfig, InteractionLog, Learner, Recommender, UserState, UserWeight, register
from .content import ContentProfile
from .ease import EASE
from .interests import DeclaredInterests
from .itemknn import ItemKNN
from .mf import ALS, BPR
from .neural import NeuralScorer
from .pop import MostPopular
from .popularity import Trending
from .sequence import SequenceModel
from .sessionknn import SessionKNN
from .tfidf import TfidfContent
from .transition import Transition
from .userknn import UserKNN

__all__ = [
    "EASE", "ItemKNN", "MostPopular", "TfidfContent", "UserKNN",
    "ALS", "BPR", "REGISTRY", "ContentProfile", "DeclaredInterests", "FeedbackConfig", "InteractionLog", "Learner",
    "NeuralScorer", "Recommender", "SequenceModel", "SessionKNN", "Transition", "Trending", "UserState", "UserWeight", "register",
]
