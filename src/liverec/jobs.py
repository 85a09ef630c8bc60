"""Where independent jobs run: in this process, in a child process, or as Ray tasks on a cluster.

A fit of every source and the trials of a tuning stage are independent jobs over one
shared, read-only input (the interaction log, the validation boards). A runner maps a
function over the jobs and returns the results in the jobs' order, with a job that
raised returned as :class:`Failed` (so the caller decides what a failure means, the
same way whichever runner ran it).

:class:`RayJobs` ships the shared input once per object (``ray.put``) and runs every job as
a task asking for one CPU; a worker process loads the shared input once and keeps it for
its next jobs. Every node needs the same Python and liverec version, with the ``ray`` extra
(``pip install 'liverec[ray]'``). Ray is imported only when a :class:`RayJobs` is made.

:class:`ProcessJobs` runs the jobs one after another in a fresh Python process at a lower
CPU priority: what a *background* fit uses, so that a serving process keeps its cores and
its GIL for requests while the fit runs (a fit in a thread of the server holds the GIL
for its Python parts and competes with every request for the CPU).

Examples
--------
>>> def add(shared, job):
...     return shared + job
>>> LocalJobs().map(add, 10, [1, 2])
[11, 12]
>>> LocalJobs().map(add, 10, ["x"])
[Failed(error="TypeError: unsupported operand type(s) for +: 'int' and 'str'")]
>>> job_runner(None)
LocalJobs()
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, Sequence

import numpy as np

from ._extras import require
from .errors import ValidationError

#: Started by Ray's defaults (the GCS listens on 6379); give another port when Redis runs there.
RAY_START = "ray start --head --port 6380"


@dataclass(frozen=True)
class Failed:
    """A job that raised: ``error`` is ``"<ExceptionType>: <message>"``, ``exc`` the exception."""

    error: str
    exc: BaseException | None = field(default=None, compare=False, repr=False)

    @classmethod
    def of(cls, exc: BaseException) -> "Failed":
        return cls(f"{type(exc).__name__}: {exc}", exc)

    def reraise(self) -> None:
        """Raise the job's exception here (a RuntimeError with its text when it did not travel)."""
        raise self.exc if self.exc is not None else RuntimeError(self.error)


class JobRunner(Protocol):
    """Maps ``fn(shared, job)`` over ``jobs``; results in the jobs' order, a raise as :class:`Failed`.

    ``side_by_side``: whether the jobs of one ``map`` run at the same time (a batch then
    takes about one job's time) or one after another.
    """

    side_by_side: bool

    def map(self, fn: Callable[[Any, Any], Any], shared: Any, jobs: Sequence[Any]) -> list[Any]: ...


def _call(fn: Callable[[Any, Any], Any], shared: Any, job: Any) -> Any:
    try:
        return fn(shared, job)
    except Exception as exc:  # noqa: BLE001 - reported to the caller as a result
        return Failed.of(exc)


_held: tuple[str, Any] | None = None  # in a Ray worker: the last shared input, by its object id


def _call_shared(fn: Callable[[Any, Any], Any], ref: list[Any], job: Any) -> Any:
    """``_call`` in a Ray worker, reusing the shared input the worker's previous job got (``ref``
    comes wrapped in a list so that Ray passes the reference rather than the object)."""
    global _held
    key = ref[0].hex()
    if _held is None or _held[0] != key:
        import ray

        _held = None  # drop the previous input before loading the next
        _held = (key, ray.get(ref[0]))
    return _call(fn, _held[1], job)


class LocalJobs:
    """Runs the jobs one after another in this process."""

    side_by_side = False

    def map(self, fn: Callable[[Any, Any], Any], shared: Any, jobs: Sequence[Any]) -> list[Any]:
        return _run_all(fn, shared, jobs)

    def __repr__(self) -> str:
        return "LocalJobs()"


def _run_all(fn: Callable[[Any, Any], Any], shared: Any, jobs: Sequence[Any]) -> list[Any]:
    return [_call(fn, shared, job) for job in jobs]


#: Bytes per step of a large copy, read or write: the GIL can pass between steps (see :func:`_send`).
CHUNK = 1 << 20


