"""``taskroute classifier bench``: how long fitting, loading and classifying take.

Rows: fitting the corpus (what a router start costs without a cached artefact); loading the
artefact; one text through the fast path (median and p99 over the corpus texts, and over long
~100-word texts); the same through scikit-learn's ``predict_proba`` for comparison; and a batch
of 1,000 texts through the router's ``POST /internal/v1/classify`` (in process, real SQLite
database, service credential, no teams so routing is the cheap part).
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from services.router.classifier.corpus import load_corpus
from services.router.classifier.model import LinearTextModel, fit_pipeline
from services.router.classifier.store import model_key

# Repetitions of each per-text measurement: enough for a stable median and p99.
ROUNDS = 3
# Batch size of the HTTP row: the contract's limit.
BATCH = 1000


def _timed(function: Callable[[], object]) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def _per_call(function: Callable[[Any], object], argument: Any) -> float:
    started = time.perf_counter()
    function(argument)
    return time.perf_counter() - started


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[int(len(ordered) * 0.99) - 1]


def _http_batch(texts: list[str]) -> list[float]:
    from services.router.app import create_app
    from services.router.db.migrate import upgrade
    from services.router.settings import RouterSettings
    from shared.service_auth import ServiceIdentity, ensure_service_keys

    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder)
        ensure_service_keys(data / "keys")
        url = f"sqlite+aiosqlite:///{data / 'router.db'}"
        upgrade(url)  # runs its own event loop: before ours
        settings = RouterSettings(
            database_url=url, data_dir=data, service_keys_dir=data / "keys", environment="test"
        )
        app = create_app(settings)
        gateway = ServiceIdentity.load(name="gateway", keys_dir=data / "keys", peers=())
        body = {"items": [{"description": text} for text in texts]}

        async def post_batches() -> list[float]:
            seconds: list[float] = []
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://r") as http:
                    for _ in range(ROUNDS):
                        token = gateway.credential_for("router")
                        started = time.perf_counter()
                        response = await http.post(
                            "/internal/v1/classify",
                            json=body,
                            headers={"Authorization": f"Bearer {token}"},
                        )
                        seconds.append(time.perf_counter() - started)
                        response.raise_for_status()
            return seconds

        return asyncio.run(post_batches())


def run() -> list[str]:
    """Measure everything; one printable line per row."""
    examples = load_corpus()
    texts = [example.text for example in examples]
    lines: list[str] = []
    fit_seconds: list[float] = []
    started = time.perf_counter()
    pipeline = fit_pipeline(examples)
    fit_seconds.append(time.perf_counter() - started)
    fit_seconds.append(_timed(lambda: fit_pipeline(examples)))
    model = LinearTextModel.from_pipeline(pipeline, key=model_key(examples))
    lines.append(f"fit on {len(texts)} examples: {min(fit_seconds):.2f} s (best of 2)")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.npz"
        model.save(path)
        load = min(_timed(lambda: LinearTextModel.load(path)) for _ in range(3))
        lines.append(f"artefact: {path.stat().st_size / 1e6:.1f} MB, load {load * 1e3:.0f} ms")

    # Long texts: eight corpus texts joined (about 100 words), near the top of the expected range.
    long_texts = [" ".join(texts[i : i + 8]) for i in range(0, len(texts) - 8, 8)]
    for name, sample in (("corpus texts", texts), ("long texts", long_texts)):
        fast = [_per_call(model.score, t) for _ in range(ROUNDS) for t in sample]
        median, p99 = _percentiles(fast)
        lines.append(
            f"fast path, {name} (avg {statistics.mean(len(t.split()) for t in sample):.0f}"
            f" words): median {median * 1e6:.0f} µs, p99 {p99 * 1e6:.0f} µs"
        )
    slow = [_per_call(pipeline.predict_proba, [t]) for t in texts[:300]]
    median, p99 = _percentiles(slow)
    lines.append(
        f"scikit-learn predict_proba, one text: median {median * 1e6:.0f} µs,"
        f" p99 {p99 * 1e6:.0f} µs"
    )
    batch = (texts * (BATCH // len(texts) + 1))[:BATCH]
    seconds = _http_batch(batch)
    lines.append(
        f"POST /internal/v1/classify, {BATCH} texts: best {min(seconds) * 1e3:.0f} ms,"
        f" median {statistics.median(seconds) * 1e3:.0f} ms ({ROUNDS} rounds)"
    )
    return lines
