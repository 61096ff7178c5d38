"""Baseline A: a bare FastAPI POST that validates a 1 KiB body and answers (one worker)."""

from __future__ import annotations

import sys

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel


class Payload(BaseModel):
    title: str
    description: str
    priority: str = "normal"


def create_app() -> FastAPI:
    app = FastAPI()

    @app.post("/echo", status_code=202)
    async def echo(payload: Payload) -> dict[str, str]:
        return {"status": "accepted", "title": payload.title}

    return app


if __name__ == "__main__":
    uvicorn.run(create_app(), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
