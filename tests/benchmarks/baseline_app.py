"""Baseline A: a bare FastAPI POST that validates a 1 KiB body and answers (one worker).

    python -m tests.benchmarks.baseline_app PORT [--client httpx|aiohttp] [NEXT_URL ...]

With next URLs it is a link of the chained baseline: after validating, it posts the body to
each next service in turn and answers once they have. Three bare services chained that way, as
the gateway calls the vault and then the router, are what the architecture costs with no
work. The client is the one the services use between themselves (httpx on aiohttp's
transport) or, to price httpx's own layer, aiohttp alone.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import aiohttp
import httpx
import uvicorn
from fastapi import FastAPI
from httpx_aiohttp import AiohttpTransport
from pydantic import BaseModel

JSON_CONTENT = {"Content-Type": "application/json"}

Post = Callable[[bytes], Awaitable[None]]


class Payload(BaseModel):
    title: str
    description: str
    priority: str = "normal"


async def httpx_post(stack: AsyncExitStack, url: str) -> Post:
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=50)
    client = await stack.enter_async_context(
        httpx.AsyncClient(
            base_url=url,
            limits=limits,
            transport=AiohttpTransport(limits=limits, trust_env=False),
        )
    )

    async def post(body: bytes) -> None:
        (await client.post("/echo", content=body, headers=JSON_CONTENT)).raise_for_status()

    return post


async def aiohttp_post(stack: AsyncExitStack, url: str) -> Post:
    session = await stack.enter_async_context(
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100), trust_env=False)
    )

    async def post(body: bytes) -> None:
        async with session.post(f"{url}/echo", data=body, headers=JSON_CONTENT) as answer:
            await answer.read()
            answer.raise_for_status()

    return post


CLIENTS = {"httpx": httpx_post, "aiohttp": aiohttp_post}


def create_app(next_urls: tuple[str, ...] = (), client: str = "httpx") -> FastAPI:
    posts: list[Post] = []

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            posts.extend([await CLIENTS[client](stack, url) for url in next_urls])
            yield

    app = FastAPI(lifespan=lifespan)

    @app.post("/echo", status_code=202)
    async def echo(payload: Payload) -> dict[str, str]:
        for post in posts:
            await post(payload.model_dump_json().encode())
        return {"status": "accepted", "title": payload.title}

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int)
    parser.add_argument("next_urls", nargs="*")
    parser.add_argument("--client", choices=sorted(CLIENTS), default="httpx")
    args = parser.parse_args()
    uvicorn.run(
        create_app(tuple(args.next_urls), args.client),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
    )
