"""How client feedback moves a team's ``quality``: a Bayesian average, one rating at a time.

A rating ``r`` (1 to 5 stars) becomes a score on the quality scale::

    s = (r - 1) / 4                     # 1 star = 0.0, 3 stars = 0.5, 5 stars = 1.0

A team's quality is the Bayesian average of the ratings it has received since its quality was
last *set* (by an operator, or at creation), with that set value ``m`` as the prior mean and a
prior weight ``C`` (how many ratings the prior is worth)::

    quality = (C * m + s_1 + ... + s_n) / (C + n)

which is kept incrementally, so only ``quality`` and ``n`` are stored on the team::

    quality' = quality + (s - quality) / (C + n + 1)
    n'       = n + 1

Properties an operator can rely on: every rating moves quality towards its own score and never
past it (5 stars never lowers it, 1 star never raises it); early ratings move it the most (a
single one by at most ``1 / (C + 1)``); after ``k`` ratings the prior keeps ``C / (C + k)`` of
the weight, so a team that is consistently rated well or badly converges on its clients'
verdict. An operator who sets ``quality`` starts a new prior (``n`` goes back to 0). A team
created without a quality starts at ``quality_prior_mean``. All values stay within 0..1.
"""

from __future__ import annotations

from dataclasses import dataclass

MIN_RATING = 1
MAX_RATING = 5


@dataclass(frozen=True)
class QualityPrior:
    """The Bayesian prior: ``mean`` for a new team, ``weight`` in ratings."""

    mean: float
    weight: float


def rating_score(rating: int) -> float:
    """A 1-5 star rating on the 0..1 quality scale."""
    if not MIN_RATING <= rating <= MAX_RATING:
        raise ValueError(f"a rating is {MIN_RATING} to {MAX_RATING}, got {rating}")
    return (rating - MIN_RATING) / (MAX_RATING - MIN_RATING)


def updated_quality(
    *, quality: float, ratings_so_far: int, rating: int, prior_weight: float
) -> float:
    """The team's quality after one more rating (the incremental Bayesian average)."""
    if ratings_so_far < 0 or prior_weight < 0:
        raise ValueError("ratings_so_far and prior_weight cannot be negative")
    score = rating_score(rating)
    moved = quality + (score - quality) / (prior_weight + ratings_so_far + 1)
    # Clamped: float rounding must never carry a stored quality past 0..1.
    return min(1.0, max(0.0, moved))


def bayesian_average(*, prior_mean: float, prior_weight: float, ratings: list[int]) -> float:
    """The closed form of the same rule (what repeated :func:`updated_quality` converges on)."""
    scores = [rating_score(r) for r in ratings]
    return (prior_weight * prior_mean + sum(scores)) / (prior_weight + len(scores))
