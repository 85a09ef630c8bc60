"""Fits and tuning trials as Ray tasks on a local two-node cluster: the same configuration and
the same recommendations as a run in this process, on the same log."""

from __future__ import annotations

import socket
import sqlite3
import sys
import time
from typing import Iterator

import numpy as np
import pytest
from typer.testing import CliRunner

import liverec.engine
from liverec import Engine, Event, Item, Settings
from liverec.cli import app
from liverec.errors import ValidationError
from liverec.jobs import Failed, LocalJobs, RayJobs

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

# This module's job functions travel by value: the workers cannot import a test module.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

T0 = 1_700_000_000.0
SOURCES = '{"trending": {}, "transition": {}, "itemknn": {}, "ease": {}, "content": {}}'


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A head and one worker node, one CPU each, as separate processes (never on Redis's 6379)."""
    node = {"num_cpus": 1, "object_store_memory": 100 * 1024**2, "include_dashboard": False}
    c = Cluster(initialize_head=True, head_node_args={**node, "gcs_server_port": _free_port()})
    try:
        c.add_node(**{k: v for k, v in node.items() if k != "include_dashboard"})
        c.wait_for_nodes()
        yield c.address
    finally:
        ray.shutdown()
        c.shutdown()


@pytest.fixture
def store(tmp_path, monkeypatch, encoder) -> str:
    """A small synthetic log: users mostly walk item chains, sometimes jump; some rate what they read."""
    monkeypatch.setattr(liverec.engine, "SentenceTransformerEncoder", lambda *a, **k: encoder)
    monkeypatch.setenv("LIVEREC_SOURCES", SOURCES)
    url = f"sqlite:///{tmp_path / 'ray.db'}"
    rng = np.random.default_rng(0)
    with Engine.open(url, settings=Settings(), encoder=encoder) as eng:
        eng.add_items([Item(id=f"i{j}", text=f"book {j} about {('ships', 'stars', 'cooking')[j % 3]}")
                       for j in range(80)])
        evs = []
        for u in range(60):
            at = int(rng.integers(0, 80))
            for s in range(10):
                at = int(rng.integers(0, 80)) if rng.random() < 0.3 else (at + 1) % 80
                kind, value = ("rating", float(rng.integers(1, 6))) if s % 4 == 3 else ("click", 1.0)
                evs.append(Event(user=f"u{u}", item=f"i{at}", kind=kind, value=value,
                                 timestamp=T0 + 100 * s + u, id=f"e{u}-{s}"))
        eng.record_many(evs, learn=False)
    return url


def _where(shared: float, job: int) -> tuple[str, float]:
    if job < 0:
        raise ValueError(f"negative job {job}")
    time.sleep(shared)  # long enough that one node cannot take every task
    return ray.get_runtime_context().get_node_id(), job * 2


def test_ray_jobs_keep_order_report_failures_and_use_both_nodes(cluster):
    jobs = RayJobs(cluster)
    got = jobs.map(_where, 0.3, [1, 2, -1, 3, 4, 5])
    assert got[2] == Failed("ValueError: negative job -1")
    ok = [r for r in got if not isinstance(r, Failed)]
    assert [r[1] for r in ok] == [2, 4, 6, 8, 10]
    assert len({node for node, _ in ok}) == 2
    assert LocalJobs().map(_where, 0.0, [-1]) == [Failed("ValueError: negative job -1")]


def _twin(store: str, tmp_path) -> str:
    """A copy of the SQLite store at ``store``: a second engine that starts from the same log."""
    path = store.removeprefix("sqlite:///")
    copy = tmp_path / "twin.db"
    with sqlite3.connect(path) as src, sqlite3.connect(copy) as dst:
        src.backup(dst)
    return f"sqlite:///{copy}"


def _recommendations(eng: Engine) -> list[list[tuple[str, float]]]:
    return [[(r.item, round(r.score, 6)) for r in eng.recommend(f"u{u}", k=10)] for u in range(0, 60, 7)]


def test_tune_on_ray_chooses_what_the_local_run_chooses(cluster, store, encoder, tmp_path):
    twin = _twin(store, tmp_path)
    with Engine.open(store, encoder=encoder) as eng:
        local = eng.tune(budget=600, seed=3, refit=False)
    with Engine.open(twin, encoder=encoder) as eng:
        remote = eng.tune(budget=600, seed=3, refit=False, ray=cluster)
    assert not local.stopped_by_budget and not remote.stopped_by_budget
    assert {t["stage"] for t in local.trials} >= {"start", "feedback", "source", "weights"}
    assert (remote.sources, remote.weights, remote.feedback) == (local.sources, local.weights, local.feedback)
    assert (remote.score, remote.default_score) == (local.score, local.default_score)
    strip = [{k: v for k, v in t.items() if k != "seconds"} for t in local.trials]
    assert [{k: v for k, v in t.items() if k != "seconds"} for t in remote.trials] == strip


def test_max_trials_cuts_a_batch_the_same_way_on_ray(cluster, store, encoder, tmp_path):
    twin = _twin(store, tmp_path)
    with Engine.open(store, encoder=encoder) as eng:
        local = eng.tune(budget=600, seed=1, refit=False, max_trials=9)
    with Engine.open(twin, encoder=encoder) as eng:
        remote = eng.tune(budget=600, seed=1, refit=False, max_trials=9, ray=cluster)
    assert len(local.trials) == 9 and local.stopped_by_budget
    assert remote.trials[-1]["params"] == local.trials[-1]["params"]
    assert (remote.sources, remote.weights, remote.score) == (local.sources, local.weights, local.score)


def test_fit_on_ray_serves_what_a_local_fit_serves(cluster, store, encoder):
    with Engine.open(store, encoder=encoder) as eng:
        eng.fit()
        local = _recommendations(eng)
        before = dict(eng.learners)
        eng.fit(ray=cluster)
        assert all(eng.learners[n] is not before[n] for n in before)
        assert all(eng.learners[n].catalog_ is eng.catalog for n in eng.learners)  # the learners serve here
        remote = _recommendations(eng)
        # The same lists; scores equal up to float rounding (the fits ran in other processes).
        assert [[i for i, _ in r] for r in remote] == [[i for i, _ in r] for r in local]
        np.testing.assert_allclose([[s for _, s in r] for r in remote], [[s for _, s in r] for r in local], atol=1e-5)


def test_cli_fit_and_tune_take_ray(cluster, store):
    r = CliRunner().invoke(app, ["fit", "--store", store, "--ray", cluster])
    assert r.exit_code == 0, r.output
    assert f"on the Ray cluster at {cluster}" in " ".join(r.output.split())
    r = CliRunner().invoke(app, ["tune", "--store", store, "--seed", "3"], env={"LIVEREC_RAY": cluster})
    assert r.exit_code == 0, r.output
    out = " ".join(r.output.split())
    assert f"tuned and fitted on the Ray cluster at {cluster}" in out and "validation score" in out
    r = CliRunner().invoke(app, ["fit", "--store", store], env={"LIVEREC_RAY": None})
    assert r.exit_code == 0 and "Ray" not in r.output


def test_an_unreachable_ray_address_names_the_flag_and_the_fix(store, encoder):
    closed = f"127.0.0.1:{_free_port()}"
    with Engine.open(store, encoder=encoder) as eng:
        with pytest.raises(ValidationError, match="cannot reach the Ray cluster") as info:
            eng.fit(ray=closed)
    assert info.value.field == "ray" and "ray start --head --port 6380" in info.value.fix
    r = CliRunner().invoke(app, ["tune", "--store", store, "--ray", closed])
    assert r.exit_code == 2
    assert "--ray" in r.output and closed in r.output
