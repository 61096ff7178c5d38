"""``taskroute classifier train`` and ``taskroute classifier evaluate``."""

from __future__ import annotations

import asyncio
import hashlib
from typing import TYPE_CHECKING, Annotated

import typer

from services.router.classifier.corpus import (
    CorpusError,
    Example,
    load_corpus,
    load_wild,
    parse_line,
)
from services.router.db.repository import JobRepository
from services.router.settings import RouterSettings
from shared.db import create_engine, create_sessionmaker

if TYPE_CHECKING:
    from services.router.classifier.model import LinearTextModel

# The model's modules (numpy, scikit-learn) are imported by the commands that use them: this
# module is part of the `taskroute` command line, which every service process starts through.
app = typer.Typer(help="Train and evaluate the router's job classifier.", no_args_is_help=True)


async def _operator_examples(settings: RouterSettings) -> list[Example]:
    """Operators' triage decisions stored in the router database, as labelled examples."""
    engine = create_engine(settings.resolved_database_url())
    try:
        async with create_sessionmaker(engine)() as session:
            rows = await JobRepository(session).operator_examples()
            examples: list[Example] = []
            for row in rows:
                try:
                    examples.append(
                        parse_line(
                            _json_line(row.text, row.domain), where=f"labelled example {row.id}"
                        )
                    )
                except CorpusError as exc:
                    # An example with an unknown domain (an older taxonomy) is skipped, not fatal.
                    typer.echo(f"skipped: {exc}", err=True)
            return examples
    finally:
        await engine.dispose()


def _json_line(text: str, domain: str) -> str:
    import json

    return json.dumps({"text": text, "domain": domain})


def fingerprint(model: LinearTextModel) -> str:
    """SHA-256 of the fitted arrays: equal fingerprints mean the very same model."""
    hasher = hashlib.sha256()
    for array in (model.weights, model.intercept, model.word_idf, model.char_idf):
        hasher.update(array.tobytes())
    hasher.update("\n".join(model.word_terms + model.char_terms).encode())
    return hasher.hexdigest()


@app.command("train")
def train_command(
    with_operator_labels: Annotated[
        bool, typer.Option(help="merge the operators' triage decisions from the router database")
    ] = False,
) -> None:
    """Fit the model on the repository's corpus and store it where the router loads it."""
    from services.router.classifier.store import save_for_router, train

    settings = RouterSettings()
    examples = load_corpus()
    extra: list[Example] = []
    if with_operator_labels:
        extra = asyncio.run(_operator_examples(settings))
    model = train(examples + extra)
    path = save_for_router(model, settings.classifier_dir())
    typer.echo(f"trained on {len(examples)} corpus examples + {len(extra)} operator labels")
    typer.echo(f"features: {len(model.word_terms)} word n-grams, {len(model.char_terms)} char")
    typer.echo(f"model key {model.key[:16]}  fingerprint {fingerprint(model)[:16]}")
    typer.echo(f"saved to {path} (the router loads it at its next start)")


@app.command("evaluate")
def evaluate_command(
    folds: Annotated[int, typer.Option(help="cross-validation folds (0: none)", min=0)] = 5,
    wild: Annotated[bool, typer.Option(help="also score the wild set")] = True,
) -> None:
    """Print held-out, cross-validated, calibration and wild-set figures of the model."""
    from services.router.classifier.evaluation import evaluate, format_report

    examples = load_corpus()
    wild_examples = load_wild() if wild else []
    report = evaluate(examples, wild=wild_examples, folds=folds)
    typer.echo(format_report(report, corpus_size=len(examples), wild_size=len(wild_examples)))


@app.command("bench")
def bench_command() -> None:
    """Measure fitting, loading, one-text latency and a 1,000-text batch (BENCHMARKS.md)."""
    from services.router.classifier.bench import run

    for line in run():
        typer.echo(line)
