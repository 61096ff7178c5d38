"""Data policies: a tenant's default and a job's narrowing of it.

A job may narrow its tenant's policy, never widen it: allowed countries are intersected (absent
on either side means "no restriction from that side"), required certifications are unioned and
``require_e2e`` and ``require_review`` are OR-ed (``review_team_id``, the reviewer team, is the
tenant's alone). The result, the *effective* policy, travels with the job to the router,
which never reads the tenant table.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from services.gateway.domain.errors import PolicyWidening


@dataclass(frozen=True)
class DataPolicy:
    allowed_countries: tuple[str, ...] | None = None
    required_certifications: tuple[str, ...] = ()
    require_e2e: bool = False
    # Four eyes before ``completed``: another member of the working team, or a member of the
    # reviewer team ``review_team_id``, approves the work or sends it back (docs/architecture.md).
    require_review: bool = False
    review_team_id: str | None = None

    @classmethod
    def from_parts(
        cls,
        *,
        allowed_countries: Iterable[str] | None,
        required_certifications: Iterable[str] = (),
        require_e2e: bool = False,
        require_review: bool = False,
        review_team_id: str | None = None,
    ) -> DataPolicy:
        """A policy in canonical form: upper-case codes, de-duplicated, sorted."""
        countries = (
            None
            if allowed_countries is None
            else tuple(sorted({c.upper() for c in allowed_countries}))
        )
        certifications = tuple(sorted({c.upper() for c in required_certifications}))
        return cls(
            countries,
            certifications,
            bool(require_e2e),
            bool(require_review),
            None if review_team_id is None else str(review_team_id),
        )

    @classmethod
    def from_json(cls, value: dict[str, Any] | None) -> DataPolicy:
        value = value or {}
        return cls.from_parts(
            allowed_countries=value.get("allowed_countries"),
            required_certifications=value.get("required_certifications") or (),
            require_e2e=bool(value.get("require_e2e", False)),
            require_review=bool(value.get("require_review", False)),
            review_team_id=value.get("review_team_id"),
        )

    def to_json(self) -> dict[str, Any]:
        """Canonical JSON. The review fields appear only when set (absent: no review), so
        policies stored before review existed, and their answers, keep their shape."""
        value: dict[str, Any] = {
            "allowed_countries": None
            if self.allowed_countries is None
            else list(self.allowed_countries),
            "required_certifications": list(self.required_certifications),
            "require_e2e": self.require_e2e,
        }
        if self.require_review:
            value["require_review"] = True
        if self.review_team_id is not None:
            value["review_team_id"] = self.review_team_id
        return value


@dataclass(frozen=True)
class PolicyNarrowing:
    """What a job asks for; every field optional."""

    allowed_countries: tuple[str, ...] | None = None
    required_certifications: tuple[str, ...] = field(default=())
    require_e2e: bool = False
    # A job may ask for review its tenant does not require; it can never waive the tenant's.
    require_review: bool = False


def effective_policy(tenant: DataPolicy, job: PolicyNarrowing | None) -> DataPolicy:
    """The tenant's policy narrowed by the job's; refuses a narrowing that leaves no country."""
    if job is None:
        return tenant
    countries: set[str] | None
    if job.allowed_countries is None:
        countries = None if tenant.allowed_countries is None else set(tenant.allowed_countries)
    else:
        asked = {c.upper() for c in job.allowed_countries}
        countries = (
            asked if tenant.allowed_countries is None else asked & set(tenant.allowed_countries)
        )
        if not countries:
            raise PolicyWidening(
                "data_policy.allowed_countries: none of these countries is allowed by the "
                "tenant's policy, so no team could ever take the job."
            )
    return DataPolicy.from_parts(
        allowed_countries=countries,
        required_certifications={*tenant.required_certifications, *job.required_certifications},
        require_e2e=tenant.require_e2e or job.require_e2e,
        require_review=tenant.require_review or job.require_review,
        review_team_id=tenant.review_team_id,
    )
