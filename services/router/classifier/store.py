"""Where the router gets its model: memory, the data folder, or a fresh fit of the corpus.

The artefact is ``<data dir>/classifier/model-<key>.npz`` where ``key`` is the digest of the
repository's corpus and the training configuration. ``taskroute classifier train`` writes it
(possibly with operator labels merged in); the router loads it at start-up, or fits the corpus
itself (a few seconds) and writes it when it is missing. A changed corpus or configuration has
another key, so a stale artefact is never used. Nothing generated is committed.

Within one process a model is fitted at most once per key (:data:`_FITTED`): test suites and
several apps in one process share it. The model is read-only, so sharing is safe.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from services.router.classifier.corpus import Example, digest, load_corpus
from services.router.classifier.model import CONFIG, LinearTextModel, fit_pipeline

logger = logging.getLogger("taskroute.router.classifier")

# Models fitted in this process, by key: fitting is pure, so its result can be reused.
_FITTED: dict[str, LinearTextModel] = {}


def model_key(examples: Sequence[Example]) -> str:
    return digest(examples, config=CONFIG)


def artefact_path(folder: Path, corpus_key: str) -> Path:
    # 16 hex digits (64 bits) tell corpus versions apart; the full key is inside the file.
    return folder / f"model-{corpus_key[:16]}.npz"


def train(examples: Sequence[Example]) -> LinearTextModel:
    """Fit a model on ``examples`` (deterministic), reusing this process's earlier fit."""
    key = model_key(examples)
    model = _FITTED.get(key)
    if model is None:
        model = LinearTextModel.from_pipeline(fit_pipeline(examples), key=key)
        _FITTED[key] = model
    return model


def load_or_train(folder: Path | None) -> LinearTextModel:
    """The model for the repository's corpus: from ``folder`` if there, else fitted (and saved)."""
    corpus = load_corpus()
    corpus_key = model_key(corpus)
    if folder is not None:
        path = artefact_path(folder, corpus_key)
        if path.exists():
            try:
                return LinearTextModel.load(path)
            except (OSError, ValueError, KeyError) as exc:
                logger.warning("classifier artefact unreadable (%s); refitting", type(exc).__name__)
    model = train(corpus)
    if folder is not None:
        try:
            model.save(artefact_path(folder, corpus_key))
        except OSError as exc:
            # A read-only data folder costs a fit per start, not an outage.
            logger.warning("could not cache the classifier artefact (%s)", type(exc).__name__)
    return model


def save_for_router(model: LinearTextModel, folder: Path) -> Path:
    """Store a model (maybe trained with operator labels) where the router will load it."""
    path = artefact_path(folder, model_key(load_corpus()))
    model.save(path)
    return path
