"""The job classifier: text in, tier + domain + confidence + reasons out.

Design
------
:class:`Classifier` is the seam: the routing code knows only that protocol. The router uses
the trained model (:class:`services.router.classifier.trained.TrainedClassifier`); the
:class:`LexiconClassifier` below is the rule-based baseline it replaced, kept for the
evaluation's comparison and selectable with ``TASKROUTE_ROUTER_CLASSIFIER=lexicon``.

The lexicon classifier normalises text (Unicode NFKD without accents, lower case, punctuation
to spaces, naive singular forms) and matches every lexicon term of :mod:`.lexicon` as a whole
word or phrase. A domain's score is the sum of the weights of its distinct matched terms, a
title match counting ``TITLE_BOOST`` times (a title names the work; a description also names
its context). Confidence combines how much evidence the best domain has with how far it is
ahead of the runner-up::

    strength   = 1 - exp(-best / EVIDENCE_SCALE)   # 0 if no match; ~0.78 for one decisive term
    separation = (best - second) / best            # 1 if unopposed, 0 on a tie
    confidence = strength * separation

so a single weak word, or two domains tied, land below the triage threshold and an operator
decides. A valid service hint from the client is taken as given (confidence 1.0).
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from services.router.domain.lexicon import LEXICON
from services.router.domain.taxonomy import Domain, Tier, tier_of

# A title word is worth half again a description word: titles summarise the job.
TITLE_BOOST = 1.5
# Score at which evidence counts as "fairly strong": one decisive (weight 3) term gives
# strength 1 - e^-1.5 ≈ 0.78, one weak (weight 1) term ≈ 0.39, below the default threshold.
EVIDENCE_SCALE = 2.0
# Reasons quote at most this many matched terms per domain, the heaviest first, to stay readable.
MAX_TERMS_IN_REASON = 5
# When nothing matches, the job still needs a (provisional) domain; data processing is the
# broadest routine work. Confidence 0 sends it to triage anyway.
FALLBACK_DOMAIN = Domain.DATA_PROCESSING


@dataclass(frozen=True)
class Classification:
    tier: Tier
    domain: Domain
    confidence: float
    reasons: list[str] = field(default_factory=list)


class Classifier(Protocol):
    """Anything that can classify a job; implementations must be pure and thread-safe."""

    def classify(self, *, title: str, description: str, service_hint: str | None) -> Classification:
        """Classify one job's plain text; honour a valid ``service_hint``."""
        ...


_NON_WORD = re.compile(r"[^a-z0-9]+")


def _singular(token: str) -> str:
    # Naive English singular: enough for "invoices", "tickets", "queries"; short words and
    # "-ss" words ("process", "business") are left alone.
    if len(token) > 4 and token.endswith("ies"):
        return token[:-3] + "y"
    if len(token) > 3 and token.endswith("s") and not token.endswith(("ss", "us", "is")):
        return token[:-1]
    return token


def normalise(text: str) -> str:
    """Lower-case, accent-free, punctuation-free, singular tokens joined by single spaces."""
    decomposed = unicodedata.normalize("NFKD", text)
    ascii_text = "".join(ch for ch in decomposed if not unicodedata.combining(ch)).lower()
    tokens = _NON_WORD.sub(" ", ascii_text).split()
    return " ".join(_singular(token) for token in tokens)


@dataclass(frozen=True)
class _Term:
    display: str
    pattern: str
    weight: float


def _compile(lexicon: Mapping[Domain, Mapping[str, float]]) -> dict[Domain, list[_Term]]:
    compiled: dict[Domain, list[_Term]] = {}
    for domain, terms in lexicon.items():
        seen: dict[str, _Term] = {}
        for display, weight in terms.items():
            pattern = normalise(display)
            if pattern and (pattern not in seen or seen[pattern].weight < weight):
                seen[pattern] = _Term(display=display, pattern=pattern, weight=float(weight))
        compiled[domain] = sorted(seen.values(), key=lambda t: (-t.weight, t.display))
    return compiled


def _format_terms(terms: Iterable[str]) -> str:
    return ", ".join(f"'{term}'" for term in terms)


class LexiconClassifier:
    """Weighted word-and-phrase matching over the contract's 17 domains."""

    def __init__(self, lexicon: Mapping[Domain, Mapping[str, float]] = LEXICON) -> None:
        self._terms = _compile(lexicon)

    def classify(self, *, title: str, description: str, service_hint: str | None) -> Classification:
        if service_hint is not None:
            hinted = _domain_or_none(service_hint)
            if hinted is not None:
                return Classification(
                    tier=tier_of(hinted),
                    domain=hinted,
                    confidence=1.0,
                    reasons=[f"the client named the service '{hinted.value}'"],
                )
        scores = self._score(title=title, description=description)
        return self._decide(scores, ignored_hint=service_hint)

    def _score(self, *, title: str, description: str) -> dict[Domain, tuple[float, list[str]]]:
        # Padding with spaces turns substring search into whole-word/phrase search.
        title_text = f" {normalise(title)} "
        body_text = f" {normalise(description)} "
        scores: dict[Domain, tuple[float, list[str]]] = {}
        for domain, terms in self._terms.items():
            total = 0.0
            matched: list[str] = []
            for term in terms:
                needle = f" {term.pattern} "
                if needle in title_text:
                    total += term.weight * TITLE_BOOST
                elif needle in body_text:
                    total += term.weight
                else:
                    continue
                matched.append(term.display)
            if total > 0:
                scores[domain] = (total, matched)
        return scores

    def _decide(
        self, scores: dict[Domain, tuple[float, list[str]]], *, ignored_hint: str | None
    ) -> Classification:
        reasons: list[str] = []
        if ignored_hint is not None:
            reasons.append("the service named by the client is not a known domain; ignored it")
        if not scores:
            reasons.append("no known term matched; an operator should decide")
            return Classification(
                tier=tier_of(FALLBACK_DOMAIN),
                domain=FALLBACK_DOMAIN,
                confidence=0.0,
                reasons=reasons,
            )
        # Ties broken by domain order so that the same text always classifies the same way.
        order = {domain: index for index, domain in enumerate(Domain)}
        ranked = sorted(scores.items(), key=lambda item: (-item[1][0], order[item[0]]))
        best_domain, (best, best_terms) = ranked[0]
        second = ranked[1][1][0] if len(ranked) > 1 else 0.0
        strength = 1.0 - math.exp(-best / EVIDENCE_SCALE)
        separation = (best - second) / best
        confidence = round(max(0.0, min(1.0, strength * separation)), 4)
        reasons.append(
            f"matched {_format_terms(best_terms[:MAX_TERMS_IN_REASON])} → {best_domain.value}"
            f" (score {best:g})"
        )
        if len(ranked) > 1:
            runner_domain, (runner_score, runner_terms) = ranked[1]
            reasons.append(
                f"runner-up {runner_domain.value} (score {runner_score:g}:"
                f" {_format_terms(runner_terms[:MAX_TERMS_IN_REASON])})"
            )
        return Classification(
            tier=tier_of(best_domain), domain=best_domain, confidence=confidence, reasons=reasons
        )


def _domain_or_none(value: str) -> Domain | None:
    try:
        return Domain(value.strip().lower())
    except ValueError:
        return None
