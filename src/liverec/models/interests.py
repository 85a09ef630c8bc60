"""Declared interests: what a user says they like, as a source of its own."""

from __future__ import annotations

from typing import ClassVar, Self

import numpy as np

from ..types import Event
from .base import InteractionLog, Learner, UserState, register
from .content import CentredSpace


@register
class DeclaredInterests(CentredSpace, Learner):
    """Items close to the interests a user declared, weighted to fade as their history grows.

    Score = the cosine between the declared-interests vector and the item's vector (both
    mean-centred, as :class:`~liverec.models.ContentProfile` compares them); zero for a
    user who declared none. The source's fusion weight is scaled per user by

        ``fusion_scale(user) = 1 / (1 + n / half_events)``

    with ``n`` the user's events the engine holds in memory (``history_length``, 50 by
    default): a user's declared interests lead their list while they have done little
    (with the default weight they outweigh every behavioural source together at a few
    events), count half at ``n = half_events`` (10) and a sixth at 50, so what the user
    does takes over as it accumulates. Events do not change the scores themselves, so a
    log holds no evidence of this source's weight (``learns_from_events`` is False): the
    learned and tuned fusion weights leave it at its setting.

    Examples
    --------
    >>> import numpy as np
    >>> from liverec.encode import Catalog
    >>> cat = Catalog(dim=2); _ = cat.upsert(["a", "b"], np.eye(2, dtype=np.float32), [{}, {}], ["", ""])
    >>> m = DeclaredInterests().fit(InteractionLog.from_events([], cat))
    >>> fan = UserState("u", interests=np.array([1.0, 0.0], dtype=np.float32))
    >>> m.score(fan, cat.select(["a", "b"])).round(3).tolist(), m.fusion_scale(fan)
    ([1.0, -1.0], 1.0)
    >>> m.score(UserState("u"), cat.select(["a", "b"])).tolist(), m.fusion_scale(UserState("u"))
    ([0.0, 0.0], 0.0)
    """

    name: ClassVar[str] = "interests"
    scores_new_items: ClassVar[bool] = True
    learns_from_events: ClassVar[bool] = False

    def __init__(self, *, half_events: float = 10.0, center: bool = True, seed: int = 0) -> None:
        self.half_events = half_events
        self.center = center
        self.seed = seed

    def fit(self, log: InteractionLog) -> Self:
        self._fit_space(log.catalog)
        return self

    def learn_one(self, event: Event) -> None:
        self._check_fitted()  # the user's events reach this source through fusion_scale only

    def query_vector(self, user: UserState) -> np.ndarray | None:
        """The centred, unit interests vector; None for a user who declared none."""
        if user.interests is None:
            return None
        q = self._centred(user.interests)
        return None if q is None else q.astype(np.float32)

    def fusion_scale(self, user: UserState) -> float:
        """``1 / (1 + n / half_events)`` for a user with declared interests, else 0."""
        if user.interests is None:
            return 0.0
        return 1.0 / (1.0 + len(user.history) / self.half_events) if self.half_events > 0 else 1.0