def blank(n: int) -> memoryview:
    """``n`` writable bytes that are not zero-filled first: a ``bytearray(n)`` is zero-filled
    while holding the GIL (hundreds of ms for hundreds of MB); these pages are first touched
    by whatever fills them, a chunk at a time."""
    return np.empty(n, dtype=np.uint8).data


def _send(obj: Any, out: Any) -> None:
    """Write ``obj`` to the binary stream ``out`` as pickle protocol 5 with its large buffers
    (numpy arrays) out of band: a header (the pickle's and every buffer's length), the
    pickle, then each buffer's raw bytes. Neither side copies an array inside one pickle
    call, which would hold the GIL for the whole copy (hundreds of ms for an EASE matrix):
    the buffers cross as plain writes and reads, which release it."""
    bufs: list[pickle.PickleBuffer] = []
    body = pickle.dumps(obj, protocol=5, buffer_callback=bufs.append)
    views = [b.raw() for b in bufs]
    out.write(struct.pack(f"<QQ{len(views)}Q", len(body), len(views), *(v.nbytes for v in views)))
    out.write(body)
    for v in views:
        for a in range(0, v.nbytes, CHUNK):
            out.write(v[a : a + CHUNK])
    out.flush()


def _read_exact(src: Any, n: int) -> memoryview:
    view, got = blank(n), 0
    while got < n:
        k = src.readinto(view[got : got + CHUNK])
        if not k:
            raise EOFError(f"the stream ended after {got} of {n} bytes")
        got += k
    return view


def _receive(src: Any) -> Any:
    """Read one object written by :func:`_send` (arrays come back writable, not copied again)."""
    n_body, n_bufs = struct.unpack("<QQ", _read_exact(src, 16))
    sizes = struct.unpack(f"<{n_bufs}Q", _read_exact(src, 8 * n_bufs)) if n_bufs else ()
    body = _read_exact(src, n_body)
    return pickle.loads(body, buffers=[_read_exact(src, n) for n in sizes])


def _child_command(nice: int) -> list[str]:
    """The command line of a :class:`ProcessJobs` child ``nice`` steps down: started through
    nice(1) where there is one, so that its start (importing liverec and numpy, a second of
    CPU) already leaves the cores to this process; else it lowers itself once started.

    >>> _child_command(0)[1:3] == ["-c", "from liverec.jobs import _worker_main; _worker_main()"]
    True
    """
    program = [sys.executable, "-c", "from liverec.jobs import _worker_main; _worker_main()"]
    tool = shutil.which("nice") if nice > 0 else None
    if tool is not None:
        return [tool, "-n", str(nice), *program, "0"]
    return [*program, str(nice)]


def _worker_main() -> None:
    """A :class:`ProcessJobs` child: lower its priority (argument 1), read (fn, shared, jobs), write the results."""
    nice = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    if nice:
        try:
            os.nice(nice)
        except OSError:  # not allowed here: run at the parent's priority
            pass
    fn, shared, jobs = _receive(sys.stdin.buffer)
    _send(_run_all(fn, shared, jobs), sys.stdout.buffer)


class ProcessJobs:
    """Runs the jobs one after another in a new Python process, ``nice`` steps below this one.

    The function, the shared input and the jobs travel pickled through the child's stdin,
    the results back through its stdout (functions by reference: module-level only; large
    arrays out of band, so neither side holds the GIL while they cross). The
    child is a plain ``python -c`` that imports liverec, never this program's main module,
    so a script without a ``__main__`` guard is not run twice (as a ``multiprocessing``
    spawn would). A child that dies raises :class:`RuntimeError` with its last error lines.

    Examples
    --------
    >>> import operator
    >>> ProcessJobs().map(operator.add, 10, [1, 2, "x"])
    [11, 12, Failed(error="TypeError: unsupported operand type(s) for +: 'int' and 'str'")]
    """

    side_by_side = False

    def __init__(self, nice: int = 10) -> None:
        self.nice = nice

    def map(self, fn: Callable[[Any, Any], Any], shared: Any, jobs: Sequence[Any]) -> list[Any]:
        if not jobs:
            return []
        # stderr to a file, not a pipe: a child that writes much there must not block on it.
        with tempfile.TemporaryFile() as err:
            child = subprocess.Popen(_child_command(self.nice), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=err)
            assert child.stdin is not None and child.stdout is not None
            results: list[Any] | None = None
            try:
                with child.stdin:
                    _send((fn, shared, list(jobs)), child.stdin)
                results = _receive(child.stdout)
            except (BrokenPipeError, EOFError, struct.error):
                results = None  # the child died: its exit code and stderr say why
            finally:
                child.stdout.close()
                code = child.wait()
            if code != 0 or results is None:
                err.seek(0)
                tail = err.read().decode(errors="replace").strip().splitlines()[-5:]
                raise RuntimeError(f"the fit process exited with code {code}: " + " | ".join(tail))
        return results

    def __repr__(self) -> str:
        return f"ProcessJobs(nice={self.nice})"


