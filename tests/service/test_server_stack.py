"""`liverec serve` runs uvicorn with its defaults (loop="auto", http="auto"): with
``uvicorn[standard]`` installed those resolve to uvloop and httptools, the fast pair."""

from __future__ import annotations

import uvicorn

from liverec.service.app import create_app
from liverec.settings import Settings


def test_serve_defaults_resolve_to_uvloop_and_httptools() -> None:
    config = uvicorn.Config(create_app(Settings(open_access=True)), access_log=False)
    config.load()
    assert config.get_loop_factory().__module__.startswith("uvloop")
    assert config.http_protocol_class.__module__ == "uvicorn.protocols.http.httptools_impl"
