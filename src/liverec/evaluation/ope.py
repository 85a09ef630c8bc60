"""Off-policy evaluation: a new policy's click rate, estimated from another policy's log.

Every slate liverec serves is logged with the propensity of each shown item (the
Vowpal Wabbit convention: a logged decision is ``(context, action, reward,
propensity)``). Off-policy evaluation (OPE) answers "what click rate would policy π
have had?" from such a log without serving π: the evaluation side of exploration.

Conventions follow the Open Bandit Pipeline (obp, Saito et al. 2021) so numbers are
comparable with its published examples:

- a :class:`LoggedBandit` holds ``n`` rounds; round ``i`` showed action (item)
  ``action[i]`` at slate position ``position[i]`` (0-based) in context
  ``context[i]``, got reward ``reward[i]`` (0/1) and had logging propensity
  ``propensity[i]`` = π₀(action | context, position);
- an evaluation policy is an ``action_dist`` array of shape
  ``(n, n_actions, n_positions)`` holding π(a | x_i, position) (each ``[i, :, k]``
  sums to 1). A context-free policy may be given as ``(n_actions, n_positions)``;
- a reward model ``q_hat`` has the same shape ``(n, n_actions, n_positions)`` and
  holds q̂(x_i, a, position) = estimated P(click).

Estimators (each returns an :class:`Estimate`: the value and per-round contributions,
whose mean is the value):

- ``ips`` — inverse propensity scoring, mean of w_i r_i with w_i = π(a_i|x_i)/π₀(a_i|x_i)
  (Horvitz & Thompson 1952; Precup et al. 2000);
- ``snips`` — self-normalised IPS, Σ w_i r_i / Σ w_i (Swaminathan & Joachims, "The
  Self-Normalized Estimator for Counterfactual Learning", NeurIPS 2015);
- ``dm`` — direct method, mean over rounds of Σ_a π(a|x_i) q̂(x_i, a);
- ``dr`` — doubly robust, DM plus the IPS-weighted residual w_i (r_i − q̂(x_i, a_i))
  (Dudík, Langford & Li, "Doubly Robust Policy Evaluation and Learning", ICML 2011);
  unbiased when either the propensities or q̂ are right;
- ``replay`` — keep the rounds where the evaluation policy picks the logged action and
  average their rewards (Li, Chu, Langford & Wang, "Unbiased Offline Evaluation of
  Contextual-bandit-based News Article Recommendation Algorithms", WSDM 2011). It is
  unbiased only when the logging policy is uniform over actions; for a stochastic π
  the action is sampled from π (the rejection-sampling variant).

Why not obp itself: obp pins old versions of its dependencies and does not install on
Python 3.11, and each estimator is a few lines of numpy. The reward model for DM/DR
is scikit-learn's ``LogisticRegression`` on ``[context, one-hot action, one-hot
position, item features, per-round item features]`` with cross-fitting (obp's
``RegressionModel.fit_predict(n_folds=...)`` does the same): the rounds are split into
``k`` folds and each fold's q̂ comes from a model fitted on the other folds, so a
round's own reward never leaks into its prediction (the residual in DR would
otherwise be shrunk towards zero, biasing it towards DM).

Confidence intervals are percentile bootstraps over rounds (:func:`bootstrap_ci`); for
ratio estimators (SNIPS, replay) each resample recomputes the ratio. DM's interval
holds q̂ fixed, so it ignores the reward model's own estimation error.

:func:`validate_on_obd` checks the estimators on the Open Bandit Dataset (Saito,
Aihara, Matsutani & Narita, NeurIPS 2021 Datasets track, arXiv:2008.07146): the
Bernoulli Thompson sampling policy's click rate is estimated from the uniform-random
policy's log and compared with the click rate BTS actually got. Run it with
``python -m liverec.evaluation.ope /path/to/open-bandit-dataset``.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> n, n_actions = 2000, 2
>>> action = rng.integers(0, n_actions, n)
>>> reward = (rng.random(n) < np.where(action == 1, 0.3, 0.1)).astype(float)
>>> log = LoggedBandit(context=np.zeros((n, 0)), action=action, position=np.zeros(n, int),
...                    reward=reward, propensity=np.full(n, 0.5), n_actions=n_actions)
>>> always_1 = np.array([[0.0], [1.0]])  # (n_actions, n_positions): context-free; true value 0.3
>>> round(ips(log, always_1).estimate, 2), round(snips(log, always_1).estimate, 2)
(0.33, 0.31)
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import json
import math
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence, SupportsFloat, TypeGuard

import numpy as np

from ..errors import ValidationError

__all__ = [
    "ESTIMATORS",
    "OBP_REFERENCE_RELATIVE_ERROR",
    "Estimate",
    "LoggedBandit",
    "bernoulli_ts_action_dist",
    "bootstrap_ci",
    "dm",
    "dr",
    "empirical_action_dist",
    "estimate_all",
    "fit_reward_model",
    "format_obd_table",
    "from_impressions",
    "ips",
    "load_open_bandit",
    "relative_error",
    "replay",
    "snips",
    "validate_on_obd",
]

#: Relative errors obp's quickstart reports on the same OBD sample (BTS evaluated from
#: the random log, zozotown prior). Printed next to ours for reference only.
OBP_REFERENCE_RELATIVE_ERROR: dict[str, float] = {"dr": 0.29, "dm": 0.16, "ips": 0.31}

#: Event kinds that count as a reward in :func:`from_impressions` by default.
DEFAULT_REWARD_KINDS: tuple[str, ...] = ("click", "like", "purchase")


# ------------------------------------------------------------------- the log
@dataclass(frozen=True)
class LoggedBandit:
    """A log of ``n`` bandit rounds: (context, action, position, reward, propensity).

    Parameters
    ----------
    context : (n, d) float array
        Context features X of each round (``d`` may be 0).
    action : (n,) int array
        The logged action (item index in ``0 .. n_actions-1``).
    position : (n,) int array
        0-based slate position the action was shown at.
    reward : (n,) float array
        Observed reward, 0/1 for clicks.
    propensity : (n,) float array
        π₀(action | context, position) of the logging policy, in (0, 1].
    n_actions, n_positions : int
        Sizes of the action set and of the slate.
    action_context : (n_actions, m) float array, optional
        Features of each action (item), shared by all rounds.
    round_action_context : (n, n_actions, k) float array, optional
        Features of each (round, action) pair, e.g. OBD's user-item affinity; a
        2-D ``(n, n_actions)`` array is taken as ``k = 1``.
    action_ids : tuple of str, optional
        External id of each action index.

    Examples
    --------
    >>> import numpy as np
    >>> log = LoggedBandit(context=np.zeros((3, 1)), action=[0, 1, 1], position=[0, 0, 1],
    ...                    reward=[0, 1, 0], propensity=[0.5, 0.5, 0.5], n_actions=2,
    ...                    n_positions=2)
    >>> log.n_rounds, float(log.reward.mean())
    (3, 0.3333333333333333)
    """

    context: np.ndarray
    action: np.ndarray
    position: np.ndarray
    reward: np.ndarray
    propensity: np.ndarray
    n_actions: int
    n_positions: int = 1
    action_context: np.ndarray | None = None
    round_action_context: np.ndarray | None = None
    action_ids: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            if isinstance(value, np.ndarray):
                value = value.view()  # read-only view: the caller's array keeps its flags
                value.setflags(write=False)
            object.__setattr__(self, name, value)

        action = np.asarray(self.action)
        n = action.shape[0] if action.ndim == 1 else -1
        if n < 1:
            raise ValidationError(
                f"action must be a non-empty 1-D array of action indices, got shape {action.shape}.",
                field="action",
            )
        if not np.issubdtype(action.dtype, np.integer):
            if not np.all(np.equal(np.mod(action, 1), 0)):
                raise ValidationError("action must hold integer action indices.", field="action")
        put("action", action.astype(np.int64))
        put("position", np.asarray(self.position).astype(np.int64).reshape(-1))
        put("reward", np.asarray(self.reward, dtype=np.float64).reshape(-1))
        put("propensity", np.asarray(self.propensity, dtype=np.float64).reshape(-1))
        ctx = np.asarray(self.context, dtype=np.float64)
        if ctx.ndim == 1:
            ctx = ctx.reshape(-1, 1)
        put("context", ctx)
        put("n_actions", int(self.n_actions))
        put("n_positions", int(self.n_positions))
        for name in ("position", "reward", "propensity", "context"):
            if getattr(self, name).shape[0] != n:
                raise ValidationError(
                    f"{name} has {getattr(self, name).shape[0]} rows but action has {n}: every "
                    "array of a LoggedBandit needs one row per round.",
                    field=name,
                )
        if self.n_actions < 1 or self.action.min() < 0 or self.action.max() >= self.n_actions:
            raise ValidationError(
                f"actions must lie in 0..n_actions-1 = 0..{self.n_actions - 1}, got "
                f"{self.action.min()}..{self.action.max()}: raise n_actions or re-index actions.",
                field="action",
            )
        if self.n_positions < 1 or self.position.min() < 0 or self.position.max() >= self.n_positions:
            raise ValidationError(
                f"positions must lie in 0..n_positions-1 = 0..{self.n_positions - 1}, got "
                f"{self.position.min()}..{self.position.max()} (positions are 0-based).",
                field="position",
            )
        p = self.propensity
        if not np.all(np.isfinite(p)) or np.any(p <= 0) or np.any(p > 1 + 1e-9):
            raise ValidationError(
                "propensity must be in (0, 1] for every round: a zero propensity means the "
                "logging policy could not have shown the item, so the round cannot be reweighted.",
                field="propensity",
            )
        if not np.all(np.isfinite(self.reward)) or not np.all(np.isfinite(self.context)):
            raise ValidationError("reward and context must be finite numbers.", field="reward")
        if self.action_context is not None:
            ac = np.asarray(self.action_context, dtype=np.float64)
            if ac.ndim == 1:
                ac = ac.reshape(-1, 1)
            if ac.shape[0] != self.n_actions:
                raise ValidationError(
                    f"action_context has {ac.shape[0]} rows, expected n_actions={self.n_actions}.",
                    field="action_context",
                )
            put("action_context", ac)
        if self.round_action_context is not None:
            rac = np.asarray(self.round_action_context, dtype=np.float64)
            if rac.ndim == 2:
                rac = rac[:, :, None]
            if rac.ndim != 3 or rac.shape[:2] != (n, self.n_actions):
                raise ValidationError(
                    f"round_action_context must be (n, n_actions[, k]) = ({n}, {self.n_actions}"
                    f"[, k]), got {rac.shape}.",
                    field="round_action_context",
                )
            put("round_action_context", rac)
        if self.action_ids is not None:
            ids = tuple(str(a) for a in self.action_ids)
            if len(ids) != self.n_actions:
                raise ValidationError(
                    f"action_ids has {len(ids)} entries, expected n_actions={self.n_actions}.",
                    field="action_ids",
                )
            put("action_ids", ids)

    @property
    def n_rounds(self) -> int:
        return int(self.action.shape[0])

    def subset(self, rows: np.ndarray) -> "LoggedBandit":
        """The rounds ``rows`` (indices or a boolean mask) as a new log."""
        rac = self.round_action_context
        return LoggedBandit(
            context=self.context[rows], action=self.action[rows], position=self.position[rows],
            reward=self.reward[rows], propensity=self.propensity[rows], n_actions=self.n_actions,
            n_positions=self.n_positions, action_context=self.action_context,
            round_action_context=None if rac is None else rac[rows], action_ids=self.action_ids,
        )


# ------------------------------------------------------------------- loaders
_OBD_REQUIRED = ("item_id", "position", "click", "propensity_score")


def _stable_bucket(text: str, buckets: int) -> int:
    # md5, not hash(): Python salts str hashes per process, and columns must not move.
    return int(hashlib.md5(text.encode("utf-8")).hexdigest()[:12], 16) % buckets


def _encode_categoricals(frame: Any, hash_buckets: int | None) -> np.ndarray:
    """One-hot (sorted categories) or hashed one-hot (``hash_buckets`` per column)."""
    blocks: list[np.ndarray] = []
    for col in frame.columns:
        values = frame[col].astype(str).to_numpy()
        if hash_buckets is None:
            cats, codes = np.unique(values, return_inverse=True)
            block = np.zeros((len(values), len(cats)))
        else:
            lookup = {v: _stable_bucket(f"{col}={v}", hash_buckets) for v in set(values)}
            codes = np.array([lookup[v] for v in values], dtype=np.int64)
            block = np.zeros((len(values), hash_buckets))
        block[np.arange(len(values)), codes] = 1.0
        blocks.append(block)
    return np.hstack(blocks) if blocks else np.zeros((len(frame), 0))


def _obd_csv(path: Path) -> Path:
    if path.is_file():
        return path
    if not path.is_dir():
        raise ValidationError(
            f"no Open Bandit Dataset log at {path}: pass a folder such as "
            ".../open-bandit-dataset/random/all (holding all.csv) or the CSV file itself.",
            field="path",
        )
    named = path / f"{path.name}.csv"  # obp's layout: <policy>/<campaign>/<campaign>.csv
    if named.is_file():
        return named
    found = sorted(p for p in path.glob("*.csv") if p.name != "item_context.csv")
    if len(found) != 1:
        raise ValidationError(
            f"expected one log CSV in {path} (besides item_context.csv), found "
            f"{[p.name for p in found]}: pass the CSV file itself.",
            field="path",
        )
    return found[0]


def load_open_bandit(path: str | Path, *, hash_buckets: int | None = None) -> LoggedBandit:
    """Read one Open Bandit Dataset log (e.g. ``.../random/all``) as a :class:`LoggedBandit`.

    - actions are ``item_id``; positions are OBD's 1-based ``position`` minus one;
      rewards are ``click``; propensities are ``propensity_score``;
    - context = the hashed ``user_feature_*`` strings one-hot encoded (categories sorted,
      so the same file always gives the same columns; with ``hash_buckets`` each feature
      is instead md5-hashed into that many columns, which keeps columns aligned across
      files with different category sets) followed by the ``user-item_affinity_*`` floats;
    - ``round_action_context`` = the affinity of the round's user with each item
      (``user-item_affinity_j`` belongs to item ``j``) when there is one per item;
    - ``action_context`` = ``item_context.csv`` beside the log: numeric columns as they
      are, hashed string columns one-hot encoded, rows ordered by ``item_id``.
    """
    import pandas as pd

    csv = _obd_csv(Path(path))
    df = pd.read_csv(csv, index_col=0)
    missing = [c for c in _OBD_REQUIRED if c not in df.columns]
    if missing:
        raise ValidationError(
            f"{csv} is not an Open Bandit Dataset log: columns {missing} are missing "
            f"(found {list(df.columns)[:8]}...).",
            field="path",
        )
    user_cols = sorted((c for c in df.columns if c.startswith("user_feature_")),
                       key=lambda c: int(c.rsplit("_", 1)[1]))
    aff_cols = sorted((c for c in df.columns if c.startswith("user-item_affinity_")),
                      key=lambda c: int(c.rsplit("_", 1)[1]))
    users = _encode_categoricals(df[user_cols], hash_buckets)
    affinity = df[aff_cols].to_numpy(dtype=np.float64) if aff_cols else np.zeros((len(df), 0))
    action = df["item_id"].to_numpy(dtype=np.int64)
    raw_pos = df["position"].to_numpy(dtype=np.int64)
    if raw_pos.min() < 1:
        raise ValidationError(
            f"{csv}: OBD positions are 1-based, found {raw_pos.min()}.", field="position"
        )
    position = raw_pos - 1

    action_context = None
    item_csv = csv.parent / "item_context.csv"
    n_items = int(action.max()) + 1
    if item_csv.is_file():
        items = pd.read_csv(item_csv, index_col=0).sort_values("item_id")
        n_items = max(n_items, int(items["item_id"].max()) + 1)
        feats = items.drop(columns=["item_id"])
        numeric = [c for c in feats.columns if pd.api.types.is_numeric_dtype(feats[c])]
        categorical = [c for c in feats.columns if c not in numeric]
        block = np.hstack([feats[numeric].to_numpy(dtype=np.float64),
                           _encode_categoricals(feats[categorical], hash_buckets)])
        action_context = np.zeros((n_items, block.shape[1]))
        action_context[items["item_id"].to_numpy(dtype=np.int64)] = block
    n_actions = max(n_items, len(aff_cols)) if aff_cols else n_items
    if action_context is not None and action_context.shape[0] < n_actions:
        action_context = np.vstack(
            [action_context, np.zeros((n_actions - action_context.shape[0], action_context.shape[1]))]
        )
    round_action_context = affinity if len(aff_cols) == n_actions else None
    return LoggedBandit(
        context=np.hstack([users, affinity]),
        action=action,
        position=position,
        reward=df["click"].to_numpy(dtype=np.float64),
        propensity=df["propensity_score"].to_numpy(dtype=np.float64),
        n_actions=n_actions,
        n_positions=int(position.max()) + 1,
        action_context=action_context,
        round_action_context=round_action_context,
        action_ids=tuple(str(a) for a in range(n_actions)),
    )


def _is_number(v: Any) -> TypeGuard[SupportsFloat]:
    return isinstance(v, (int, float, np.integer, np.floating)) and math.isfinite(float(v))


def from_impressions(
    impressions: Iterable[Any],
    events: Iterable[Any],
    *,
    window_s: float = 3600.0,
    reward_kinds: Sequence[str] = DEFAULT_REWARD_KINDS,
    items: Sequence[str] | None = None,
    context_keys: Sequence[str] | None = None,
    n_positions: int | None = None,
    policy: str | None = None,
) -> LoggedBandit:
    """liverec's own served impressions and later feedback, as a :class:`LoggedBandit`.

    Each impression (a :class:`liverec.store.sql.Impression`: request_id, user, item,
    position, score, propensity, policy, timestamp, context) is one round. Its reward
    is 1 when the same user did one of ``reward_kinds`` to the same item at a time
    ``t`` with ``timestamp <= t <= timestamp + window_s``, else 0.

    Parameters
    ----------
    impressions, events
        E.g. ``store.iter_impressions()`` and ``(e for _, e in store.iter_events())``.
    window_s
        How long after an impression feedback still counts for it (seconds).
    reward_kinds
        Event kinds that count as a success.
    items
        The action set (external item ids, in index order); default: the items shown.
    context_keys
        Keys of ``impression.context`` used as numeric context features; default: every
        key whose value is a finite number in at least one impression (missing → 0).
    n_positions
        Slate size; default: the largest logged position + 1.
    policy
        Keep only impressions served by this policy (e.g. ``"greedy"``).
    """
    rows = [im for im in impressions if policy is None or im.policy == policy]
    if not rows:
        raise ValidationError(
            "no impressions to evaluate" + (f" for policy {policy!r}" if policy else "")
            + ": serve some recommendations with impression logging on first.",
            field="impressions",
        )
    if window_s < 0:
        raise ValidationError(f"window_s must be >= 0, got {window_s}.", field="window_s")
    ids = list(items) if items is not None else sorted({im.item for im in rows})
    index = {item: i for i, item in enumerate(ids)}
    unknown = sorted({im.item for im in rows} - index.keys())
    if unknown:
        raise ValidationError(
            f"impressions show items {unknown[:5]} that are not in `items`: pass every "
            "item that can be served.",
            field="items",
        )
    kinds = set(reward_kinds)
    times: dict[tuple[str, str], list[float]] = {}
    for e in events:
        if e.kind in kinds:
            times.setdefault((e.user, e.item), []).append(float(e.timestamp))
    for ts in times.values():
        ts.sort()

    def rewarded(im: Any) -> float:
        ts = times.get((im.user, im.item))
        if not ts:
            return 0.0
        t0 = float(im.timestamp)
        j = bisect.bisect_left(ts, t0)
        return 1.0 if j < len(ts) and ts[j] <= t0 + window_s else 0.0

    if context_keys is None:
        context_keys = sorted(
            {k for im in rows for k, v in (im.context or {}).items() if _is_number(v)}
        )
    keys = list(context_keys)
    context = np.zeros((len(rows), len(keys)))
    for i, im in enumerate(rows):
        ctx = im.context or {}
        for j, k in enumerate(keys):
            v = ctx.get(k)
            if _is_number(v):
                context[i, j] = float(v)
    position = np.array([int(im.position) for im in rows], dtype=np.int64)
    return LoggedBandit(
        context=context,
        action=np.array([index[im.item] for im in rows], dtype=np.int64),
        position=position,
        reward=np.array([rewarded(im) for im in rows]),
        propensity=np.array([float(im.propensity) for im in rows]),
        n_actions=len(ids),
        n_positions=int(n_positions if n_positions is not None else position.max() + 1),
        action_ids=tuple(ids),
    )


# ------------------------------------------------------------- policies as arrays
def _as_action_dist(log: LoggedBandit, action_dist: np.ndarray, name: str = "action_dist") -> np.ndarray:
    a = np.asarray(action_dist, dtype=np.float64)
    n, A, P = log.n_rounds, log.n_actions, log.n_positions
    if a.shape == (A, P):
        a = np.broadcast_to(a, (n, A, P))
    if a.shape != (n, A, P):
        raise ValidationError(
            f"{name} must have shape (n_rounds, n_actions, n_positions) = ({n}, {A}, {P}) "
            f"(or ({A}, {P}) for a context-free policy), got {a.shape}.",
            field=name,
        )
    return a


def _check_policy(log: LoggedBandit, action_dist: np.ndarray) -> np.ndarray:
    a = _as_action_dist(log, action_dist)
    # Only the rows actually used (each round's own position) need to be a distribution.
    used = a[np.arange(log.n_rounds), :, log.position]
    if np.any(used < -1e-12) or not np.allclose(used.sum(axis=1), 1.0, atol=1e-6):
        raise ValidationError(
            "action_dist must hold probabilities that sum to 1 over actions for each round "
            "and position: normalise π(· | x, position).",
            field="action_dist",
        )
    return a


def _pi_logged(log: LoggedBandit, a: np.ndarray) -> np.ndarray:
    return a[np.arange(log.n_rounds), log.action, log.position]


def empirical_action_dist(log: LoggedBandit) -> np.ndarray:
    """(n_actions, n_positions): the frequency of each action at each position in ``log``.

    For a context-free policy this is the policy that generated the log, estimated from
    its own actions (a position never logged gets a uniform column).
    """
    counts = np.zeros((log.n_actions, log.n_positions))
    np.add.at(counts, (log.action, log.position), 1.0)
    totals = counts.sum(axis=0, keepdims=True)
    return np.where(totals > 0, counts / np.maximum(totals, 1.0), 1.0 / log.n_actions)


def bernoulli_ts_action_dist(
    log: LoggedBandit, *, n_sim: int = 100_000, alpha: float = 1.0, beta: float = 1.0,
    seed: int = 12345,
) -> np.ndarray:
    """(n_actions, n_positions): Bernoulli Thompson sampling simulated from ``log``'s clicks.

    Like obp's ``BernoulliTS.compute_batch_action_dist``: each simulation draws
    θ_a ~ Beta(alpha + clicks_a, beta + impressions_a − clicks_a) for every action
    (counts pooled over positions) and shows the top ``n_positions`` actions by θ in
    order; the result is how often each action lands at each position.
    """
    A, P = log.n_actions, log.n_positions
    if P > A:
        raise ValidationError(f"a slate of {P} positions needs at least {P} actions, got {A}.")
    shown = np.bincount(log.action, minlength=A).astype(float)
    clicks = np.bincount(log.action, weights=log.reward, minlength=A)
    a_post, b_post = alpha + clicks, beta + shown - clicks
    rng = np.random.default_rng(seed)
    counts = np.zeros((A, P))
    chunk = max(1, 2_000_000 // A)
    done = 0
    while done < n_sim:
        m = min(chunk, n_sim - done)
        theta = rng.beta(a_post, b_post, size=(m, A))
        top = np.argpartition(-theta, P - 1, axis=1)[:, :P]
        order = np.argsort(-np.take_along_axis(theta, top, axis=1), axis=1)
        top = np.take_along_axis(top, order, axis=1)
        for k in range(P):
            counts[:, k] += np.bincount(top[:, k], minlength=A)
        done += m
    return counts / n_sim


# -------------------------------------------------------------------- estimates
@dataclass(frozen=True)
class Estimate:
    """An estimator's value and the per-round terms it is the mean of.

    For ratio estimators (SNIPS, replay) ``weights`` is set and the value is
    ``contributions.sum() / weights.sum()``; both are scaled so that the mean of
    ``contributions`` is still the value, and :func:`bootstrap_ci` recomputes the ratio
    on every resample.

    Examples
    --------
    >>> e = Estimate("ips", 0.5, np.array([0.0, 1.0]))
    >>> e.estimate, e.n_rounds
    (0.5, 2)
    """

    name: str
    estimate: float
    contributions: np.ndarray
    weights: np.ndarray | None = None

    @property
    def n_rounds(self) -> int:
        return int(self.contributions.shape[0])

    def ci(self, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
        """Percentile bootstrap interval of the estimate (see :func:`bootstrap_ci`)."""
        return bootstrap_ci(self, n_boot=n_boot, alpha=alpha, seed=seed)


def _ratio(name: str, numer: np.ndarray, denom: np.ndarray) -> Estimate:
    scale = denom.mean()
    if scale <= 0:
        warnings.warn(f"{name}: no round carries weight; the estimate is undefined (nan).",
                      RuntimeWarning, stacklevel=3)
        return Estimate(name, float("nan"), np.zeros_like(numer), np.zeros_like(denom))
    return Estimate(name, float(numer.sum() / denom.sum()), numer / scale, denom / scale)


def ips(log: LoggedBandit, action_dist: np.ndarray) -> Estimate:
    """Inverse propensity scoring: mean of π(a_i|x_i)/π₀(a_i|x_i) · r_i."""
    w = _pi_logged(log, _check_policy(log, action_dist)) / log.propensity
    c = w * log.reward
    return Estimate("ips", float(c.mean()), c)


def snips(log: LoggedBandit, action_dist: np.ndarray) -> Estimate:
    """Self-normalised IPS (Swaminathan & Joachims 2015): Σ w_i r_i / Σ w_i."""
    w = _pi_logged(log, _check_policy(log, action_dist)) / log.propensity
    return _ratio("snips", w * log.reward, w)


def _as_q_hat(log: LoggedBandit, q_hat: np.ndarray) -> np.ndarray:
    q = np.asarray(q_hat, dtype=np.float64)
    if q.shape == (log.n_rounds, log.n_actions):  # already at each round's own position
        return q
    q = _as_action_dist(log, q, name="q_hat")
    return q[np.arange(log.n_rounds), :, log.position]


def dm(log: LoggedBandit, action_dist: np.ndarray, q_hat: np.ndarray | None = None, *,
       seed: int = 0) -> Estimate:
    """Direct method: mean over rounds of Σ_a π(a|x_i) q̂(x_i, a).

    ``q_hat`` (n, n_actions, n_positions) defaults to :func:`fit_reward_model` (a
    cross-fitted logistic regression).
    """
    pi = _check_policy(log, action_dist)[np.arange(log.n_rounds), :, log.position]
    q = _as_q_hat(log, fit_reward_model(log, seed=seed) if q_hat is None else q_hat)
    c = (pi * q).sum(axis=1)
    return Estimate("dm", float(c.mean()), c)


def dr(log: LoggedBandit, action_dist: np.ndarray, q_hat: np.ndarray | None = None, *,
       seed: int = 0) -> Estimate:
    """Doubly robust (Dudík et al. 2011): DM + w_i (r_i − q̂(x_i, a_i))."""
    full = _check_policy(log, action_dist)
    rows = np.arange(log.n_rounds)
    pi = full[rows, :, log.position]
    q = _as_q_hat(log, fit_reward_model(log, seed=seed) if q_hat is None else q_hat)
    w = pi[rows, log.action] / log.propensity
    c = (pi * q).sum(axis=1) + w * (log.reward - q[rows, log.action])
    return Estimate("dr", float(c.mean()), c)


def replay(log: LoggedBandit, action_dist: np.ndarray, *, seed: int = 0,
           mode: str = "sample") -> Estimate:
    """Replay (Li et al. 2011): mean reward of the rounds where π's choice matches the log.

    ``mode="sample"`` draws π's action from π(·|x_i, position) with ``seed`` (the
    rejection-sampling variant, for stochastic π); ``"argmax"`` takes π's most likely
    action. For a deterministic π both are the same. Assumes a uniform logging policy
    (π₀ = 1/n_actions); otherwise the kept rounds are not a fair sample of π and the
    estimate is biased — a warning says so.
    """
    if mode not in ("sample", "argmax"):
        raise ValidationError(f"mode must be 'sample' or 'argmax', got {mode!r}.", field="mode")
    full = _check_policy(log, action_dist)
    if not np.allclose(log.propensity, 1.0 / log.n_actions, rtol=1e-6):
        warnings.warn(
            "replay assumes a uniform logging policy (propensity 1/n_actions) and this log's "
            "propensities differ: use ips/snips/dr for it.",
            UserWarning, stacklevel=2,
        )
    pi = full[np.arange(log.n_rounds), :, log.position]
    if mode == "argmax":
        chosen = pi.argmax(axis=1)
    else:
        u = np.random.default_rng(seed).random(log.n_rounds)[:, None]
        cdf = np.cumsum(pi, axis=1)
        chosen = np.minimum((cdf < u * cdf[:, -1:]).sum(axis=1), log.n_actions - 1)
    keep = (chosen == log.action).astype(float)
    return _ratio("replay", keep * log.reward, keep)


# ------------------------------------------------------------------ reward model
def _design(log: LoggedBandit, rows: np.ndarray, action: np.ndarray | int,
            position: np.ndarray | int) -> np.ndarray:
    """Features [context, one-hot action, one-hot position, item features, round-item features]."""
    m = rows.shape[0]
    act = np.broadcast_to(np.asarray(action), (m,))
    pos = np.broadcast_to(np.asarray(position), (m,))
    onehot_a = np.zeros((m, log.n_actions))
    onehot_a[np.arange(m), act] = 1.0
    onehot_p = np.zeros((m, log.n_positions))
    onehot_p[np.arange(m), pos] = 1.0
    parts = [log.context[rows], onehot_a, onehot_p]
    if log.action_context is not None:
        parts.append(log.action_context[act])
    if log.round_action_context is not None:
        parts.append(log.round_action_context[rows, act])
    return np.hstack(parts)


def _cross_design(log: LoggedBandit, rows: np.ndarray, action: np.ndarray | int,
                  position: np.ndarray | int) -> np.ndarray:
    """:func:`_design` plus user-features x item interactions, so a linear model can prefer
    different items for different users (what LinUCB/LinTS's per-item models do)."""
    base = _design(log, rows, action, position)
    act = np.broadcast_to(np.asarray(action), (rows.shape[0],))
    cross = np.zeros((rows.shape[0], log.n_actions, log.context.shape[1]))
    cross[np.arange(rows.shape[0]), act] = log.context[rows]
    return np.hstack([base, cross.reshape(rows.shape[0], -1)])


def fit_reward_model(
    log: LoggedBandit, *, n_folds: int = 2, seed: int = 0, model: Any = None,
) -> np.ndarray:
    """Cross-fitted q̂(x_i, a, position) = P(reward | ...) for every round, action, position.

    The rounds are split at random into ``n_folds`` folds; each fold's predictions come
    from a model fitted on the other folds (for ``n_folds=1``, fit and predict on all).
    ``model`` is any scikit-learn classifier with ``predict_proba`` (cloned per fold);
    default ``LogisticRegression(C=1.0, max_iter=2000)``. Rewards must be 0/1. A training
    fold with a single reward class predicts its mean.

    Returns an array of shape (n_rounds, n_actions, n_positions).
    """
    from sklearn.base import clone
    from sklearn.linear_model import LogisticRegression

    r = log.reward
    if not np.all((r == 0) | (r == 1)):
        raise ValidationError(
            "the default reward model is a classifier and needs 0/1 rewards: pass q_hat "
            "from your own regression model instead.",
            field="reward",
        )
    if n_folds < 1 or n_folds > log.n_rounds:
        raise ValidationError(f"n_folds must be in 1..n_rounds, got {n_folds}.", field="n_folds")
    base = LogisticRegression(C=1.0, max_iter=2000) if model is None else model
    n, A, P = log.n_rounds, log.n_actions, log.n_positions
    perm = np.random.default_rng(seed).permutation(n)
    folds = np.array_split(perm, n_folds)
    q = np.empty((n, A, P))
    everyone = np.arange(n)
    for fold in folds:
        train = everyone if n_folds == 1 else np.setdiff1d(everyone, fold, assume_unique=True)
        y = r[train]
        if y.min() == y.max():
            q[fold] = y[0]
            continue
        est = clone(base).fit(_design(log, train, log.action[train], log.position[train]), y)
        if isinstance(est, LogisticRegression) and est.coef_.shape[0] == 1:
            q[fold] = _logistic_q(est, log, fold)
            continue
        pos_col = int(np.flatnonzero(est.classes_ == 1)[0])
        for a in range(A):
            for k in range(P):
                q[fold, a, k] = est.predict_proba(_design(log, fold, a, k))[:, pos_col]
    return q


def _logistic_q(est: Any, log: LoggedBandit, rows: np.ndarray) -> np.ndarray:
    """A binary logistic model's P(1) for every (row, action, position) without building
    the (rows × actions × positions) design: the logit is a sum of per-row, per-action,
    per-position and per-(row, action) terms."""
    from scipy.special import expit

    w, b = est.coef_.ravel(), float(est.intercept_[0])
    d, A, P = log.context.shape[1], log.n_actions, log.n_positions
    per_row = log.context[rows] @ w[:d]
    per_action = w[d:d + A].copy()
    per_position = w[d + A:d + A + P]
    o = d + A + P
    if log.action_context is not None:
        m = log.action_context.shape[1]
        per_action += log.action_context @ w[o:o + m]
        o += m
    z = b + per_row[:, None, None] + per_action[None, :, None] + per_position[None, None, :]
    if log.round_action_context is not None:
        k = log.round_action_context.shape[2]
        z = z + (log.round_action_context[rows] @ w[o:o + k])[:, :, None]
        o += k
    assert o == w.shape[0], "design and decomposition disagree"
    return expit(z)


# ------------------------------------------------------------------- intervals
def bootstrap_ci(
    contributions: np.ndarray | Estimate,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
    *,
    weights: np.ndarray | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap ``(lo, hi)`` of the mean of per-round ``contributions``.

    Rounds are resampled with replacement ``n_boot`` times. With ``weights`` (or an
    :class:`Estimate` of a ratio estimator) each resample's statistic is
    ``sum(contributions) / sum(weights)`` — the ratio is recomputed, not averaged.
    Resamples whose weights sum to 0 are dropped.
    """
    if isinstance(contributions, Estimate):
        weights = contributions.weights if weights is None else weights
        contributions = contributions.contributions
    c = np.asarray(contributions, dtype=np.float64).reshape(-1)
    w = None if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    n = c.shape[0]
    if n == 0 or (w is not None and w.shape[0] != n):
        raise ValidationError("contributions must be non-empty and match weights in length.",
                              field="contributions")
    if not 0 < alpha < 1 or n_boot < 1:
        raise ValidationError("alpha must be in (0, 1) and n_boot >= 1.", field="alpha")
    rng = np.random.default_rng(seed)
    stats = np.empty(n_boot)
    chunk = max(1, 2_000_000 // n)
    for start in range(0, n_boot, chunk):
        m = min(chunk, n_boot - start)
        idx = rng.integers(0, n, size=(m, n))
        if w is None:
            stats[start:start + m] = c[idx].mean(axis=1)
        else:
            den = w[idx].sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                stats[start:start + m] = np.where(den > 0, c[idx].sum(axis=1) / den, np.nan)
    stats = stats[np.isfinite(stats)]
    if stats.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(stats, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def relative_error(estimate: float, truth: float) -> float:
    """``|estimate − truth| / |truth|`` (the OBD/obp "relative estimation error")."""
    if truth == 0 or not math.isfinite(truth):
        raise ValidationError(
            f"relative error needs a finite, non-zero truth, got {truth}.", field="truth"
        )
    return abs(float(estimate) - float(truth)) / abs(float(truth))


#: The estimators :func:`estimate_all` runs, in report order.
ESTIMATORS: tuple[str, ...] = ("ips", "snips", "dm", "dr", "replay")


def estimate_all(
    log: LoggedBandit,
    action_dist: np.ndarray,
    q_hat: np.ndarray | None = None,
    *,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, dict[str, Any]]:
    """Every estimator on one log: ``{name: {"estimate": float, "ci95": [lo, hi]}}``.

    ``q_hat`` defaults to :func:`fit_reward_model` (fitted once, shared by DM and DR).
    All intervals use the same bootstrap resamples (``seed``), so they are comparable.
    Replay is included even for non-uniform loggers (with a warning): read it then as
    a rough check only; its entry also says how many rounds it kept (``rounds_kept``).
    """
    pi = _check_policy(log, action_dist)
    q = fit_reward_model(log, seed=seed) if q_hat is None else q_hat
    results = {
        "ips": ips(log, pi),
        "snips": snips(log, pi),
        "dm": dm(log, pi, q),
        "dr": dr(log, pi, q),
        "replay": replay(log, pi, seed=seed),
    }
    out = {
        name: {"estimate": e.estimate, "ci95": list(bootstrap_ci(e, n_boot=n_boot, seed=seed))}
        for name, e in results.items()
    }
    weights = results["replay"].weights
    out["replay"]["rounds_kept"] = int(np.count_nonzero(weights)) if weights is not None else 0
    return out


# --------------------------------------------------- learned policies, held out
def learned_policies(
    log: LoggedBandit, *, train_share: float = 0.5, n_boot: int = 1000, seed: int = 0,
    epsilon: float = 0.1, prior_strength: float = 200.0, n_sim: int = 20_000,
) -> dict[str, Any]:
    """Learn liverec's policies on the first part of a log, estimate them on the rest.

    The log is split in order (the first ``train_share`` of the rounds trains, the rest
    is the held-out evaluation log, so nothing learned has seen the evaluation rounds).
    Policies, all per position, all built from the training rounds only:

    - ``greedy``: the item with the highest CTR (shrunk toward the overall CTR with
      ``prior_strength`` pseudo-impressions: liverec's popularity prior);
    - ``epsilon``: ``greedy`` with probability 1 - ``epsilon``, else uniform (liverec's
      ε-greedy, with its exact propensities);
    - ``thompson``: Thompson sampling from Beta posteriors of the shrunk CTRs (the
      slate probabilities by Monte Carlo, as liverec's lints computes propensities);
    - ``contextual``: per round, the item with the highest predicted click probability of
      a logistic model on user features, item, position and user-features x item
      interactions (the per-item linear models under LinUCB / LinTS, without exploration).

    Every policy is estimated with IPS, SNIPS, DM, DR and replay on the held-out rounds
    (bootstrap CIs); ``random`` is the held-out rounds' own click rate with its CI, and
    ``beats_random[name]`` says whether the DR lower 95% bound exceeds it, and
    ``detectable_ctr`` how high a deterministic policy's click rate must be for that to
    be possible on these held-out rounds (:func:`detectable_ctr`).
    """
    if not 0 < train_share < 1:
        raise ValidationError(f"train_share must be in (0, 1), got {train_share}.", field="train_share")
    n = log.n_rounds
    cut = int(n * train_share)
    train, test = log.subset(np.arange(cut)), log.subset(np.arange(cut, n))
    A, P = log.n_actions, log.n_positions
    shown = np.zeros((A, P))
    clicks = np.zeros((A, P))
    np.add.at(shown, (train.action, train.position), 1.0)
    np.add.at(clicks, (train.action, train.position), train.reward)
    base = float(train.reward.mean())
    a0, b0 = prior_strength * base, prior_strength * (1 - base)
    ctr = (clicks + a0) / (shown + a0 + b0)
    greedy = np.zeros((A, P))
    greedy[ctr.argmax(axis=0), np.arange(P)] = 1.0
    rng = np.random.default_rng(seed)
    draws = rng.beta(clicks[None] + a0, shown[None] - clicks[None] + b0, size=(n_sim, A, P))
    ts = np.zeros((A, P))
    for p in range(P):
        np.add.at(ts[:, p], draws[:, :, p].argmax(axis=1), 1.0)
    ts = (ts + 1e-3) / (ts + 1e-3).sum(axis=0, keepdims=True)  # every item keeps a sliver: IPS needs support
    policies: dict[str, np.ndarray] = {
        "greedy": greedy,
        "epsilon": (1 - epsilon) * greedy + epsilon / A,
        "thompson": ts,
    }
    if train.reward.min() != train.reward.max():
        from sklearn.linear_model import LogisticRegression

        est = LogisticRegression(C=1.0, max_iter=2000).fit(
            _cross_design(train, np.arange(train.n_rounds), train.action, train.position), train.reward)
        rows = np.arange(test.n_rounds)
        q_test = np.stack([est.decision_function(_cross_design(test, rows, a, 0)) for a in range(A)], axis=1)
        ctx = np.zeros((test.n_rounds, A, P))
        ctx[rows, q_test.argmax(axis=1), :] = 1.0  # the position term is the same for every item
        policies["contextual"] = ctx
    q_hat = fit_reward_model(test, seed=seed)
    out: dict[str, Any] = {"n_rounds": {"train": train.n_rounds, "test": test.n_rounds}, "policies": {}}
    rnd = Estimate("random", float(test.reward.mean()), test.reward.astype(np.float64))
    out["random"] = {"ctr": rnd.estimate, "ci95": list(bootstrap_ci(rnd, n_boot=n_boot, seed=seed))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for name, pi in policies.items():
            out["policies"][name] = estimate_all(test, pi, q_hat=q_hat, n_boot=n_boot, seed=seed)
    out["beats_random"] = {
        name: bool(res["dr"]["ci95"][0] > out["random"]["ctr"]) for name, res in out["policies"].items()
    }
    # How good a policy would have to be for this held-out log to show it (see detectable_ctr).
    out["detectable_ctr"] = detectable_ctr(
        test.n_rounds, float(np.mean(1.0 / test.propensity)), out["random"]["ctr"]) if out["random"]["ctr"] > 0 else None
    return out


def detectable_ctr(n_rounds: int, mean_inverse_propensity: float, baseline: float, z: float = 1.96) -> float:
    """The click rate a deterministic policy needs for its IPS lower bound to clear ``baseline``.

    The power of a log: on ``n_rounds`` logged with propensities whose inverse averages
    ``mean_inverse_propensity`` (``W``; 80 on OBD's uniform log), a deterministic policy
    with click rate ``c`` has IPS terms ``W * r`` on the rounds it matches, so variance
    ``W * c - c**2`` per round. Solves ``c - z * sqrt((W*c - c**2) / n) = baseline``
    (the larger root). DR has the same variance when the reward model is flat, as it is
    at a 0.4% click rate.

    Examples
    --------
    >>> round(detectable_ctr(5000, 80.0, 0.0038), 4)
    0.0688
    """
    if n_rounds < 1 or mean_inverse_propensity < 1 or not 0 <= baseline <= 1:
        raise ValidationError("need n_rounds >= 1, mean_inverse_propensity >= 1 and a baseline in [0, 1].",
                              field="n_rounds")
    q = z * z / n_rounds
    a, b, c = 1.0 + q, -(2.0 * baseline + q * mean_inverse_propensity), baseline * baseline
    return float((-b + math.sqrt(b * b - 4.0 * a * c)) / (2.0 * a))


# --------------------------------------------------------------- OBD validation
def validate_on_obd(
    root: str | Path,
    *,
    campaign: str = "all",
    n_boot: int = 1000,
    seed: int = 0,
    n_sim: int = 100_000,
    variants: Sequence[str] = ("empirical", "beta_posterior"),
) -> dict[str, Any]:
    """Estimate Bernoulli TS's click rate from the random policy's OBD log; compare with truth.

    The truth is BTS's on-policy click rate: the mean ``click`` of ``bts/<campaign>``.
    The evaluation policy π_BTS is context-free, one ``(n_actions, n_positions)`` table:

    - ``"empirical"`` — π_BTS estimated from its own log's action frequencies per
      position (the policy that generated the bts log, as it behaved over that period);
    - ``"beta_posterior"`` — Bernoulli TS simulated (``n_sim`` draws) from Beta(1 +
      clicks, 1 + non-clicks) posteriors of each item in the bts log. obp instead uses
      ZOZOTOWN's production priors (``is_zozotown_prior=True``), which are not available
      here, so this is a different TS policy from the logged one: with a flat prior,
      items the bts log rarely showed keep wide posteriors and win many draws, so its
      value need not match the bts click rate (relative errors then mix estimator error
      with policy mismatch).

    Returns ``{"on_policy_ctr": {"bts", "random"}, "n_rounds": {...}, "variants":
    {variant: {estimator: {"estimate", "ci95", "relative_error"}}}, "reference": obp's
    published relative errors, "runtime_s": seconds}``.
    """
    t0 = time.perf_counter()
    root = Path(root)
    rnd = load_open_bandit(root / "random" / campaign)
    bts = load_open_bandit(root / "bts" / campaign)
    if bts.n_actions != rnd.n_actions or bts.n_positions != rnd.n_positions:
        raise ValidationError(
            f"the random and bts logs disagree on the action set or slate size "
            f"({rnd.n_actions}x{rnd.n_positions} vs {bts.n_actions}x{bts.n_positions}).",
            field="root",
        )
    truth = float(bts.reward.mean())
    policies = {
        "empirical": lambda: empirical_action_dist(bts),
        "beta_posterior": lambda: bernoulli_ts_action_dist(bts, n_sim=n_sim, seed=12345),
    }
    unknown = [v for v in variants if v not in policies]
    if unknown:
        raise ValidationError(f"unknown variants {unknown}: choose from {list(policies)}.",
                              field="variants")
    q_hat = fit_reward_model(rnd, seed=seed)  # the same reward model for every variant
    out: dict[str, Any] = {
        "campaign": campaign,
        "on_policy_ctr": {"bts": truth, "random": float(rnd.reward.mean())},
        "n_rounds": {"random": rnd.n_rounds, "bts": bts.n_rounds},
        "variants": {},
        "reference": {"obp_relative_error": dict(OBP_REFERENCE_RELATIVE_ERROR)},
    }
    for variant in variants:
        pi = policies[variant]()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # replay may keep no clicked round
            res = estimate_all(rnd, pi, q_hat=q_hat, n_boot=n_boot, seed=seed)
        for row in res.values():
            est = row["estimate"]
            row["relative_error"] = relative_error(est, truth) if math.isfinite(est) else float("nan")
        out["variants"][variant] = res
    out["runtime_s"] = time.perf_counter() - t0
    return out


def format_obd_table(result: Mapping[str, Any]) -> str:
    """The :func:`validate_on_obd` result as a plain-text table."""
    ctr = result["on_policy_ctr"]
    ref = result["reference"]["obp_relative_error"]
    lines = [
        f"Open Bandit Dataset ({result['campaign']}): Bernoulli TS evaluated from the random log",
        f"on-policy CTR: bts {ctr['bts']:.5f} (truth)   random {ctr['random']:.5f}   "
        f"rounds: random {result['n_rounds']['random']}, bts {result['n_rounds']['bts']}",
    ]
    for variant, rows in result["variants"].items():
        lines += ["", f"pi_BTS = {variant}",
                  f"{'estimator':<10}{'estimate':>10}{'95% CI':>22}{'rel.err':>10}{'obp rel.err':>13}"]
        for name, row in rows.items():
            lo, hi = row["ci95"]
            r = ref.get(name)
            kept = f"   ({row['rounds_kept']} rounds kept)" if "rounds_kept" in row else ""
            lines.append(
                f"{name:<10}{row['estimate']:>10.5f}{f'[{lo:.5f}, {hi:.5f}]':>22}"
                f"{row['relative_error']:>10.3f}{'' if r is None else f'{r:.2f}':>13}{kept}"
            )
    lines += ["", f"runtime {result['runtime_s']:.1f} s   (obp reference: its quickstart "
              "on this sample with the zozotown-prior BTS policy; 'ips' there is IPW)"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m liverec.evaluation.ope",
        description="Validate off-policy estimators on the Open Bandit Dataset.",
    )
    parser.add_argument("root", help="folder holding random/<campaign> and bts/<campaign>")
    parser.add_argument("--campaign", default="all")
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--n-sim", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    result = validate_on_obd(args.root, campaign=args.campaign, n_boot=args.n_boot,
                             seed=args.seed, n_sim=args.n_sim)
    print(json.dumps(result, indent=2) if args.json else format_obd_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