class RayJobs:
    """Runs the jobs as Ray tasks (one CPU each) on the cluster whose head is at ``address``.

    ``address`` is what ``ray start --head`` printed (``HOST:PORT`` of its GCS), or
    ``auto`` on a node of a running cluster. This process joins the cluster as a driver;
    when it is already connected to another cluster it disconnects first.
    Raises :class:`~liverec.errors.ValidationError` when the cluster cannot be reached.

    Examples
    --------
    >>> jobs = RayJobs("127.0.0.1:6380")                       # doctest: +SKIP
    >>> jobs.map(lambda shared, job: shared * job, 3, [1, 2])  # doctest: +SKIP
    [3, 6]
    """

    side_by_side = True

    def __init__(self, address: str) -> None:
        self.address = address
        self._ray = _connect(address)
        self._task = self._ray.remote(num_cpus=1)(_call_shared)
        self._shared: tuple[Any, Any] | None = None  # (object, its ref): put once, reused by later maps

    def _ref(self, shared: Any) -> Any:
        if self._shared is None or self._shared[0] is not shared:
            self._shared = (shared, self._ray.put(shared))
        return self._shared[1]

    def map(self, fn: Callable[[Any, Any], Any], shared: Any, jobs: Sequence[Any]) -> list[Any]:
        ref = self._ref(shared)
        return list(self._ray.get([self._task.remote(fn, [ref], job) for job in jobs]))

    def __repr__(self) -> str:
        return f"RayJobs({self.address!r})"


_joined: str | None = None  # the address this process is connected to


def _reachable(address: str, timeout: float = 5.0) -> None:
    """Raise ConnectionError unless something listens at ``HOST:PORT`` (``ray.init`` would retry for minutes)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        if address == "auto":
            return
        raise ValueError("expected HOST:PORT")
    with socket.create_connection((host.removeprefix("ray://") or "127.0.0.1", int(port)), timeout=timeout):
        pass


def _connect(address: str) -> Any:
    """The ``ray`` module, connected to the cluster at ``address``."""
    global _joined
    if not isinstance(address, str) or not address.strip():
        raise ValidationError(
            f"the Ray address must be the HOST:PORT of a cluster's head, got {address!r}.", field="ray",
            fix=f"start a Ray head ({RAY_START}) and give the address it prints.",
        )
    ray = require("ray", "ray", "running fits on a Ray cluster")
    if ray.is_initialized():
        if _joined == address:
            return ray
        ray.shutdown()
    try:
        _reachable(address)
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    except Exception as exc:  # noqa: BLE001 - ray raises ConnectionError, ValueError, RuntimeError, ...
        raise ValidationError(
            f"cannot reach the Ray cluster at {address!r}: {type(exc).__name__}: {exc}", field="ray",
            fix=f"start a Ray head ({RAY_START}) and give the HOST:PORT it prints, or leave the Ray address unset "
            "to run locally.",
        ) from None
    _joined = address
    return ray


def job_runner(ray: str | None) -> JobRunner:
    """:class:`RayJobs` on the cluster at ``ray``, else :class:`LocalJobs`."""
    return LocalJobs() if ray is None else RayJobs(ray)
