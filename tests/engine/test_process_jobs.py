"""The child-process job runner: results equal a run here; large arrays cross out of band; a
dying child is reported. (The child imports functions by reference: stdlib ones here.)"""

import functools
import operator
import os

import numpy as np
import pytest

from liverec.jobs import Failed, LocalJobs, ProcessJobs


def test_arrays_cross_both_ways_and_come_back_writable_and_equal_to_a_run_here() -> None:
    big = np.random.default_rng(0).random((600, 700)).astype(np.float32)  # 1.7 MB: several chunks
    there = ProcessJobs(nice=0).map(operator.mul, big, [1.0, 2.0, "x"])
    here = LocalJobs().map(operator.mul, big, [1.0, 2.0])
    for a, b in zip(there, here):
        np.testing.assert_array_equal(a, b)
    assert isinstance(there[2], Failed)
    there[0][0, 0] = -1.0  # backed by its own buffer, writable
    assert big[0, 0] != -1.0


def test_a_dying_child_raises_with_its_exit_code() -> None:
    with pytest.raises(RuntimeError, match="exited with code 3"):
        ProcessJobs().map(operator.call, os._exit, [3])


def test_a_child_that_writes_much_to_stderr_still_finishes() -> None:
    # More than a pipe holds: a child blocked on a full stderr pipe would never answer.
    assert ProcessJobs().map(operator.call, functools.partial(os.write, 2), [b"x" * 300_000]) == [300_000]


def test_the_child_runs_nice_steps_below_this_process() -> None:
    here = os.nice(0)
    assert ProcessJobs(nice=5).map(operator.call, os.nice, [0]) == [min(here + 5, 19)]
    assert ProcessJobs(nice=0).map(operator.call, os.nice, [0]) == [here]
