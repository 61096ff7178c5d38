"""Four-eyes review: the reviewer's queue and decisions (issue 4 item 5).

A member completing a job under a policy with ``require_review`` moves it to ``in_review``
(:meth:`services.router.workflow.JobWorkflow.complete`); its result is stored but held: the
client's ``result`` answers 409 until a reviewer decides. Here the reviewers act:

* **queue**: the jobs in review for a team, oldest submission first, without the ones the asking
  member submitted, and without any whose policy the team does not meet (country,
  certifications, active): such a team never sees the job;
* **approve**: ``in_review -> completed`` (event ``approved``, actor the reviewer);
* **send back**: ``in_review -> in_progress`` with a comment (event ``sent_back``, the comment as
  its reason), leased anew to the member who submitted the work, for the usual lease time. If
  that member does not come back, the lease expires and the sweeper returns the job to the
  team's queue as for any lease, so nothing waits forever on one person;
* **grant**: a vault grant for a reviewer to open the job's confidential data or its sealed
  confidential result, the same router-signed grant a lease holder gets (subject
  ``member:<reviewer>``, audited by the vault, ``require_e2e`` and the registered key honoured).

Every decision is one conditional UPDATE on ``status = 'in_review'`` and the submission the
reviewer saw: of two reviewers deciding at once (two approvals, or an approval and a send-back)
exactly one wins; the other gets 409. The member who submitted the work is refused (403
``own-work-review``) whatever the route.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, or_, select

from services.router.db.models import Job, Team
from services.router.db.pagination import decode_cursor, encode_cursor
from services.router.domain.errors import (
    ConfidentialDataNotFound,
    InvalidTransition,
    JobNotFound,
    OwnWorkReview,
    TeamNotFound,
)
from services.router.domain.grants import GrantAction, GrantClaims, GrantPurpose
from services.router.domain.lifecycle import JobStatus, status_words
from services.router.domain.routing import DataPolicy
from services.router.workflow import JobWorkflow, team_refusals


@dataclass(frozen=True)
class ReviewPage:
    items: list[Job]
    has_more: bool
    next_cursor: str | None


def may_review(team: Team, job: Job) -> bool:
    """Whether ``team`` may see ``job`` as its reviewer (its policy's filters)."""
    return not team_refusals(team, DataPolicy.from_json(job.policy), reviewing=True)


class ReviewWorkflow:
    def __init__(self, jobs: JobWorkflow) -> None:
        self.flow = jobs
        self.session = jobs.session

    async def _team(self, team_id: str) -> Team:
        team = await self.flow.teams.get(team_id)
        if team is None:
            raise TeamNotFound
        return team

    async def queue(
        self, team_id: str, *, member_id: str, limit: int, cursor: str | None
    ) -> ReviewPage:
        """Jobs awaiting ``team_id``'s review that ``member_id`` may decide, oldest first.

        A job whose policy the team does not meet is skipped, so a page may hold fewer than
        ``limit`` jobs while ``has_more`` still says whether more rows follow."""
        team = await self._team(team_id)
        query = select(Job).where(
            Job.review_team_id == team_id,
            Job.status == JobStatus.IN_REVIEW.value,
            Job.review_submitted_by != member_id,
        )
        if cursor:
            submitted_at, job_id = decode_cursor(cursor, (datetime, str))
            query = query.where(
                or_(
                    Job.review_submitted_at > submitted_at,
                    and_(Job.review_submitted_at == submitted_at, Job.id > job_id),
                )
            )
        query = query.order_by(Job.review_submitted_at, Job.id).limit(limit + 1)
        rows = list((await self.session.scalars(query)).all())
        has_more = len(rows) > limit
        seen = rows[:limit]
        next_cursor = (
            encode_cursor([seen[-1].review_submitted_at, seen[-1].id]) if has_more else None
        )
        return ReviewPage(
            items=[job for job in seen if may_review(team, job)],
            has_more=has_more,
            next_cursor=next_cursor,
        )

    async def get(self, team_id: str, job_id: str, *, member_id: str) -> Job:
        """A job in review that ``member_id`` of ``team_id`` may decide.

        404 unless the job is (or was) this team's to review and the team meets its policy;
        409 unless it is in review now; 403 for the member who submitted it."""
        team = await self._team(team_id)
        job = await self.flow.jobs.get(job_id)
        if job is None or job.review_team_id != team_id or not may_review(team, job):
            raise JobNotFound
        if job.status != JobStatus.IN_REVIEW.value:
            raise InvalidTransition(f"The job is {status_words(job.status)}, not in review.")
        if job.review_submitted_by == member_id:
            raise OwnWorkReview(
                "You submitted this work: another member must review it (four eyes)."
            )
        return job

    def _same_submission(self, job: Job) -> list[ColumnElement[bool]]:
        # event_seq changes with every status change: a send-back and a resubmission between
        # the reviewer's read and this decision make another submission, even at one instant.
        return [
            Job.review_team_id == job.review_team_id,
            Job.review_submitted_by == job.review_submitted_by,
            Job.event_seq == job.event_seq,
        ]

    async def approve(
        self, team_id: str, job_id: str, *, member_id: str, comment: str | None, now: datetime
    ) -> Job:
        job = await self.get(team_id, job_id, member_id=member_id)
        return await self.flow._move(  # noqa: SLF001 - one status change, one event
            job,
            to=JobStatus.COMPLETED,
            values={"completed_at": now},
            event_type="approved",
            actor=f"member:{member_id}",
            reason=comment or f"approved in review (work of member:{job.review_submitted_by})",
            now=now,
            conditions=self._same_submission(job),
            lost_race=InvalidTransition("Another reviewer decided on this job first."),
        )

    async def send_back(
        self, team_id: str, job_id: str, *, member_id: str, comment: str, now: datetime
    ) -> Job:
        job = await self.get(team_id, job_id, member_id=member_id)
        # Back to its author only while the author's team may hold the job: a change it has
        # not been held to yet is the sweeper's to apply (the work is then done anew).
        await self.flow.require_eligible(job)
        author = job.review_submitted_by
        lease_seconds = self.flow.settings.lease_seconds
        return await self.flow._move(  # noqa: SLF001
            job,
            to=JobStatus.IN_PROGRESS,
            values={
                "lease_member_id": author,
                "lease_claimed_at": now,
                "lease_expires_at": now + timedelta(seconds=lease_seconds),
            },
            event_type="sent_back",
            actor=f"member:{member_id}",
            reason=comment,
            now=now,
            conditions=self._same_submission(job),
            lost_race=InvalidTransition("Another reviewer decided on this job first."),
        )

    async def grant(
        self, team_id: str, job_id: str, *, member_id: str, purpose: GrantPurpose
    ) -> GrantClaims:
        """An open grant for a reviewer: the job's confidential data, or its sealed result,
        only while the reviewer team meets the job's policy as it is now (a tenant's change
        the job has not been held to yet included)."""
        job = await self.get(team_id, job_id, member_id=member_id)
        team = await self._team(team_id)
        policy = await self.flow.policy_now(job)
        if team_refusals(team, policy, reviewing=True):
            raise JobNotFound
        ref = job.confidential_ref if purpose is GrantPurpose.JOB else job.confidential_result_ref
        if ref is None:
            raise ConfidentialDataNotFound(
                "This job has no confidential data."
                if purpose is GrantPurpose.JOB
                else "This job's result has no confidential part."
            )
        return GrantClaims(
            action=GrantAction.OPEN,
            tenant_id=job.tenant_id,
            job_id=job.id,
            purpose=purpose,
            ref=ref,
            subject=f"member:{member_id}",
            require_e2e=policy.require_e2e,
        )
