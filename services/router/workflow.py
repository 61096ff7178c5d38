"""The router's use cases: submit, route, claim, lease, reject, complete, cancel, sweep.

Each method reads through the repositories, decides with the pure rules of ``domain/``, and
writes with conditional UPDATEs; it flushes but never commits (the request's session scope, or
the sweeper's transaction, does). Every status change passes :func:`ensure_transition` and
records exactly one event in the same transaction.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement
from sqlalchemy.exc import IntegrityError, InvalidRequestError
from sqlalchemy.ext.asyncio import AsyncSession

from services.router.db.models import (
    Job,
    JobEvent,
    JobFeedback,
    JobView,
    LabelledExample,
    Team,
)
from services.router.db.repository import (
    JobRepository,
    PolicyStance,
    TeamRepository,
    TenantPolicyRepository,
)
from services.router.domain import withdrawals
from services.router.domain.classifier import Classification, Classifier
from services.router.domain.decision_record import routing_view, stored_record, team_ids_of
from services.router.domain.errors import (
    ConfidentialDataNotFound,
    DuplicateTeam,
    FeedbackExists,
    InvalidRoute,
    InvalidTeam,
    InvalidTransition,
    JobIdConflict,
    JobNotFound,
    LeaseConflict,
    PreconditionFailed,
    StaleResult,
    SubmissionWithdrawn,
    TeamNotEligible,
    TeamNotFound,
)
from services.router.domain.grants import (
    GrantAction,
    GrantClaims,
    ResultReceipt,
    member_grant,
    tenant_result_grant,
)
from services.router.domain.lifecycle import JobStatus, ensure_transition, status_words
from services.router.domain.quality import updated_quality
from services.router.domain.queueing import (
    PriorityDurations,
    describe_duration,
    escalate_at,
    queue_order_at,
)
from services.router.domain.review import reviewer_refusals
from services.router.domain.routing import (
    DataPolicy,
    Decision,
    RoutingRequest,
    ScoreWeights,
    TeamProfile,
    WorkingHours,
    decide,
    exclusion_reasons,
    policy_refusals,
)
from services.router.domain.taxonomy import PRIORITY_RANK, Domain, Priority, Tier, tier_of
from services.router.metrics import record_decision
from services.router.settings import RouterSettings
from shared.db import new_id
from shared.result_receipts import lease_of

# Filters an operator's manual routing may not override: they protect the tenant's data policy
# and keep work away from switched-off teams. Tier, skill and capacity are the operator's call.
_MANUAL_HARD_FILTERS = frozenset({"inactive", "country_not_allowed", "missing_certifications"})
# Statuses an operator may route from: waiting for a decision, waiting for a team, or reassigning.
_MANUALLY_ROUTABLE = frozenset(
    {JobStatus.TRIAGE.value, JobStatus.UNROUTABLE.value, JobStatus.QUEUED.value}
)


# Statuses in which a job is in a team's hands: waiting in its queue, or leased to a member.
_HELD_BY_A_TEAM = frozenset({JobStatus.QUEUED.value, JobStatus.IN_PROGRESS.value})
# What a job in review holds of the work under review: cleared when it goes to be done anew.
_REVIEW_CLEARED: dict[str, Any] = {
    "result": None,
    "confidential_result_ref": None,
    "review_team_id": None,
    "review_submitted_by": None,
    "review_submitted_at": None,
}


def team_refusals(team: Team | None, policy: DataPolicy, *, reviewing: bool = False) -> list[str]:
    """Why ``team`` may not hold a job under ``policy`` (empty: it may): its data filters, and
    ``reviewing``, being active too (domain/review.py). A team that is gone may do neither."""
    if team is None:
        return ["the team no longer exists"]
    if reviewing:
        return reviewer_refusals(
            active=team.active,
            country=team.country,
            certifications=team.certifications,
            policy=policy,
        )
    return policy_refusals(country=team.country, certifications=team.certifications, policy=policy)


def _may_have_to_move(
    status: str, team: Team | None, reviewer: Team | None, policy: DataPolicy
) -> bool:
    """Whether a job in ``status`` at ``team`` (in review by ``reviewer``) may have to move
    under ``policy``. The one gate of :meth:`JobWorkflow._move_if_ineligible`, and what a
    recheck decides a whole stance of jobs by: a reason to move added in one place and not
    the other would hold back every move it names, in every test of it."""
    if status == JobStatus.IN_REVIEW.value:
        return bool(team_refusals(team, policy) or team_refusals(reviewer, policy, reviewing=True))
    if team is None or status not in _HELD_BY_A_TEAM:
        return False
    return bool(team_refusals(team, policy)) or (
        not team.active and status == JobStatus.QUEUED.value
    )


def _stated_policy(stance: PolicyStance) -> DataPolicy:
    return DataPolicy.from_json(json.loads(stance.policy))


def _stance_may_have_to_move(
    stance: PolicyStance, teams: Mapping[str, Team], policy: DataPolicy
) -> bool:
    team = teams.get(stance.team_id) if stance.team_id else None
    reviewer = teams.get(stance.review_team_id) if stance.review_team_id else None
    return _may_have_to_move(stance.status, team, reviewer, policy)


@dataclass(frozen=True)
class TenantPolicyChange:
    """What a tenant policy push did: stored (not an older or repeated version), how many
    active jobs it tightened, and how many it moved off a team that no longer meets it."""

    applied: bool
    tightened: int
    moved: int


@dataclass(frozen=True)
class JobSubmission:
    id: str
    tenant_id: str
    title: str
    description: str
    service: Domain | None
    priority: Priority
    due_at: datetime | None
    policy: DataPolicy
    metadata: dict[str, Any]
    confidential_ref: str | None
    callback_url: str | None
    # When the gateway acknowledged a job it held while the router was away: the job keeps
    # the creation time its client was shown, and its place in the queue.
    acknowledged_at: datetime | None = None
    # The gateway's outbox row for a submission with sealed data; the gateway may withdraw it
    # (JobWorkflow.withdraw), and then no job is stored from it.
    outbox_token: str | None = None
    # The tenant's version whose policy ``policy`` was made from (None: a gateway older than
    # versions, so any pushed policy may be newer).
    policy_version: int | None = None


def team_profile(team: Team, load: int) -> TeamProfile:
    return TeamProfile(
        id=team.id,
        name=team.name,
        country=team.country,
        timezone=team.timezone,
        working_hours=WorkingHours.from_json(team.working_hours),
        tier=Tier(team.tier),
        skills=frozenset(team.skills),
        certifications=frozenset(team.certifications),
        capacity=team.capacity,
        hourly_rate=team.hourly_rate,
        quality=team.quality,
        active=team.active,
        load=load,
    )


def _lease_cleared() -> dict[str, Any]:
    return {"lease_member_id": None, "lease_claimed_at": None, "lease_expires_at": None}


# How many times a submit re-decides after finding its chosen team filled by concurrent
# submits: each pass excludes one full team, so a few cover any burst but a pathological one.
CAPACITY_RECHECKS = 5


def _assignment(candidate_team: TeamProfile, score: float | None, now: datetime) -> dict[str, Any]:
    return {
        "team_id": candidate_team.id,
        "team_name": candidate_team.name,
        "assigned_at": now,
        "assignment_score": score,
        "retry_at": None,
    }


_UNASSIGNED: dict[str, Any] = {
    "team_id": None,
    "team_name": None,
    "assigned_at": None,
    "assignment_score": None,
}


class TeamProfileCache:
    """Team profiles (load 0) of one database, each with the team version it was built from.

    Kept per process (the app holds one) so a routing decision need not load every team as
    an entity: it reads each team's version with the loads (one light statement) and reuses a
    profile only if its version is still the team's. Every change of a team bumps its version
    (``TeamRepository.update_versioned``) in the changing transaction, so the first decision
    that can see the change, in any replica, rebuilds the profiles instead of using stale ones.
    """

    def __init__(self) -> None:
        self._profiles: dict[str, tuple[int, TeamProfile]] = {}

    def get(self, team_id: str, version: int) -> TeamProfile | None:
        cached = self._profiles.get(team_id)
        return cached[1] if cached is not None and cached[0] == version else None

    def replace_all(self, teams: Sequence[Team]) -> dict[str, TeamProfile]:
        """Rebuild from ``teams`` (every team there is; others are dropped); returns them."""
        self._profiles = {team.id: (team.version, team_profile(team, 0)) for team in teams}
        return {team_id: profile for team_id, (_, profile) in self._profiles.items()}


class JobWorkflow:
    """The job lifecycle over one session. ``now`` is passed in so tests control the clock.

    ``team_cache`` is shared between the workflows of one app (see :class:`TeamProfileCache`);
    without one, every decision builds the team profiles afresh."""

    def __init__(
        self,
        session: AsyncSession,
        *,
        settings: RouterSettings,
        classifier: Classifier,
        team_cache: TeamProfileCache | None = None,
    ) -> None:
        self.session = session
        self.settings = settings
        self.classifier = classifier
        self.team_cache = team_cache if team_cache is not None else TeamProfileCache()
        self.jobs = JobRepository(session)
        self.teams = TeamRepository(session)
        self.tenant_policies = TenantPolicyRepository(session)
        self.weights: ScoreWeights = settings.score_weights()

    # ----------------------------------------------------------------- reading

    async def get(self, job_id: str, *, tenant_id: str | None) -> Job:
        job = await self.jobs.get(job_id, tenant_id=tenant_id)
        if job is None:
            raise JobNotFound
        return job

    async def team_job(self, team_id: str, job_id: str) -> Job:
        """A job in a team's hands; another team's job looks like no job at all."""
        _, job = await self._team_and_job(team_id, job_id)
        return job

    async def _team_and_job(self, team_id: str, job_id: str) -> tuple[Team, Job]:
        team = await self.teams.get(team_id)
        if team is None:
            raise TeamNotFound
        job = await self.jobs.get_for_team(job_id, team_id=team_id)
        if job is None:
            raise JobNotFound
        return team, job

    async def policy_now(self, job: Job) -> DataPolicy:
        """The job's policy under its tenant's policy as last pushed, if that is newer than the
        one the job was last held to: a change that has not reached the job yet (a submission
        that crossed it, on SQLite, until the sweeper's recheck) holds its data meanwhile."""
        policy = DataPolicy.from_json(job.policy)
        tenant = await self.tenant_policies.get(job.tenant_id)
        if tenant is not None and tenant.version > (job.policy_version or 0):
            policy = policy.tightened_by(DataPolicy.from_json(tenant.policy))
        return policy

    async def require_eligible(self, job: Job, team: Team | None = None) -> DataPolicy:
        """The job's policy as it is now (:meth:`policy_now`); 409 ``team-not-eligible``
        unless the job's team meets it."""
        team = team or (await self.teams.get(job.team_id) if job.team_id else None)
        if team is None:
            raise TeamNotFound
        policy = await self.policy_now(job)
        refusals = team_refusals(team, policy)
        if refusals:
            raise TeamNotEligible(
                f"Team {team.name} no longer meets this job's data policy"
                f" ({'; '.join(refusals)}); the job goes to another team."
            )
        return policy

    async def _eligible_team_job(self, team_id: str, job_id: str) -> tuple[Job, DataPolicy]:
        """:meth:`team_job`, refused (409) when the team no longer meets the job's data policy.

        Routing checked the policy when it chose the team, but the team's country or
        certifications may have changed since (and its queued and leased jobs are then moved
        on, :meth:`reroute_ineligible`): this check on every claim and every read of the
        data holds whatever that move has not reached yet."""
        team, job = await self._team_and_job(team_id, job_id)
        return job, await self.require_eligible(job, team)

    async def routing_view(self, record: dict[str, Any]) -> dict[str, Any]:
        """A stored decision record as ``GET .../routing`` shows it (domain/decision_record.py)."""
        ids = team_ids_of(record)
        names = await self.teams.names(ids) if ids else {}
        return routing_view(record, names)

    # ----------------------------------------------------------------- routing

    async def profiles(self, *, work: Classification | None = None) -> list[TeamProfile]:
        """Every team with its load. With ``work``, loads are counted only for the teams able
        to do it (active, its tier, its skill): load decides nothing for the others, and
        counting every active job per decision made routing cost grow with the queue
        (BENCHMARKS.md, "Routing at scale"). Their profiles then carry load 0, so a team
        excluded for tier or skill is not also reported ``at_capacity``.

        The teams come from :attr:`team_cache` while their versions, read in this transaction
        with the loads, are those it holds; any change reloads them all (as an update is rare
        and a decision frequent)."""
        rows = await self.teams.versions_and_loads()
        cached = [self.team_cache.get(team_id, version) for team_id, version, _ in rows]
        if any(profile is None for profile in cached):
            fresh = self.team_cache.replace_all(await self.teams.all())
            # A team made between the two reads waits for the next decision (as it would have
            # had it come a moment later); one changed between them is used as just read.
            cached = [fresh.get(team_id) for team_id, _, _ in rows]
        profiles: list[TeamProfile] = []
        for profile, (_, _, load) in zip(cached, rows, strict=True):
            if profile is None:
                continue
            if work is not None and not _able(profile, work):
                load = 0
            profiles.append(team_profile_with_load(profile, load) if load else profile)
        return profiles

    def decide(
        self,
        *,
        classification: Classification,
        policy: DataPolicy,
        due_at: datetime | None,
        rejected_by: Sequence[str],
        teams: Sequence[TeamProfile],
        now: datetime,
        passed_through: Sequence[str] = (),
    ) -> Decision:
        request = RoutingRequest(
            tier=classification.tier,
            domain=classification.domain,
            policy=policy,
            now=now,
            due_at=due_at,
            rejected_by=frozenset(rejected_by),
            passed_through=frozenset(passed_through),
        )
        return decide(request=request, teams=teams, weights=self.weights)

    def is_confident(self, classification: Classification) -> bool:
        return classification.confidence >= self.settings.triage_threshold

    async def _store_decision(self, job_id: str, decision: Decision, outcome: str) -> None:
        record_decision(outcome)
        chosen = decision.chosen
        record = stored_record(decision)
        record["outcome"] = outcome
        if outcome != "queued":
            # Teams were ranked for information only; nothing was assigned.
            record["chosen"] = None
        await self.jobs.add_decision(
            job_id=job_id,
            team_id=chosen.team.id if chosen and outcome == "queued" else None,
            record=record,
            created_at=decision.request.now,
        )

    def _escalate_at(self, job: Job, now: datetime) -> datetime:
        return escalate_at(
            queued_at=now,
            priority=Priority(job.priority),
            windows=self.settings.escalation_windows(),
        )

    async def _move(
        self,
        job: Job,
        *,
        to: JobStatus,
        values: dict[str, Any],
        event_type: str,
        actor: str,
        reason: str | None,
        now: datetime,
        conditions: Sequence[ColumnElement[bool]] = (),
        lost_race: Exception | None = None,
        request_id: str | None = None,
    ) -> Job:
        """One status change of ``job`` (as read), conditional on it not having moved since;
        its event names the keyed request that made it (``request_id``), if any."""
        moved = await self._move_into(
            None,
            job,
            to=to,
            values=values,
            event_type=event_type,
            actor=actor,
            reason=reason,
            now=now,
            conditions=conditions,
            lost_race=lost_race,
            request_id=request_id,
        )
        assert moved is not None  # no team to fill up
        return moved

    async def _move_into(
        self,
        team: TeamProfile | None,
        job: Job,
        *,
        to: JobStatus,
        values: dict[str, Any],
        event_type: str,
        actor: str,
        reason: str | None,
        now: datetime,
        conditions: Sequence[ColumnElement[bool]] = (),
        lost_race: Exception | None = None,
        request_id: str | None = None,
    ) -> Job | None:
        """:meth:`_move`, into ``team``'s queue: undone (``None``) if it left the team over
        its capacity.

        The loads a decision ranks by were read before this transaction wrote anything, so
        concurrent moves (rejects, sweeper passes, submits) may all have seen room in the same
        queue. Read after this job's move, which counted it (and on PostgreSQL holds the team's
        counter row until commit; on SQLite the write lock), the load is exact. The caller
        decides again with the team full.

        On PostgreSQL the move runs in a savepoint, so an undo also gives back the row locks it
        took (the two teams' counter rows): a transaction that then tries a third team must not
        hold a full team's row meanwhile, or two rejects crossing between three teams deadlock.
        SQLite has one writer and no row locks, and its savepoints are unsafe here (the first
        write of a transaction, released, would commit it): the move is undone by restoring
        the columns it changed.
        """
        current = JobStatus(job.status)
        ensure_transition(current, to)
        if to is JobStatus.QUEUED:
            # Every arrival in a team's queue (re)starts the escalation clock.
            values = {"escalate_at": self._escalate_at(job, now), **values}
        else:
            values = {**values, "escalate_at": None}
        savepoint = None
        before: dict[str, Any] = {}
        if team is not None:
            if self.jobs.dialect == "postgresql":
                savepoint = await self.session.begin_nested()
            # What the move changes, as it was (the row object is refreshed in place by the
            # update): the SQLite undo restores it, the PostgreSQL one compares event_seq.
            changed = (*values, "status", "event_seq", "updated_at")
            before = {key: getattr(job, key) for key in changed}
        updated = await self.jobs.transition(
            job.id,
            expected_status=current.value,
            conditions=conditions,
            values={**values, "status": to.value},
            now=now,
        )
        if updated is None:
            if savepoint is not None:
                await savepoint.commit()  # nothing was changed
            raise lost_race or InvalidTransition(
                "The job changed while this request ran; read it again and retry."
            )
        if team is not None:
            load = await self.jobs.team_load(team.id)
            if load > team.capacity:
                if savepoint is not None:
                    await savepoint.rollback()
                    # The rollback gave the job's row back too: a claim waiting for it may have
                    # committed since. As it is now, for the next decision; changed (or gone,
                    # if something outside the workflow deleted it), we lost.
                    try:
                        await self.session.refresh(job)
                        moved_meanwhile = job.event_seq != before["event_seq"]
                    except InvalidRequestError:  # "could not refresh": the row is gone
                        moved_meanwhile = True
                    if moved_meanwhile:
                        raise lost_race or InvalidTransition(
                            "The job changed while this request ran; read it again and retry."
                        )
                else:
                    await self.jobs.touch(job.id, conditions=(), values=before)
                return None
        if savepoint is not None:
            await savepoint.commit()
        await self.jobs.add_event(
            JobEvent(
                job_id=job.id,
                seq=updated.event_seq,
                at=now,
                type=event_type,
                from_status=current.value,
                to_status=to.value,
                actor=actor,
                reason=reason,
                request_id=request_id,
            )
        )
        return updated

    async def _route_or_park(
        self,
        job: Job,
        *,
        classification: Classification,
        actor: str,
        now: datetime,
        event_type: str,
        reason_prefix: str = "",
        conditions: Sequence[ColumnElement[bool]] = (),
        extra_values: dict[str, Any] | None = None,
        rejected_by: Sequence[str] | None = None,
        request_id: str | None = None,
    ) -> Job:
        """Send ``job`` to its best eligible team (queued) or park it as unroutable."""
        teams = await self.profiles(work=classification)
        values = dict(extra_values or {})
        for _ in range(len(teams) + 1):  # each round finds one more team full
            decision = self.decide(
                classification=classification,
                policy=DataPolicy.from_json(job.policy),
                due_at=job.due_at,
                rejected_by=job.rejected_team_ids if rejected_by is None else rejected_by,
                teams=teams,
                now=now,
                passed_through=job.passed_team_ids,
            )
            chosen = decision.chosen
            if chosen is None:
                break
            updated = await self._move_into(
                chosen.team,
                job,
                to=JobStatus.QUEUED,
                values={**values, **_assignment(chosen.team, chosen.score, now)},
                event_type=event_type,
                actor=actor,
                reason=f"{reason_prefix}routed to {chosen.team.name} (score {chosen.score:g}"
                f" among {len(decision.eligible)} eligible)",
                now=now,
                conditions=conditions,
                request_id=request_id,
            )
            if updated is not None:
                await self._store_decision(job.id, decision, "queued")
                return updated
            teams = _filled(teams, chosen.team)
        retry_at = now + timedelta(seconds=self.settings.unroutable_retry_seconds)
        updated = await self._move(
            job,
            to=JobStatus.UNROUTABLE,
            values={**values, **_UNASSIGNED, "retry_at": retry_at},
            event_type="unroutable" if event_type == "routed" else event_type,
            actor=actor,
            reason=f"{reason_prefix}no eligible team among {len(decision.excluded)}",
            now=now,
            conditions=conditions,
            request_id=request_id,
        )
        await self._store_decision(job.id, decision, "unroutable")
        return updated

    # ----------------------------------------------------------------- submit

    async def submit(self, submission: JobSubmission, *, now: datetime) -> tuple[JobView, bool]:
        """Store, classify and route a job; ``(job, created)``. The same id again is a no-op.

        Decided before anything is written, so the job row is inserted once, already in its
        first status (queued, triage or unroutable), and its two events (``created``, then the
        routing) go in one multi-row insert: seven statements per routed submit (two reads of
        teams and loads, the tenant's policy, after its lock on PostgreSQL, the job, its
        team's load again, the events, the decision record)."""
        # No read first: the insert itself says whether the id is new (a retry is rare, a read
        # on every submit is not); a retry's decision is thrown away unwritten.
        classification = self.classifier.classify(
            title=submission.title,
            description=submission.description,
            service_hint=submission.service.value if submission.service else None,
        )
        teams = await self.profiles(work=classification)
        tenant = await self.tenant_policies.for_submission(submission.tenant_id)
        if tenant is not None and tenant.version > (submission.policy_version or 0):
            # The gateway read the tenant's policy when it took the job, before a change it
            # has since pushed (or, holding the job while the router was away, long before).
            tightened = submission.policy.tightened_by(DataPolicy.from_json(tenant.policy))
            submission = replace(submission, policy=tightened, policy_version=tenant.version)
        decision, first = self._route_new(classification, submission, teams, now=now)
        status, outcome, event_type, actor, reason, values = first
        ensure_transition(JobStatus.PENDING, status)
        # Never in the future: the two services' clocks may disagree a little.
        created_at = min(submission.acknowledged_at or now, now)
        job = await self.jobs.add_if_new(
            {
                "id": submission.id,
                "tenant_id": submission.tenant_id,
                "status": status.value,
                "title": submission.title,
                "description": submission.description,
                "service": submission.service.value if submission.service else None,
                "priority": submission.priority.value,
                "priority_rank": PRIORITY_RANK[submission.priority],
                "queue_order_at": queue_order_at(
                    created_at=created_at,
                    priority=submission.priority,
                    head_starts=self.settings.head_starts(),
                ),
                "due_at": submission.due_at,
                "job_metadata": submission.metadata,
                "policy": submission.policy.to_json(),
                "policy_version": submission.policy_version,
                "callback_url": submission.callback_url,
                "confidential_ref": submission.confidential_ref,
                "tier": classification.tier.value,
                "domain": classification.domain.value,
                "confidence": classification.confidence,
                "reasons": classification.reasons,
                "rejected_team_ids": [],
                "passed_team_ids": [],  # given, not defaulted: see shared.statements
                "event_seq": 2,
                "created_at": created_at,
                "updated_at": now,
                **values,
            }
        )
        if job is None:
            # The id exists (a retry, or a concurrent submission won the insert): its job.
            stored = await self.jobs.get(submission.id)
            if stored is None:
                raise InvalidTransition("The job changed while this request ran; retry.")
            return self._same_submission(stored, submission), False
        if submission.outbox_token is not None and (
            withdrawals.is_expired(submission.outbox_token, now=now, retention=self._retention)
            or await self.jobs.is_withdrawn(submission.id, outbox_token=submission.outbox_token)
        ):
            # Raising rolls the insert back: the job's sealed data is being discarded.
            raise SubmissionWithdrawn(
                "The gateway rolled this submission back; submit the job again."
            )
        for _ in range(CAPACITY_RECHECKS):
            chosen = decision.chosen
            if status is not JobStatus.QUEUED or chosen is None:
                break
            # The loads were read before this transaction wrote anything, so concurrent
            # submits may all have seen room on the same team. Read now, after this job's
            # insert (which counted it, and on PostgreSQL holds the team's counter row until
            # commit; on SQLite the write lock), the load is exact.
            load = await self.jobs.team_load(chosen.team.id)
            if load <= chosen.team.capacity:
                break
            teams = _filled(teams, chosen.team)
            decision, first = self._route_new(classification, submission, teams, now=now)
            status, outcome, event_type, actor, reason, values = first
            rerouted = await self.jobs.touch(
                job.id,
                conditions=(),
                values={
                    "status": status.value,
                    **_UNASSIGNED,
                    "escalate_at": None,
                    "retry_at": None,
                    **values,
                },
            )
            if rerouted is None:
                raise InvalidTransition("The job changed while this request ran; retry.")
            job = rerouted
        await self.jobs.add_events(
            [
                {
                    "job_id": job.id,
                    "seq": 1,
                    "at": created_at,
                    "type": "created",
                    "from_status": None,
                    "to_status": JobStatus.PENDING.value,
                    "actor": f"client:{submission.tenant_id}",
                    "reason": "submitted",
                },
                {
                    "job_id": job.id,
                    "seq": 2,
                    "at": now,
                    "type": event_type,
                    "from_status": JobStatus.PENDING.value,
                    "to_status": status.value,
                    "actor": actor,
                    "reason": reason,
                },
            ]
        )
        await self._store_decision(job.id, decision, outcome)
        return job, True

    def _route_new(
        self,
        classification: Classification,
        submission: JobSubmission,
        teams: Sequence[TeamProfile],
        *,
        now: datetime,
    ) -> tuple[Decision, tuple[JobStatus, str, str, str, str, dict[str, Any]]]:
        """The routing decision for a new job among ``teams``, and its first status by it:
        status, decision outcome, event type, actor, reason, and the job's values that go
        with it."""
        decision = self.decide(
            classification=classification,
            policy=submission.policy,
            due_at=submission.due_at,
            rejected_by=(),
            teams=teams,
            now=now,
        )
        chosen = decision.chosen
        if not self.is_confident(classification):
            reason = (
                f"confidence {classification.confidence:.2f} is below the threshold"
                f" {self.settings.triage_threshold:.2f}"
            )
            return decision, (JobStatus.TRIAGE, "triage", "triaged", "router", reason, {})
        if chosen is not None:
            reason = (
                f"routed to {chosen.team.name} (score {chosen.score:g}"
                f" among {len(decision.eligible)} eligible)"
            )
            values = {
                **_assignment(chosen.team, chosen.score, now),
                "escalate_at": escalate_at(
                    queued_at=now,
                    priority=submission.priority,
                    windows=self.settings.escalation_windows(),
                ),
            }
            return decision, (JobStatus.QUEUED, "queued", "routed", "router", reason, values)
        reason = f"no eligible team among {len(decision.excluded)}"
        values = {"retry_at": now + timedelta(seconds=self.settings.unroutable_retry_seconds)}
        return decision, (
            JobStatus.UNROUTABLE,
            "unroutable",
            "unroutable",
            "router",
            reason,
            values,
        )

    async def withdraw(
        self, job_id: str, *, tenant_id: str, outbox_token: str, now: datetime
    ) -> bool:
        """Withdraw the gateway's submission ``outbox_token`` of ``job_id`` unless the job is
        already stored; True when withdrawn: from now on, no submit with that token stores the
        job, so the gateway may have the vault discard its sealed data."""
        return await self.jobs.withdraw(
            job_id, tenant_id=tenant_id, outbox_token=outbox_token, now=now
        )

    @property
    def _retention(self) -> timedelta:
        return timedelta(seconds=self.settings.withdrawal_retention_seconds)

    async def forget_withdrawals(self, *, now: datetime) -> int:
        """Delete withdrawals old enough that their tokens are refused anyway (see
        services/router/domain/withdrawals.py); how many."""
        return await self.jobs.forget_withdrawals(
            before=withdrawals.forget_before(now, self._retention),
            limit=self.settings.sweep_batch_size,
        )

    @staticmethod
    def _same_submission(stored: Job, submission: JobSubmission) -> Job:
        if stored.tenant_id != submission.tenant_id:
            # Never reveal another tenant's job; the gateway makes ids, so this is a bug there.
            raise JobIdConflict("This job id is already in use.")
        return stored

    # ----------------------------------------------------------------- client actions

    async def cancel(
        self,
        job_id: str,
        *,
        tenant_id: str,
        reason: str | None,
        now: datetime,
        request_id: str | None = None,
    ) -> Job:
        job = await self.get(job_id, tenant_id=tenant_id)
        return await self._move(
            job,
            to=JobStatus.CANCELLED,
            values=_lease_cleared(),
            event_type="cancelled",
            actor=f"client:{tenant_id}",
            reason=reason or "cancelled by the client",
            now=now,
            request_id=request_id,
        )

    async def result(self, job_id: str, *, tenant_id: str) -> Job:
        job = await self.get(job_id, tenant_id=tenant_id)
        if job.status != JobStatus.COMPLETED.value:
            # A cancelled job will never have one: "yet" would promise it.
            later = "." if job.status == JobStatus.CANCELLED.value else " yet."
            raise InvalidTransition(
                f"The job is {status_words(job.status)}; it has no result{later}"
            )
        return job

    async def result_grant(self, job_id: str, *, tenant_id: str) -> GrantClaims:
        job = await self.result(job_id, tenant_id=tenant_id)
        if job.confidential_result_ref is None:
            raise ConfidentialDataNotFound("This job's result has no confidential part.")
        return tenant_result_grant(
            tenant_id=job.tenant_id, job_id=job.id, result_ref=job.confidential_result_ref
        )

    async def add_feedback(
        self, job_id: str, *, tenant_id: str, rating: int, comment: str | None, now: datetime
    ) -> JobFeedback:
        """The client's rating of its completed job; it moves the team's quality (once)."""
        job = await self.get(job_id, tenant_id=tenant_id)
        if job.status != JobStatus.COMPLETED.value:
            raise InvalidTransition(
                f"The job is {status_words(job.status)}; feedback is taken for completed jobs only."
            )
        # Insert first: the unique job id decides between concurrent feedbacks, and on SQLite
        # the first write takes the database's write lock before the team is read below.
        feedback_id = await self.jobs.add_feedback_if_new(
            {
                "job_id": job.id,
                "tenant_id": tenant_id,
                "team_id": job.team_id,
                "rating": rating,
                "comment": comment,
                "created_at": now,
            }
        )
        if feedback_id is None:
            raise FeedbackExists("This job has feedback already; a job is rated once.")
        quality_before = quality_after = None
        team = await self.teams.get_for_update(job.team_id) if job.team_id else None
        if team is not None:
            quality_before = team.quality
            quality_after = updated_quality(
                quality=team.quality,
                ratings_so_far=team.quality_rating_count,
                rating=rating,
                prior_weight=self.settings.quality_prior_weight,
            )
            moved = await self.teams.update_versioned(
                team.id,
                expected_version=team.version,
                values={
                    "quality": quality_after,
                    "quality_rating_count": team.quality_rating_count + 1,
                    "updated_at": now,
                },
            )
            if moved is None:
                raise InvalidTransition("The team changed while this request ran; retry.")
        updated = await self.jobs.transition(
            job.id, expected_status=JobStatus.COMPLETED.value, values={}, now=now
        )
        if updated is None:
            raise InvalidTransition("The job changed while this request ran; retry.")
        await self.jobs.add_event(
            JobEvent(
                job_id=job.id,
                seq=updated.event_seq,
                at=now,
                type="feedback",
                # Not a status change: the job stays completed.
                from_status=None,
                to_status=None,
                actor=f"client:{tenant_id}",
                reason=f"rated {rating}/5",
            )
        )
        return await self.jobs.set_feedback_quality(
            feedback_id, quality_before=quality_before, quality_after=quality_after
        )

    # ----------------------------------------------------------------- member actions

    def _live_lease(self, member_id: str, now: datetime) -> list[ColumnElement[bool]]:
        return [Job.lease_member_id == member_id, Job.lease_expires_at > now]

    @staticmethod
    def _lease(job: Job) -> str:
        """The name of the job's lease (shared.result_receipts), which binds a sealed result."""
        if job.lease_claimed_at is None:  # set with every lease: only damage leaves it out
            raise LeaseConflict("The job's lease has no start; claim the job again.")
        return lease_of(job.lease_claimed_at, job.event_seq)

    @staticmethod
    def _require_live_lease(job: Job, member_id: str, now: datetime) -> None:
        if job.status != JobStatus.IN_PROGRESS.value:
            raise LeaseConflict(f"The job is {status_words(job.status)}, not in progress.")
        if job.lease_member_id != member_id:
            raise LeaseConflict("Another member holds this job's lease.")
        if job.lease_expires_at is None or job.lease_expires_at <= now:
            raise LeaseConflict("The lease has expired; claim the job again.")

    async def claim(
        self,
        team_id: str,
        job_id: str,
        *,
        member_id: str,
        now: datetime,
        request_id: str | None = None,
    ) -> Job:
        team, job = await self._team_and_job(team_id, job_id)
        await self.require_eligible(job, team)
        if job.status != JobStatus.QUEUED.value:
            raise InvalidTransition(
                f"The job is {status_words(job.status)}; only a queued job can be claimed."
            )
        if not team.active:
            # Its queued jobs were handed on when it was paused; one the move has not reached
            # yet is not taken now. A lease already held is worked to its end.
            raise TeamNotEligible(
                f"Team {team.name} is paused: it takes no new jobs; the job goes to another team."
            )
        return await self._move(
            job,
            to=JobStatus.IN_PROGRESS,
            values={
                "lease_member_id": member_id,
                "lease_claimed_at": now,
                "lease_expires_at": now + timedelta(seconds=self.settings.lease_seconds),
                # A result sealed under an earlier lease is that holder's work, sent back to
                # them and then given up: it must not ride along with the new holder's
                # submission (and reach review with someone else's name on it).
                "confidential_result_ref": None,
            },
            event_type="claimed",
            actor=f"member:{member_id}",
            reason=f"lease for {self.settings.lease_seconds} s",
            now=now,
            conditions=[Job.team_id == team_id],
            lost_race=InvalidTransition("Another member claimed this job first."),
            request_id=request_id,
        )

    async def heartbeat(self, team_id: str, job_id: str, *, member_id: str, now: datetime) -> Job:
        job = await self.team_job(team_id, job_id)
        self._require_live_lease(job, member_id, now)
        updated = await self.jobs.touch(
            job.id,
            conditions=[
                Job.status == JobStatus.IN_PROGRESS.value,
                Job.team_id == team_id,
                *self._live_lease(member_id, now),
            ],
            values={
                "lease_expires_at": now + timedelta(seconds=self.settings.lease_seconds),
                "updated_at": now,
            },
        )
        if updated is None:
            raise LeaseConflict("The lease changed while this request ran.")
        return updated

    async def release(
        self,
        team_id: str,
        job_id: str,
        *,
        member_id: str,
        reason: str | None,
        now: datetime,
        request_id: str | None = None,
    ) -> Job:
        job = await self.team_job(team_id, job_id)
        self._require_live_lease(job, member_id, now)
        return await self._move(
            job,
            to=JobStatus.QUEUED,
            values=_lease_cleared(),
            event_type="released",
            actor=f"member:{member_id}",
            reason=reason or "released by the member",
            now=now,
            conditions=[Job.team_id == team_id, *self._live_lease(member_id, now)],
            lost_race=LeaseConflict("The lease changed while this request ran."),
            request_id=request_id,
        )

    async def complete(
        self,
        team_id: str,
        job_id: str,
        *,
        member_id: str,
        result: Any,
        confidential_result: ResultReceipt | None,
        now: datetime,
        request_id: str | None = None,
    ) -> Job:
        """Finish the job, or send it to review; ``confidential_result`` is the vault's
        verified receipt for a sealed result, which must be for this job and its lease."""
        job = await self.team_job(team_id, job_id)
        self._require_live_lease(job, member_id, now)
        confidential_result_ref = None
        if confidential_result is not None:
            if (confidential_result.tenant_id, confidential_result.job_id) != (
                job.tenant_id,
                job.id,
            ) or confidential_result.lease != self._lease(job):
                # Sealed under a lease that has ended (a kept grant), or for another job.
                raise StaleResult(
                    "The confidential result was not sealed under this lease; send it again."
                )
            confidential_result_ref = confidential_result.ref
        conditions = [
            Job.team_id == team_id,
            # The lease the receipt was checked against: a release and re-claim in between
            # (the same member, and at a still clock the same start) would change event_seq.
            Job.event_seq == job.event_seq,
            *self._live_lease(member_id, now),
        ]
        lost_race = LeaseConflict("The lease changed while this request ran.")
        # As it is now: a pushed change that asks for review holds this completion for it even
        # before the job has been held to the change.
        policy = await self.policy_now(job)
        if policy.require_review:
            # Four eyes: the result is held (the client sees no result) until a reviewer
            # approves it. After a send-back without a new confidential result, the one sealed
            # before stays; a new one (sealed under the send-back's lease) replaces it.
            review_team_id, reviewers = await self._review_team(job, policy)
            return await self._move(
                job,
                to=JobStatus.IN_REVIEW,
                values={
                    **_lease_cleared(),
                    "result": result,
                    "confidential_result_ref": confidential_result_ref
                    or job.confidential_result_ref,
                    "review_team_id": review_team_id,
                    "review_submitted_by": member_id,
                    "review_submitted_at": now,
                },
                event_type="submitted_for_review",
                actor=f"member:{member_id}",
                reason=f"the tenant's policy requires review before completion; {reviewers}",
                now=now,
                conditions=conditions,
                lost_race=lost_race,
                request_id=request_id,
            )
        return await self._move(
            job,
            to=JobStatus.COMPLETED,
            values={
                **_lease_cleared(),
                "result": result,
                "confidential_result_ref": confidential_result_ref,
                "completed_at": now,
            },
            event_type="completed",
            actor=f"member:{member_id}",
            reason=None,
            now=now,
            conditions=conditions,
            lost_race=lost_race,
            request_id=request_id,
        )

    async def _review_team(self, job: Job, policy: DataPolicy) -> tuple[str, str]:
        """The team that reviews ``job`` and who in it, in words for the event.

        The policy's reviewer team when it exists and may see the job (active, allowed
        country, required certifications); otherwise the job's own team, whose *other* members
        review: the work is never left waiting for a team that may not look at it.
        """
        assert job.team_id is not None  # in progress: assigned
        own = f"reviewed by another member of {job.team_name or job.team_id}"
        if policy.review_team_id is None or policy.review_team_id == job.team_id:
            return job.team_id, own
        reviewer = await self.teams.get(policy.review_team_id)
        if reviewer is None:
            return job.team_id, f"{own} (the policy's reviewer team does not exist)"
        refusals = team_refusals(reviewer, policy, reviewing=True)
        if refusals:
            return job.team_id, f"{own} (reviewer team {reviewer.name}: {'; '.join(refusals)})"
        return reviewer.id, f"reviewed by team {reviewer.name}"

    async def reject(
        self,
        team_id: str,
        job_id: str,
        *,
        member_id: str | None,
        reason: str,
        now: datetime,
        request_id: str | None = None,
    ) -> Job:
        """The team gives the job back: it goes to the next eligible team, never to this one."""
        job = await self.team_job(team_id, job_id)
        conditions: list[ColumnElement[bool]] = [Job.team_id == team_id]
        if job.status == JobStatus.IN_PROGRESS.value:
            # Work under way may only be handed back by the member doing it.
            if member_id is None:
                raise LeaseConflict("The job is in progress; only its lease holder may reject it.")
            self._require_live_lease(job, member_id, now)
            conditions += self._live_lease(member_id, now)
        elif job.status != JobStatus.QUEUED.value:
            raise InvalidTransition(
                f"The job is {status_words(job.status)}; only a team's job can be rejected."
            )
        rejected_by = sorted({*job.rejected_team_ids, team_id})
        team_name = job.team_name or team_id
        return await self._route_or_park(
            job,
            classification=_stored_classification(job),
            actor=f"member:{member_id}" if member_id else "operator",
            now=now,
            event_type="rejected",
            reason_prefix=f"rejected by {team_name} ({reason}); ",
            conditions=conditions,
            extra_values={**_lease_cleared(), "rejected_team_ids": rejected_by},
            rejected_by=rejected_by,
            request_id=request_id,
        )

    async def grant(
        self, team_id: str, job_id: str, *, member_id: str, action: GrantAction, now: datetime
    ) -> GrantClaims:
        """Claims for a vault grant, only for the member holding the job's live lease, and
        to open the job's data only while their team meets its data policy."""
        if action is GrantAction.OPEN:
            job, policy = await self._eligible_team_job(team_id, job_id)
        else:
            job = await self.team_job(team_id, job_id)
            policy = DataPolicy.from_json(job.policy)
        self._require_live_lease(job, member_id, now)
        if action is GrantAction.OPEN and job.confidential_ref is None:
            raise ConfidentialDataNotFound("This job has no confidential data.")
        return member_grant(
            action=action,
            tenant_id=job.tenant_id,
            job_id=job.id,
            member_id=member_id,
            confidential_ref=job.confidential_ref,
            # A pushed change the job has not been held to yet counts: e2e once asked for, is.
            require_e2e=policy.require_e2e,
            lease=self._lease(job),
        )

    async def reroute_ineligible(
        self, team: Team, *, now: datetime, teams: Mapping[str, Team] | None = None
    ) -> int:
        """Move the jobs ``team`` holds (queued, or leased to one of its members) whose data
        policy it no longer meets to their best eligible team, or park them as unroutable;
        returns how many moved. A lease is ended: its holder may no longer read the data. A
        paused team's queued jobs move too, and the reviews it holds; its leases run on.

        A team holds at most its capacity in such jobs, so this runs in the request that
        changed the team. Each move is conditional on the job still being this team's in the
        status read; a job that moved meanwhile (claimed, released, completed) is left to the
        check on every claim and read (:meth:`_eligible_team_job`)."""
        if teams is None:
            teams = {other.id: other for other in await self.teams.all()}
        teams = {**teams, team.id: team}
        stances = {
            stance
            for stance in await self.jobs.held_stances(team.id)
            if _stance_may_have_to_move(stance, teams, _stated_policy(stance))
        }
        moved = 0
        for job in await self.jobs.held_in(team.id, stances):
            moved += await self._move_if_ineligible(
                job, team, DataPolicy.from_json(job.policy), now=now
            )
        return moved

    async def _move_if_ineligible(
        self, job: Job, team: Team | None, policy: DataPolicy, *, now: datetime
    ) -> bool:
        """Move ``job`` (held by ``team``, or in review) if it may no longer stand where it
        is under ``policy``; whether it moved. Only a job :func:`_may_have_to_move` names
        moves."""
        if job.status == JobStatus.IN_REVIEW.value:
            working = await self.teams.get(job.team_id) if job.team_id else None
            reviewer = await self.teams.get(job.review_team_id) if job.review_team_id else None
            if not _may_have_to_move(job.status, working, reviewer, policy):
                return False
            return await self._move_review_if_ineligible(job, policy, now=now)
        if team is None or not _may_have_to_move(job.status, team, None, policy):
            return False
        return await self._hand_on_if_ineligible(job, team, policy, now=now)

    async def _move_review_if_ineligible(
        self, job: Job, policy: DataPolicy, *, now: datetime
    ) -> bool:
        """A job in review that its policy no longer lets stand where it is. Work done by a team
        the policy now excludes is routed to be done anew, whoever reviews it (approving it, or
        sending it back to that team, would go against the policy). Otherwise, when its
        reviewer team no longer meets ``policy``, the review moves to the team that may review
        it now (the policy's reviewer team, else the job's own) or, if neither may, the job is
        routed anew too; whether it moved."""
        conditions = [Job.review_team_id == job.review_team_id, Job.event_seq == job.event_seq]
        working = await self.teams.get(job.team_id) if job.team_id else None
        excluded = team_refusals(working, policy)
        if excluded:
            name = working.name if working else job.team_id
            try:
                await self._reroute(
                    job,
                    why=f"{name}, which did the work, no longer meets the job's data policy"
                    f" ({'; '.join(excluded)}); the work is to be done anew",
                    conditions=conditions,
                    extra_values={**_lease_cleared(), **_REVIEW_CLEARED},
                    now=now,
                )
            except InvalidTransition:
                return False
            return True
        current = await self.teams.get(job.review_team_id) if job.review_team_id else None
        refusals = team_refusals(current, policy, reviewing=True)
        if not refusals:
            return False
        left = f"{current.name if current else job.review_team_id} may no longer review it"
        left += f" ({'; '.join(refusals)})"
        team_id, reviewers = await self._review_team(job, policy)
        candidate = await self.teams.get(team_id)
        try:
            if not team_refusals(candidate, policy, reviewing=True):
                await self._move(
                    job,
                    to=JobStatus.IN_REVIEW,
                    values={"review_team_id": team_id},
                    event_type="review_moved",
                    actor="system",
                    reason=f"{left}; {reviewers}",
                    now=now,
                    conditions=conditions,
                )
            else:
                await self._reroute(
                    job,
                    why=f"{left}, and no team the job's data policy allows may; "
                    "the work is to be done anew",
                    conditions=conditions,
                    extra_values={**_lease_cleared(), **_REVIEW_CLEARED},
                    now=now,
                )
        except InvalidTransition:
            return False  # decided meanwhile: a decision needs the reviewer's team as it is
        return True

    async def _reroute(
        self,
        job: Job,
        *,
        why: str,
        conditions: Sequence[ColumnElement[bool]],
        extra_values: dict[str, Any],
        now: datetime,
    ) -> Job:
        """The system routes ``job`` again because its data policy moved it off where it was
        (event ``rerouted``, ``why`` opening the reason)."""
        return await self._route_or_park(
            job,
            classification=_stored_classification(job),
            actor="system",
            now=now,
            event_type="rerouted",
            reason_prefix=f"{why}; ",
            conditions=conditions,
            extra_values=extra_values,
        )

    async def _hand_on_if_ineligible(
        self, job: Job, team: Team, policy: DataPolicy, *, now: datetime
    ) -> bool:
        """Move ``job``, held by ``team``, to its best eligible team (or park it as
        unroutable) if the team does not meet ``policy``, the job's, or, for a queued job, if
        the team is paused (a lease is worked to its end); whether it moved."""
        refusals = team_refusals(team, policy)
        if refusals:
            why = f"{team.name} no longer meets the job's data policy ({'; '.join(refusals)})"
        elif not team.active and job.status == JobStatus.QUEUED.value:
            why = f"{team.name} is paused and takes no new jobs"
        else:
            return False
        try:
            await self._reroute(
                job,
                why=why,
                conditions=[Job.team_id == team.id],
                extra_values=_lease_cleared(),
                now=now,
            )
        except InvalidTransition:
            return False  # it moved meanwhile: the check on every claim and read holds it
        return True

    async def apply_tenant_policy(
        self, tenant_id: str, *, version: int, policy: DataPolicy, now: datetime
    ) -> TenantPolicyChange:
        """The tenant's policy at the gateway's ``version``: stored unless as new a one is,
        then every active job of the tenant is held to it (:meth:`enforce_tenant_policy`)."""
        stored = await self.tenant_policies.put_if_newer(
            tenant_id, version=version, policy=policy.to_json(), now=now
        )
        if not stored:
            return TenantPolicyChange(applied=False, tightened=0, moved=0)
        return await self.enforce_tenant_policy(tenant_id, version, policy, now=now)

    async def enforce_tenant_policy(
        self, tenant_id: str, version: int, policy: DataPolicy, *, now: datetime
    ) -> TenantPolicyChange:
        """Tighten each active job of the tenant made under an older version by ``policy``
        (``DataPolicy.tightened_by``) and hand on those held by a team that no longer meets
        it. Idempotent: a job already under the policy is left as it is, so the sweeper may
        run it again."""
        teams = {team.id: team for team in await self.teams.all()}
        tightened = moved = 0
        # The sweeper runs this every pass for minutes after a change (and reroute_ineligible
        # for a changed team), so only the stances with something to do have their jobs
        # loaded. Loading every job cost a pass 150 ms at 3,600 queued jobs of a new tenant and
        # team, the router's event loop blocked meanwhile; grouped, 3-9 ms (BENCHMARKS.md).
        stances = set()
        for stance in await self.jobs.active_stances(tenant_id, version=version):
            stated = _stated_policy(stance)
            wanted = stated.tightened_by(policy) if stance.made_before else stated
            if wanted != stated or _stance_may_have_to_move(stance, teams, wanted):
                stances.add(stance)
        for job in await self.jobs.active_in(tenant_id, stances, version=version):
            tightened_now, moved_now = await self._enforce_on_job(
                job, version, policy, teams, now=now
            )
            tightened, moved = tightened + tightened_now, moved + moved_now
        return TenantPolicyChange(applied=True, tightened=tightened, moved=moved)

    async def _enforce_on_job(
        self,
        job: Job,
        version: int,
        policy: DataPolicy,
        teams: Mapping[str, Team],
        *,
        now: datetime,
    ) -> tuple[bool, bool]:
        """Hold one job to the tenant's policy ``version``; whether it was tightened, and
        whether it moved."""
        current = DataPolicy.from_json(job.policy)
        # A job made under this version or a newer one keeps its policy (its gateway knew
        # more); where it stands is checked all the same, as for every job.
        wanted = current if (job.policy_version or 0) >= version else current.tightened_by(policy)
        tightened = False
        if wanted != current:
            updated = await self.jobs.touch(
                job.id,
                conditions=[Job.status == job.status],
                values={"policy": wanted.to_json(), "policy_version": version, "updated_at": now},
            )
            if updated is None:
                return False, False  # finished meanwhile, or moved: the next pass sees it
            job, tightened = updated, True
        team = teams.get(job.team_id) if job.team_id else None
        return tightened, await self._move_if_ineligible(job, team, wanted, now=now)

    # ----------------------------------------------------------------- operators

    async def route_manually(
        self, job_id: str, *, team_id: str, actor: str, domain: Domain | None, now: datetime
    ) -> Job:
        """An operator's routing decision; it also becomes a labelled example for training."""
        job = await self.get(job_id, tenant_id=None)
        if job.status not in _MANUALLY_ROUTABLE:
            # In progress: a member is working under a lease; that is not the operator's to take.
            raise InvalidTransition(f"A job that is {job.status} cannot be routed by hand.")
        team = await self.teams.get(team_id)
        if team is None:
            raise InvalidRoute("No such team.")
        label = _label_domain(job, team, domain)
        loads = await self.jobs.team_loads()
        profiles = [team_profile(t, loads.get(t.id, 0)) for t in await self.teams.all()]
        target = next(p for p in profiles if p.id == team.id)
        classification = (
            Classification(tier=tier_of(label), domain=label, confidence=1.0)
            if label is not None
            else _stored_classification(job)
        )
        decision = self.decide(
            classification=classification,
            policy=DataPolicy.from_json(job.policy),
            due_at=job.due_at,
            rejected_by=(),
            teams=profiles,
            now=now,
        )
        blocking = [
            reason
            for code, reason in exclusion_reasons(target, decision.request)
            if code in _MANUAL_HARD_FILTERS
        ]
        if blocking:
            raise InvalidRoute(f"Team {team.name} cannot take this job: {'; '.join(blocking)}.")
        score = next((c.score for c in decision.eligible if c.team.id == team.id), None)
        values = _assignment(target, score, now)
        if label is not None:
            values.update(
                tier=tier_of(label).value,
                domain=label.value,
                confidence=1.0,
                reasons=[f"an operator routed it to {team.name} as {label.value}"],
            )
        updated = await self._move(
            job,
            to=JobStatus.QUEUED,
            values={**values, **_lease_cleared()},
            event_type="routed_manually",
            actor=actor,
            reason=f"routed by an operator to {team.name}",
            now=now,
        )
        record = stored_record(decision)
        record_decision("manual")
        record.update(
            outcome="manual",
            by=actor,
            chosen={"team_id": team.id, "team_name": team.name, "score": score},
        )
        await self.jobs.add_decision(job_id=job.id, team_id=team.id, record=record, created_at=now)
        if label is not None:
            await self.jobs.add_example(
                LabelledExample(
                    job_id=job.id,
                    text=f"{job.title}\n{job.description}",
                    tier=tier_of(label).value,
                    domain=label.value,
                    source="operator",
                    actor=actor,
                    created_at=now,
                )
            )
        return updated

    # ----------------------------------------------------------------- sweeper

    async def requeue_expired_leases(self, *, now: datetime) -> int:
        """Return jobs whose lease ran out to their team's queue (safe with many replicas)."""
        count = 0
        for job in await self.jobs.expired_leases(now=now, limit=self.settings.sweep_batch_size):
            member = job.lease_member_id
            expired_at = job.lease_expires_at
            try:
                await self._move(
                    job,
                    to=JobStatus.QUEUED,
                    values=_lease_cleared(),
                    event_type="lease_expired",
                    actor="system",
                    reason=f"the lease of member:{member} expired at "
                    f"{expired_at.isoformat() if expired_at else 'unknown'}",
                    now=now,
                    # Only the lease we saw: a heartbeat or another sweeper may have moved it.
                    conditions=[Job.lease_member_id == member, Job.lease_expires_at <= now],
                )
            except InvalidTransition:
                continue
            count += 1
        return count

    async def recheck_policies(self, *, now: datetime) -> int:
        """Hold the jobs of tenants whose policy changed, and of teams that changed, in the last
        ``policy_recheck_seconds`` to the policy once more; how many jobs that changed."""
        since = now - timedelta(seconds=self.settings.policy_recheck_seconds)
        changed = 0
        rechecked = await self.teams.to_recheck(since)
        if rechecked:
            teams = {team.id: team for team in await self.teams.all()}
            for team in rechecked:
                changed += await self.reroute_ineligible(team, now=now, teams=teams)
        for row in await self.tenant_policies.changed_since(since):
            change = await self.enforce_tenant_policy(
                row.tenant_id, row.version, DataPolicy.from_json(row.policy), now=now
            )
            changed += change.tightened + change.moved
        return changed

    async def retry_unroutable(self, *, now: datetime) -> int:
        """Try again to route jobs parked as unroutable; returns how many found a team."""
        due = await self.jobs.due_unroutable(now=now, limit=self.settings.sweep_batch_size)
        if not due:
            return 0
        profiles = await self.profiles()
        routed = 0
        for job in due:
            try:
                profiles, moved = await self._retry_one(job, profiles, now=now)
            except InvalidTransition:
                continue
            routed += moved
        return routed

    async def _retry_one(
        self, job: Job, profiles: Sequence[TeamProfile], *, now: datetime
    ) -> tuple[list[TeamProfile], bool]:
        """Route one parked job, or set its next try; the teams' loads for the rest of the
        pass, and whether it was routed."""
        teams = list(profiles)
        for _ in range(len(teams) + 1):  # each round finds one more team full
            decision = self.decide(
                classification=_stored_classification(job),
                policy=DataPolicy.from_json(job.policy),
                due_at=job.due_at,
                rejected_by=job.rejected_team_ids,
                teams=teams,
                now=now,
                passed_through=job.passed_team_ids,
            )
            chosen = decision.chosen
            if chosen is None:
                break
            moved = await self._move_into(
                chosen.team,
                job,
                to=JobStatus.QUEUED,
                values=_assignment(chosen.team, chosen.score, now),
                event_type="routed",
                actor="router",
                reason=f"retried: routed to {chosen.team.name} (score {chosen.score:g})",
                now=now,
            )
            if moved is None:
                teams = _filled(teams, chosen.team)
                continue
            await self._store_decision(job.id, decision, "queued")
            # The chosen team is one job busier for the next job of this pass.
            return _busier(teams, chosen.team.id, +1), True
        await self.jobs.touch(
            job.id,
            conditions=[Job.status == JobStatus.UNROUTABLE.value],
            values={"retry_at": now + timedelta(seconds=self.settings.unroutable_retry_seconds)},
        )
        return teams, False

    async def escalate_unclaimed(self, *, now: datetime) -> int:
        """Pass queued jobs nobody claimed within their escalation window to the next
        eligible team; returns how many moved.

        The team the job leaves joins its ``passed_team_ids`` and is excluded (code
        ``passed_through``) from this and every later decision for the job. With no other
        eligible team the job stays where it is, still claimable, with an
        ``escalation_held`` event, and is tried again one window later: taking it out of a
        queue where someone may yet claim it, to park it as ``unroutable``, would only delay
        it further. Safe with many replicas: the jobs are row-locked with SKIP LOCKED, and each
        move is conditional on the queue and clock the sweeper saw.
        """
        due = await self.jobs.due_escalations(now=now, limit=self.settings.sweep_batch_size)
        if not due:
            return 0
        profiles = await self.profiles()
        windows = self.settings.escalation_windows()
        moved = 0
        for job in due:
            try:
                profiles, escalated = await self._escalate_one(job, profiles, windows, now=now)
            except InvalidTransition:
                continue
            moved += escalated
        return moved

    async def _escalate_one(
        self,
        job: Job,
        profiles: Sequence[TeamProfile],
        windows: PriorityDurations,
        *,
        now: datetime,
    ) -> tuple[list[TeamProfile], bool]:
        """Pass one unclaimed job on, or hold it where it is; the teams' loads for the rest
        of the pass, and whether it moved."""
        from_team, from_name = job.team_id, job.team_name or str(job.team_id)
        window = describe_duration(windows.of(Priority(job.priority)))
        passed = sorted({*job.passed_team_ids, *([from_team] if from_team else [])})
        # Only the queue and clock we read: a claim or another sweeper may have moved it.
        conditions = [Job.team_id == from_team, Job.escalate_at == job.escalate_at]
        teams = list(profiles)
        for _ in range(len(teams) + 1):  # each round finds one more team full
            decision = self.decide(
                classification=_stored_classification(job),
                policy=DataPolicy.from_json(job.policy),
                due_at=job.due_at,
                rejected_by=job.rejected_team_ids,
                teams=teams,
                now=now,
                passed_through=passed,
            )
            chosen = decision.chosen
            if chosen is None:
                break
            escalated = await self._move_into(
                chosen.team,
                job,
                to=JobStatus.QUEUED,
                values={**_assignment(chosen.team, chosen.score, now), "passed_team_ids": passed},
                event_type="escalated",
                actor="system",
                reason=f"not claimed within {window} at {from_name}; passed to"
                f" {chosen.team.name} (score {chosen.score:g} among"
                f" {len(decision.eligible)} eligible)",
                now=now,
                conditions=conditions,
            )
            if escalated is None:
                teams = _filled(teams, chosen.team)
                continue
            trigger = {
                "trigger": "escalation",
                "escalated_from": {"team_id": from_team, "team_name": from_name},
            }
            await self._store_decision(job.id, replace(decision, extra=trigger), "queued")
            # The job changes queues: keep the loads right for the rest of this pass.
            return _busier(_busier(teams, chosen.team.id, +1), from_team, -1), True
        await self._move(
            job,
            to=JobStatus.QUEUED,
            values={},
            event_type="escalation_held",
            actor="system",
            reason=f"not claimed within {window} at {from_name}, but no other team"
            f" is eligible ({len(decision.excluded)} excluded); it stays in this"
            f" queue and is tried again in {window}",
            now=now,
            conditions=conditions,
        )
        return teams, False


def team_profile_with_load(profile: TeamProfile, load: int) -> TeamProfile:
    return replace(profile, load=load)


def _busier(teams: Sequence[TeamProfile], team_id: str | None, jobs: int) -> list[TeamProfile]:
    """``teams`` with ``team_id``'s load changed by ``jobs`` (a pass moved jobs there)."""
    return [
        team_profile_with_load(team, max(0, team.load + jobs)) if team.id == team_id else team
        for team in teams
    ]


def _filled(teams: Sequence[TeamProfile], full: TeamProfile) -> list[TeamProfile]:
    """``teams`` with ``full`` at its capacity at least: a move into its queue found it full."""
    return [
        team_profile_with_load(team, max(team.load, team.capacity)) if team.id == full.id else team
        for team in teams
    ]


def _able(profile: TeamProfile, work: Classification) -> bool:
    """Whether a team could do ``work`` at all (active, its tier, its skill)."""
    return profile.active and profile.tier is work.tier and work.domain.value in profile.skills


def _stored_classification(job: Job) -> Classification:
    domain = Domain(job.domain) if job.domain else Domain.DATA_PROCESSING
    return Classification(
        tier=tier_of(domain), domain=domain, confidence=job.confidence or 0.0, reasons=[]
    )


def _label_domain(job: Job, team: Team, requested: Domain | None) -> Domain | None:
    """The domain an operator's routing teaches: named, or implied by the team's skills."""
    if requested is not None:
        if requested.value not in team.skills:
            raise InvalidRoute(f"Team {team.name} has no skill '{requested.value}'.")
        return requested
    if job.domain in team.skills:
        return Domain(job.domain)
    if len(team.skills) == 1:
        return Domain(team.skills[0])
    # Ambiguous: routing still happens, but no guessed label pollutes the training data.
    return None


# ------------------------------------------------------------------------- teams


@dataclass(frozen=True)
class TeamFields:
    """A team's validated fields (from TeamCreate, or TeamUpdate merged over the stored team)."""

    name: str
    country: str
    timezone: str
    working_hours: dict[str, Any]
    tier: Tier
    skills: list[str]
    certifications: list[str]
    languages: list[str]
    capacity: int
    hourly_rate: float
    quality: float
    active: bool

    def check(self) -> None:
        wrong = sorted(s for s in self.skills if tier_of(Domain(s)) is not self.tier)
        if wrong:
            raise InvalidTeam(
                f"Skills {', '.join(wrong)} are not {self.tier.value} domains; a team works"
                " one tier."
            )

    def values(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "country": self.country,
            "timezone": self.timezone,
            "working_hours": self.working_hours,
            "tier": self.tier.value,
            "skills": self.skills,
            "certifications": self.certifications,
            "languages": self.languages,
            "capacity": self.capacity,
            "hourly_rate": self.hourly_rate,
            "quality": self.quality,
            "active": self.active,
        }


def fields_of(team: Team) -> dict[str, Any]:
    return {
        "name": team.name,
        "country": team.country,
        "timezone": team.timezone,
        "working_hours": team.working_hours,
        "tier": Tier(team.tier),
        "skills": list(team.skills),
        "certifications": list(team.certifications),
        "languages": list(team.languages),
        "capacity": team.capacity,
        "hourly_rate": team.hourly_rate,
        "quality": team.quality,
        "active": team.active,
    }


class TeamWorkflow:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.teams = TeamRepository(session)

    async def get(self, team_id: str) -> Team:
        team = await self.teams.get(team_id)
        if team is None:
            raise TeamNotFound
        return team

    async def create(self, fields: TeamFields, *, now: datetime) -> Team:
        fields.check()
        if await self.teams.get_by_name(fields.name) is not None:
            raise DuplicateTeam(f"A team named {fields.name!r} exists already.")
        team = await self.teams.add_if_name_free(
            {"id": new_id(), "version": 1, "created_at": now, "updated_at": now, **fields.values()}
        )
        if team is None:
            raise DuplicateTeam(f"A team named {fields.name!r} exists already.")
        return team

    async def update(
        self, team_id: str, changes: dict[str, Any], *, expected_version: int | None, now: datetime
    ) -> Team:
        """Apply ``changes`` if the team is still at ``expected_version`` (412 otherwise)."""
        team = await self.get(team_id)
        if expected_version is not None and team.version != expected_version:
            raise PreconditionFailed(
                f"The team is at version {team.version}, not {expected_version}; read it again."
            )
        merged = TeamFields(**{**fields_of(team), **changes})
        merged.check()
        if "name" in changes and changes["name"] != team.name:
            other = await self.teams.get_by_name(changes["name"])
            if other is not None and other.id != team.id:
                raise DuplicateTeam(f"A team named {changes['name']!r} exists already.")
        values = {k: v for k, v in merged.values().items() if k in changes}
        current = TeamFields(**fields_of(team)).values()
        if "quality" not in changes and all(current.get(k) == v for k, v in values.items()):
            # Nothing changes: no new version, so nobody's If-Match goes stale for nothing. (A
            # quality set again is an action: it restarts the average from that prior.)
            return team
        if "quality" in changes:
            # An operator's quality is a fresh prior: later ratings average from it anew.
            values["quality_rating_count"] = 0
        try:
            updated = await self.teams.update_versioned(
                team_id,
                # Even without If-Match, only the version we merged over may be replaced.
                expected_version=team.version,
                values={**values, "updated_at": now},
            )
        except IntegrityError as exc:
            # A rename raced another team to the same name; the request rolls back whole.
            raise DuplicateTeam("Another team has that name.") from exc
        if updated is None:
            raise PreconditionFailed("The team changed while this request ran; read it again.")
        return updated
