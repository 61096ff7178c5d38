"""The trained model behind the router's :class:`Classifier` protocol.

Domain = the most probable class of :class:`LinearTextModel`; tier = the domain's tier (the
contract lists every domain under exactly one tier; a separate tier model measured no better,
see BENCHMARKS.md); confidence = the domain's probability, so the triage threshold reads as
"how sure the model is of the team's skill", which is what routing needs. Reasons name the
words of the text that pushed hardest toward the chosen domain, and the runner-up with its
probability and words, so a person can check the call.

A valid ``service`` hint from the client is taken as given (confidence 1.0) and recorded in the
reasons, as the lexicon classifier did.
"""

from __future__ import annotations

import numpy as np

from services.router.classifier.model import LinearTextModel
from services.router.domain.classifier import Classification
from services.router.domain.taxonomy import Domain, tier_of

# Reasons quote at most this many terms per domain: enough to check, short enough to read.
MAX_TERMS_IN_REASON = 5


def _quoted(terms: list[str]) -> str:
    return ("words " + ", ".join(f"'{term}'" for term in terms)) if terms else "no telling word"


class TrainedClassifier:
    """Classifies with the trained linear model; pure and thread-safe (read-only arrays)."""

    def __init__(self, model: LinearTextModel) -> None:
        self.model = model

    def classify(self, *, title: str, description: str, service_hint: str | None) -> Classification:
        reasons: list[str] = []
        if service_hint is not None:
            hinted = _domain_or_none(service_hint)
            if hinted is not None:
                return Classification(
                    tier=tier_of(hinted),
                    domain=hinted,
                    confidence=1.0,
                    reasons=[f"the client named the service '{hinted.value}'"],
                )
            reasons.append("the service named by the client is not a known domain; ignored it")
        # The title summarises the job and the description gives its context: the model was
        # trained on both kinds of text, so they are read as one.
        text = f"{title.strip()}. {description.strip()}" if title.strip() else description
        scored = self.model.score(text)
        order = np.argsort(-scored.probabilities, kind="stable")
        best, runner = int(order[0]), int(order[1])
        domain = self.model.classes[best]
        runner_domain = self.model.classes[runner]
        confidence = round(float(scored.probabilities[best]), 4)
        reasons.append(
            f"model: {domain.value} with probability {confidence:.2f}, from"
            f" {_quoted(self.model.top_terms(scored, best, limit=MAX_TERMS_IN_REASON))}"
        )
        reasons.append(
            f"runner-up {runner_domain.value} ({float(scored.probabilities[runner]):.2f}):"
            f" {_quoted(self.model.top_terms(scored, runner, limit=MAX_TERMS_IN_REASON))}"
        )
        return Classification(
            tier=tier_of(domain), domain=domain, confidence=confidence, reasons=reasons
        )


def _domain_or_none(value: str) -> Domain | None:
    try:
        return Domain(value.strip().lower())
    except ValueError:
        return None
