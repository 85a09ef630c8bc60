"""The tuner's batches: the choice does not depend on the batch size, on the order a runner
runs a batch's fits in, or on where the budget of trials cuts a batch."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from checks.learner_checks import make_catalog
from liverec import Event
from liverec.jobs import LocalJobs
from liverec.models import REGISTRY, FeedbackConfig, Learner
from liverec.rank.tuner import TunedConfig, Tuner

T0 = 1_700_000_000.0
SOURCES = {"trending": {}, "transition": {}, "itemknn": {}, "ease": {}}


def walks(n_users: int = 50, length: int = 12, n_items: int = 60, seed: int = 0) -> list[Event]:
    """Users walk the ids upwards and sometimes jump; every fourth event is a rating."""
    rng = np.random.default_rng(seed)
    out = []
    for u in range(n_users):
        at = int(rng.integers(0, n_items))
        for s in range(length):
            at = int(rng.integers(0, n_items)) if rng.random() < 0.3 else (at + 1) % n_items
            kind, value = ("rating", float(rng.integers(1, 6))) if s % 4 == 3 else ("click", 1.0)
            out.append(Event(user=f"u{u}", item=f"i{at}", kind=kind, value=value, timestamp=T0 + 1000 * s + u,
                             id=f"e{u}-{s}"))
    return out


def make(name: str, params: dict[str, Any], fb: FeedbackConfig) -> Learner:
    kw = dict(params)
    if name != "trending":
        kw["feedback"] = fb
    return REGISTRY[name](**kw)


class Backwards:
    """Runs a batch's jobs last to first (as a cluster may finish them), returns them in order."""

    side_by_side = True

    def __init__(self) -> None:
        self.batches: list[int] = []

    def map(self, fn: Callable[[Any, Any], Any], shared: Any, jobs: Sequence[Any]) -> list[Any]:
        self.batches.append(len(jobs))
        return LocalJobs().map(fn, shared, jobs[::-1])[::-1]


def tune(**kw: Any) -> TunedConfig:
    return Tuner(make, SOURCES, {n: 1.0 for n in SOURCES}, FeedbackConfig(), budget_seconds=600, seed=2, **kw).run(
        walks(), make_catalog())


def choice(t: TunedConfig) -> tuple[Any, ...]:
    return t.sources, t.weights, t.feedback, t.score, [{k: v for k, v in x.items() if k != "seconds"} for x in t.trials]


def test_the_choice_does_not_depend_on_the_batch_size_or_the_runners_order():
    one_by_one = tune(batch_size=1)
    runner = Backwards()
    batched = tune(batch_size=16, jobs=runner)
    assert choice(batched) == choice(one_by_one)
    assert batched.score > batched.default_score  # the search moved: the comparison means something
    assert max(runner.batches) > len(SOURCES)  # a batch of several trials' fits went out at once
    assert choice(tune(batch_size=5)) == choice(one_by_one)


def test_max_trials_cuts_a_batch_where_one_by_one_stops():
    for n in (2, 6, 11):
        cut = tune(batch_size=16, max_trials=n)
        assert len(cut.trials) == n and cut.stopped_by_budget
        assert choice(cut) == choice(tune(batch_size=1, max_trials=n))


def test_a_failed_fit_fails_its_trial_only():
    def fragile(name: str, params: dict[str, Any], fb: FeedbackConfig) -> Learner:
        if name == "transition" and params.get("window") == 3:
            raise RuntimeError("boom")
        return make(name, params, fb)

    tuned = Tuner(fragile, SOURCES, {n: 1.0 for n in SOURCES}, FeedbackConfig(), seed=2).run(walks(), make_catalog())
    failed = [t for t in tuned.trials if t.get("error")]
    assert failed and all(t["params"]["window"] == 3 and t["error"] == "RuntimeError: boom" for t in failed)
    assert any(t.get("score") is not None for t in tuned.trials if t["source"] == "transition")
    assert tuned.sources["transition"].get("window") != 3
