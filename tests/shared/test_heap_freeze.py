"""A served app freezes what its start-up made (shared.app.freeze_heap_after_startup), and
``taskroute serve`` serves its app that way."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import AsyncIterator, Iterator, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request

from services.cli import main as cli
from shared.app import freeze_heap_after_startup
from tests.e2e.conftest import free_port


class Node:
    """A cycle: what the collector, not reference counting, frees."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def collector_stopped() -> Iterator[None]:
    """No automatic collection while the test runs; nothing left frozen after it."""
    gc.disable()
    gc.unfreeze()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.enable()


async def served(app: FastAPI, path: str) -> Any:
    """Serve ``app`` with uvicorn on a loopback port, as ``taskroute serve`` does, and GET
    ``path`` once it has started."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    serving = asyncio.create_task(server.serve())
    while not server.started and not serving.done():
        await asyncio.sleep(0.01)
    assert server.started, "uvicorn did not start"
    async with httpx.AsyncClient(trust_env=False) as client:
        answer = (await client.get(f"http://127.0.0.1:{port}{path}")).json()
    server.should_exit = True
    await serving
    return answer


def with_freeze_count(app: FastAPI) -> FastAPI:
    @app.get("/frozen")
    async def frozen() -> int:
        return gc.get_freeze_count()

    return app


async def test_garbage_is_collected_then_the_rest_frozen_once_the_app_has_started(
    collector_stopped: None,
) -> None:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        yield {"made_at_start_up": "kept"}

    app = FastAPI(lifespan=lifespan)

    @app.get("/state")
    async def state(request: Request) -> dict[str, Any]:
        return {"made": request.state.made_at_start_up, "frozen": gc.get_freeze_count()}

    freeze_heap_after_startup(app)
    garbage = Node()
    collected = weakref.ref(garbage)
    del garbage
    # The lifespan's state still reaches requests, and what start-up left is frozen.
    answer = await served(app, "/state")
    assert answer["made"] == "kept"
    assert answer["frozen"] > 0
    assert collected() is None  # collected before the freeze, not frozen for good


async def test_a_failing_start_up_still_fails(collector_stopped: None) -> None:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        raise RuntimeError("no database")
        yield

    app = FastAPI(lifespan=lifespan)
    freeze_heap_after_startup(app)
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "lifespan.startup"}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    # The ASGI lifespan as uvicorn drives it: the failure is reported and raised, not frozen.
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    with pytest.raises(RuntimeError, match="no database"):
        await app(scope, receive, send)
    assert [message["type"] for message in sent] == ["lifespan.startup.failed"]
    assert gc.get_freeze_count() == 0


def test_taskroute_serve_serves_an_app_that_freezes(
    collector_stopped: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[FastAPI] = []
    monkeypatch.setenv("TASKROUTE_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(cli, "configure_logging", lambda *_args: None)  # the test's own logs
    monkeypatch.setattr(uvicorn, "run", lambda app, **_options: built.append(app))
    cli.serve("vault")  # migrates the data folder's database, then hands its app to uvicorn
    [app] = built
    assert asyncio.run(served(with_freeze_count(app), "/frozen")) > 0
