"""The router's settings (environment prefix ``TASKROUTE_ROUTER_``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.router.domain.queueing import PriorityDurations
from services.router.domain.routing import ScoreWeights
from shared.settings import ServiceSettings


class RouterSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_prefix="TASKROUTE_ROUTER_", env_file=".env", extra="ignore", populate_by_name=True
    )

    service_name: str = "router"
    port: int = 8001

    # "model": the trained classifier (services/router/classifier); "lexicon": the rule-based
    # classifier of the foundation, kept as a baseline the evaluation compares against.
    classifier: Literal["model", "lexicon"] = "model"
    # Below this confidence (the model's probability of its domain) a job goes to triage.
    # Recalibrated on the held-out split (`taskroute classifier evaluate`): from 0.5 up the model
    # is right at least two times in three in every confidence band (96 % overall, 86 % of jobs
    # routed); below it, it is wrong about as often as right, and a wrong queue costs more than
    # an operator's look. Same value as the lexicon's, now on a calibrated scale.
    triage_threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    # A KPO step rarely runs 15 minutes without a heartbeat; past that the member is gone.
    lease_seconds: int = Field(default=900, ge=1, le=86_400)
    # How often the sweeper requeues expired leases and retries unroutable jobs: a few seconds
    # of delay on an expired lease is invisible next to a 15-minute lease.
    sweep_interval_seconds: float = Field(default=5.0, gt=0, le=3600)
    # How long an unroutable job waits before routing is tried again (teams or capacity change).
    unroutable_retry_seconds: int = Field(default=60, ge=1, le=86_400)
    # Most jobs the sweeper handles per pass of each kind: bounds one transaction's length.
    sweep_batch_size: int = Field(default=100, ge=1, le=10_000)
    # How long a withdrawn submission is remembered (services/router/domain/withdrawals.py): a
    # submit with an outbox token older than this is refused as withdrawn. A week is far
    # beyond any request's life, and withdrawals (roll-backs after a crash) are rare. At least
    # two days: a client's keyed retries reuse their first outbox row's token for as long as
    # the gateway keeps the Idempotency-Key (24 h), and must not be refused meanwhile.
    withdrawal_retention_seconds: int = Field(default=7 * 86_400, ge=2 * 86_400, le=365 * 86_400)
    # How long after a tenant's policy change, or a team's, the sweeper holds the jobs to it
    # again: a submission that read the old policy just before the change may land after it
    # (on SQLite; PostgreSQL's lock orders them), and a claim that won a race with the change's
    # move keeps its job at the team until then. Minutes cover any request's life.
    policy_recheck_seconds: int = Field(default=300, ge=1, le=86_400)
    # A grant is used at once by the gateway on the vault; a minute covers one slow hop.
    grant_ttl_seconds: int = Field(default=60, ge=5, le=600)

    # Escalation (services/router/domain/queueing.py): a queued job nobody claims within its
    # window passes to the next eligible team. Claiming only takes a moment (the work itself
    # runs under a lease), so the window measures whether the team has anyone free: two hours
    # is a quarter of a shift for normal work; a high-priority job cannot lose more than half an
    # hour to a busy team; low-priority work may wait half a shift before it is moved around.
    escalation_seconds_high: int = Field(default=1800, ge=60, le=30 * 86_400)
    escalation_seconds: int = Field(default=7200, ge=60, le=30 * 86_400)
    escalation_seconds_low: int = Field(default=14_400, ge=60, le=30 * 86_400)
    # Aging: a team's queue is ordered by created_at minus these head starts. A high job goes
    # ahead of four hours' worth of low jobs and a normal one ahead of one hour's; a low job
    # that has waited longer than four hours is served before a fresh high one (no starvation).
    head_start_seconds_high: int = Field(default=14_400, ge=0, le=30 * 86_400)
    head_start_seconds_normal: int = Field(default=3600, ge=0, le=30 * 86_400)
    head_start_seconds_low: int = Field(default=0, ge=0, le=30 * 86_400)

    # Client feedback moves a team's quality by a Bayesian average
    # (services/router/domain/quality.py). A new team without a stated quality starts at 0.8,
    # "good until clients say otherwise"; the prior (the quality an operator set) weighs as
    # much as ten ratings, so one unhappy client cannot sink a team but thirty consistent
    # ratings carry three quarters of the weight.
    quality_prior_mean: float = Field(default=0.8, ge=0, le=1)
    quality_prior_weight: float = Field(default=10.0, ge=0, le=10_000)

    # Routing score weights (see services/router/domain/routing.py). Skill fit, quality and load
    # count fully; cost and time-zone fit break near-ties unless the job is urgent.
    weight_skill: float = Field(default=1.0, ge=0)
    weight_quality: float = Field(default=1.0, ge=0)
    weight_load: float = Field(default=1.0, ge=0)
    weight_cost: float = Field(default=0.5, ge=0)
    weight_timezone: float = Field(default=0.5, ge=0)
    # A job due within half a day cannot wait for a team that starts work tomorrow.
    urgent_within_hours: float = Field(default=12.0, ge=0)
    # How much more time-zone fit counts for an urgent job.
    urgent_timezone_multiplier: float = Field(default=3.0, ge=1)

    # Where the trained classifier's artefact is kept; default <data dir>/classifier. Several
    # routers may share one folder (artefacts are keyed by corpus digest, written atomically).
    classifier_cache_dir: Path | None = None

    def classifier_dir(self) -> Path:
        """Where the trained classifier's artefact is cached (keyed by the corpus digest)."""
        return self.classifier_cache_dir or self.data_dir / "classifier"

    def escalation_windows(self) -> PriorityDurations:
        return PriorityDurations(
            high=self.escalation_seconds_high,
            normal=self.escalation_seconds,
            low=self.escalation_seconds_low,
        )

    def head_starts(self) -> PriorityDurations:
        return PriorityDurations(
            high=self.head_start_seconds_high,
            normal=self.head_start_seconds_normal,
            low=self.head_start_seconds_low,
        )

    def score_weights(self) -> ScoreWeights:
        return ScoreWeights(
            skill=self.weight_skill,
            quality=self.weight_quality,
            load=self.weight_load,
            cost=self.weight_cost,
            timezone=self.weight_timezone,
            urgent_within_hours=self.urgent_within_hours,
            urgent_timezone_multiplier=self.urgent_timezone_multiplier,
        )
