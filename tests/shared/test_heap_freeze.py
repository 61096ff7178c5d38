"""A served app freezes what its start-up made (shared.app.freeze_heap_after_startup)."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from shared.app import freeze_heap_after_startup


async def test_what_start_up_made_is_frozen_once_the_app_has_started() -> None:
    made: list[object] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # A cycle, as most long-lived objects of a service are part of one.
        node: dict[str, object] = {}
        node["self"] = node
        made.append(node)
        yield
        made.clear()

    app = FastAPI(lifespan=lifespan)
    freeze_heap_after_startup(app)
    gc.unfreeze()
    try:
        async with app.router.lifespan_context(app):
            assert made, "the app's own start-up ran first"
            assert gc.get_freeze_count() > 0
            # The start-up's objects are no longer in any generation a collection walks.
            assert not any(obj is made[0] for obj in gc.get_objects())
        assert not made, "the app's own shutdown still runs"
    finally:
        gc.unfreeze()
