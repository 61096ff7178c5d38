"""Routing: which teams may take a job (hard filters) and which of them should (a score).

Eligibility
-----------
A team is eligible only if every filter passes; an excluded team keeps *every* reason that
applies, so an operator can answer "why not team X?" from the decision record alone:

``inactive``; ``wrong_tier`` (team tier ≠ job tier); ``lacks_skill`` (job domain not among the
team's skills); ``country_not_allowed`` (policy ``allowed_countries`` set and the team's country
not in it); ``missing_certifications`` (the team lacks one of the policy's
``required_certifications``); ``at_capacity`` (the team's load, its ``queued`` plus
``in_progress`` jobs, has reached its ``capacity``); ``rejected`` (the team already rejected this
job); ``passed_through`` (the job already sat in this team's queue past its escalation timeout:
escalation never sends it back to a team it has left).

Score
-----
Each eligible team gets five components, each in 0..1, and a weighted mean of them::

    skill     = 1 if the domain is the team's only skill, else 0.5 + 0.5 / len(skills)
                (a specialist fits better than a generalist)
    quality   = the team's quality (moved by client feedback)
    load      = 1 - load / capacity (an idle team scores 1)
    cost      = (max_rate - rate) / (max_rate - min_rate) over the eligible teams
                (the cheapest scores 1; all equal → 1)
    timezone  = 1 if the team is within its working hours now, else
                max(0, 1 - hours_until_its_next_shift / horizon), where horizon is 24 h, or
                the hours left until ``due_at`` if sooner (a team that starts after the
                deadline earns nothing)

    score = Σ weight_c · component_c / Σ weight_c

When the job is due within ``urgent_within_hours``, the timezone weight is multiplied by
``urgent_timezone_multiplier``: an urgent job should go to a team at work now. Ties go to the
less loaded team, then by name and id, so a decision is reproducible. The clock is an argument
(``now``): nothing here reads the time.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from services.router.domain.taxonomy import Domain, Tier

# How far ahead we look for a team's next shift: a week covers every weekly pattern.
_DAYS_AHEAD = 8
# Beyond a day away, a team's next shift is no better than never for the timezone component.
_TIMEZONE_HORIZON_HOURS = 24.0


@dataclass(frozen=True)
class WorkingHours:
    start: time
    end: time
    days: frozenset[int]  # 0 = Monday ... 6 = Sunday (Python's weekday())

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> WorkingHours:
        return cls(
            start=parse_hhmm(str(value["start"])),
            end=parse_hhmm(str(value["end"])),
            days=frozenset(int(day) for day in value["days"]),
        )

    def shift_starts(self, local_now: datetime) -> Iterable[datetime]:
        """Local start times of shifts beginning from yesterday on, in order."""
        tz = local_now.tzinfo
        base = local_now.date()
        for offset in range(-1, _DAYS_AHEAD):
            day = base + timedelta(days=offset)
            if day.weekday() in self.days:
                yield datetime.combine(day, self.start, tzinfo=tz)

    def shift_length(self) -> timedelta:
        start = timedelta(hours=self.start.hour, minutes=self.start.minute)
        end = timedelta(hours=self.end.hour, minutes=self.end.minute)
        # end <= start is an overnight shift (e.g. 22:00-06:00), common for offshore teams.
        return end - start if end > start else end - start + timedelta(days=1)


def parse_hhmm(value: str) -> time:
    hours, _, minutes = value.partition(":")
    if len(hours) != 2 or len(minutes) != 2 or not (hours + minutes).isdigit():
        raise ValueError(f"time must be HH:MM, got {value!r}")
    return time(int(hours), int(minutes))


def shift_status(hours: WorkingHours, timezone: str, now: datetime) -> tuple[bool, float]:
    """(at work now, hours until the next shift starts; 0 when at work)."""
    local_now = now.astimezone(ZoneInfo(timezone))
    length = hours.shift_length()
    for start in hours.shift_starts(local_now):
        # Compare in UTC: local wall clocks jump at DST changes.
        start_utc = start.astimezone(ZoneInfo("UTC"))
        if start_utc <= now < start_utc + length:
            return True, 0.0
        if start_utc > now:
            return False, (start_utc - now).total_seconds() / 3600
    return False, float("inf")


@dataclass(frozen=True)
class TeamProfile:
    """What routing needs to know of a team, with its current load."""

    id: str
    name: str
    country: str
    timezone: str
    working_hours: WorkingHours
    tier: Tier
    skills: frozenset[str]
    certifications: frozenset[str]
    capacity: int
    hourly_rate: float
    quality: float
    active: bool
    load: int


@dataclass(frozen=True)
class DataPolicy:
    allowed_countries: frozenset[str] | None = None
    required_certifications: frozenset[str] = frozenset()
    require_e2e: bool = False
    # Four eyes before ``completed`` (services/router/reviews.py); the reviewer team, if the
    # tenant names one, else any other member of the job's own team.
    require_review: bool = False
    review_team_id: str | None = None

    @classmethod
    def from_json(cls, value: dict[str, Any] | None) -> DataPolicy:
        value = value or {}
        countries = value.get("allowed_countries")
        review_team = value.get("review_team_id")
        return cls(
            allowed_countries=None if countries is None else frozenset(countries),
            required_certifications=frozenset(value.get("required_certifications") or ()),
            require_e2e=bool(value.get("require_e2e", False)),
            require_review=bool(value.get("require_review", False)),
            review_team_id=None if review_team is None else str(review_team),
        )

    def to_json(self) -> dict[str, Any]:
        """Canonical JSON; the review fields appear only when set (absent means no review),
        so policies and decision records written before review existed read the same."""
        value: dict[str, Any] = {
            "allowed_countries": (
                None if self.allowed_countries is None else sorted(self.allowed_countries)
            ),
            "required_certifications": sorted(self.required_certifications),
            "require_e2e": self.require_e2e,
        }
        if self.require_review:
            value["require_review"] = True
        if self.review_team_id is not None:
            value["review_team_id"] = self.review_team_id
        return value

    def tightened_by(self, tenant: DataPolicy) -> DataPolicy:
        """This job's policy under its tenant's policy ``tenant``, which changed since the job
        was submitted: never looser than either (countries intersected, certifications
        unioned, ``require_e2e`` and ``require_review`` OR-ed), with the tenant's reviewer team,
        which is the tenant's alone. A loosening therefore reaches only new jobs (a job's own
        narrowing is not stored apart from the tenant's part). No country left means no team
        may take the job: it waits as unroutable for the client to cancel it."""
        if self.allowed_countries is None:
            countries = tenant.allowed_countries
        elif tenant.allowed_countries is None:
            countries = self.allowed_countries
        else:
            countries = self.allowed_countries & tenant.allowed_countries
        return DataPolicy(
            allowed_countries=countries,
            required_certifications=self.required_certifications | tenant.required_certifications,
            require_e2e=self.require_e2e or tenant.require_e2e,
            require_review=self.require_review or tenant.require_review,
            review_team_id=tenant.review_team_id,
        )


@dataclass(frozen=True)
class ScoreWeights:
    skill: float = 1.0
    quality: float = 1.0
    load: float = 1.0
    cost: float = 0.5
    timezone: float = 0.5
    urgent_within_hours: float = 12.0
    urgent_timezone_multiplier: float = 3.0

    def to_json(self) -> dict[str, float]:
        return {
            "skill": self.skill,
            "quality": self.quality,
            "load": self.load,
            "cost": self.cost,
            "timezone": self.timezone,
            "urgent_within_hours": self.urgent_within_hours,
            "urgent_timezone_multiplier": self.urgent_timezone_multiplier,
        }


@dataclass(frozen=True)
class RoutingRequest:
    tier: Tier
    domain: Domain
    policy: DataPolicy
    now: datetime
    due_at: datetime | None = None
    rejected_by: frozenset[str] = frozenset()
    # Teams the job was escalated away from (left unclaimed past the escalation timeout).
    passed_through: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Exclusion:
    team: TeamProfile
    codes: tuple[str, ...]
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Candidate:
    team: TeamProfile
    score: float
    components: dict[str, float]


@dataclass(frozen=True)
class Decision:
    eligible: list[Candidate]
    excluded: list[Exclusion]
    request: RoutingRequest
    weights: ScoreWeights
    urgent: bool
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def chosen(self) -> Candidate | None:
        return self.eligible[0] if self.eligible else None

    def to_record(self) -> dict[str, Any]:
        """The decision record stored with the assignment and served at ``.../routing``."""
        chosen = self.chosen
        return {
            "tier": self.request.tier.value,
            "domain": self.request.domain.value,
            "eligible": [
                {
                    "team_id": c.team.id,
                    "team_name": c.team.name,
                    "score": c.score,
                    "components": c.components,
                }
                for c in self.eligible
            ],
            "excluded": [
                {
                    "team_id": e.team.id,
                    "team_name": e.team.name,
                    "codes": list(e.codes),
                    "reasons": list(e.reasons),
                }
                for e in self.excluded
            ],
            "chosen": (
                None
                if chosen is None
                else {
                    "team_id": chosen.team.id,
                    "team_name": chosen.team.name,
                    "score": chosen.score,
                }
            ),
            "policy": self.request.policy.to_json(),
            "weights": self.weights.to_json(),
            "urgent": self.urgent,
            "at": self.request.now.isoformat(),
            **self.extra,
        }


def policy_refusals(
    *, country: str, certifications: Collection[str], policy: DataPolicy
) -> list[str]:
    """Why a team in ``country`` holding ``certifications`` may not see a job's data under
    ``policy`` (empty: it may). Routing applies the same filters (:func:`exclusion_reasons`);
    this is their check on a team already holding the job, whose data policy or whose own
    country or certifications may have changed since it was routed there."""
    refusals: list[str] = []
    allowed = policy.allowed_countries
    if allowed is not None and country not in allowed:
        refusals.append(f"country {country} is not allowed by the job's policy")
    missing = sorted(policy.required_certifications - set(certifications))
    if missing:
        refusals.append(f"missing certification(s): {', '.join(missing)}")
    return refusals


def exclusion_reasons(team: TeamProfile, request: RoutingRequest) -> list[tuple[str, str]]:
    """Every hard filter the team fails for this job, as (code, reason) pairs."""
    failures: list[tuple[str, str]] = []
    if not team.active:
        failures.append(("inactive", "team is inactive"))
    if team.tier is not request.tier:
        failures.append(
            ("wrong_tier", f"team works {team.tier.value}, the job is {request.tier.value}")
        )
    if request.domain.value not in team.skills:
        failures.append(("lacks_skill", f"team lacks the skill '{request.domain.value}'"))
    allowed = request.policy.allowed_countries
    if allowed is not None and team.country not in allowed:
        failures.append(
            (
                "country_not_allowed",
                f"country {team.country} not allowed by policy ({', '.join(sorted(allowed))})",
            )
        )
    missing = sorted(request.policy.required_certifications - team.certifications)
    if missing:
        failures.append(
            ("missing_certifications", f"missing certification(s): {', '.join(missing)}")
        )
    if team.load >= team.capacity:
        failures.append(("at_capacity", f"at capacity ({team.load}/{team.capacity})"))
    if team.id in request.rejected_by:
        failures.append(("rejected", "team already rejected this job"))
    if team.id in request.passed_through:
        failures.append(
            ("passed_through", "the job already passed through this team (escalated unclaimed)")
        )
    return failures


def group_reason(code: str, request: RoutingRequest) -> str:
    """The sentence for one exclusion code, the same for every team it excludes from this job
    (the stored record keeps one per code, not one per team: see domain/decision_record.py)."""
    if code == "wrong_tier":
        other = Tier.BPO if request.tier is Tier.KPO else Tier.KPO
        return f"team works {other.value}, the job is {request.tier.value}"
    if code == "lacks_skill":
        return f"team lacks the skill '{request.domain.value}'"
    if code == "country_not_allowed":
        allowed = sorted(request.policy.allowed_countries or ())
        return f"country not allowed by policy ({', '.join(allowed)})"
    if code == "missing_certifications":
        required = sorted(request.policy.required_certifications)
        return f"missing a certification the policy requires ({', '.join(required)})"
    if code == "at_capacity":
        return "at capacity (its queued plus in-progress jobs reached its capacity)"
    return {
        "inactive": "team is inactive",
        "rejected": "team already rejected this job",
        "passed_through": "the job already passed through this team (escalated unclaimed)",
    }.get(code, code.replace("_", " "))


def _is_urgent(request: RoutingRequest, weights: ScoreWeights) -> bool:
    if request.due_at is None:
        return False
    return request.due_at - request.now <= timedelta(hours=weights.urgent_within_hours)


def score_components(
    team: TeamProfile, request: RoutingRequest, *, min_rate: float, max_rate: float
) -> dict[str, float]:
    skill = 1.0 if team.skills == {request.domain.value} else 0.5 + 0.5 / max(1, len(team.skills))
    load = 1.0 - team.load / team.capacity if team.capacity > 0 else 0.0
    cost = 1.0 if max_rate <= min_rate else (max_rate - team.hourly_rate) / (max_rate - min_rate)
    at_work, hours_away = shift_status(team.working_hours, team.timezone, request.now)
    horizon = _TIMEZONE_HORIZON_HOURS
    if request.due_at is not None:
        horizon = min(horizon, (request.due_at - request.now).total_seconds() / 3600)
    if at_work:
        timezone = 1.0
    elif horizon <= 0 or hours_away >= horizon:
        timezone = 0.0
    else:
        timezone = 1.0 - hours_away / horizon
    return {
        "skill": round(skill, 4),
        "quality": round(team.quality, 4),
        "load": round(load, 4),
        "cost": round(cost, 4),
        "timezone": round(timezone, 4),
    }


def decide(
    *, request: RoutingRequest, teams: Sequence[TeamProfile], weights: ScoreWeights
) -> Decision:
    """Filter and rank ``teams`` for one job; the first eligible team is the choice."""
    eligible_teams: list[TeamProfile] = []
    excluded: list[Exclusion] = []
    for team in teams:
        failures = exclusion_reasons(team, request)
        if failures:
            excluded.append(
                Exclusion(
                    team=team,
                    codes=tuple(code for code, _ in failures),
                    reasons=tuple(reason for _, reason in failures),
                )
            )
        else:
            eligible_teams.append(team)
    urgent = _is_urgent(request, weights)
    tz_weight = weights.timezone * (weights.urgent_timezone_multiplier if urgent else 1.0)
    weight_of = {
        "skill": weights.skill,
        "quality": weights.quality,
        "load": weights.load,
        "cost": weights.cost,
        "timezone": tz_weight,
    }
    total_weight = sum(weight_of.values())
    rates = [team.hourly_rate for team in eligible_teams]
    candidates: list[Candidate] = []
    for team in eligible_teams:
        components = score_components(team, request, min_rate=min(rates), max_rate=max(rates))
        weighted = sum(weight_of[name] * value for name, value in components.items())
        score = round(weighted / total_weight, 4) if total_weight > 0 else 0.0
        candidates.append(Candidate(team=team, score=score, components=components))
    candidates.sort(key=lambda c: (-c.score, c.team.load, c.team.name, c.team.id))
    excluded.sort(key=lambda e: (e.team.name, e.team.id))
    return Decision(
        eligible=candidates, excluded=excluded, request=request, weights=weights, urgent=urgent
    )
