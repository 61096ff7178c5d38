"""The router's error classes, on top of :mod:`shared.errors`.

Details are shown to callers and written to logs, so they name ids and statuses only: never a
job's text, result or any reference to confidential data beyond whether it exists.
"""

from __future__ import annotations

from shared.errors import Conflict, Forbidden, NotFound, TaskrouteError, UnprocessableContent


class JobNotFound(NotFound):
    problem = "job-not-found"

    def __init__(self) -> None:
        # One message for unknown ids and other tenants' ids: they must look the same.
        super().__init__("No such job.")


class TeamNotFound(NotFound):
    problem = "team-not-found"

    def __init__(self) -> None:
        super().__init__("No such team.")


class ConfidentialDataNotFound(NotFound):
    problem = "no-confidential-data"


class InvalidTransition(Conflict):
    """A status change the lifecycle does not allow (or that lost a race to another change)."""

    problem = "invalid-transition"


class LeaseConflict(Conflict):
    """The caller does not hold a live lease on the job."""

    problem = "lease-conflict"


class StaleResult(Conflict):
    """A completion's receipt is for a confidential result of another lease of the job (one
    that has ended), or of another job."""

    problem = "stale-result"


class InvalidReceipt(UnprocessableContent):
    """A completion's receipt is not one the vault signed for the router, or has expired."""

    problem = "invalid-receipt"


class DuplicateTeam(Conflict):
    problem = "duplicate-team"


class JobIdConflict(Conflict):
    problem = "job-id-conflict"


class SubmissionWithdrawn(Conflict):
    """The gateway rolled this submission back (its sealed data is discarded): the job must
    not be stored from it. The gateway answers its client 503: a retry submits afresh."""

    problem = "submission-withdrawn"


class InvalidTeam(UnprocessableContent):
    problem = "invalid-team"


class InvalidRoute(UnprocessableContent):
    problem = "invalid-route"


class PreconditionFailed(TaskrouteError):
    """If-Match named a version that is no longer current (RFC 9110 412)."""

    status, title, problem = 412, "Precondition failed", "precondition-failed"


class MemberKeyConflict(Conflict):
    """A member already registered a different public key."""

    problem = "member-key-conflict"


class FeedbackExists(Conflict):
    """The job has been rated already: one feedback per job."""

    problem = "feedback-exists"


class OwnWorkReview(Forbidden):
    """Four eyes: the member who completed a job may not review it."""

    problem = "own-work-review"


class TeamNotEligible(Conflict):
    """The job's team no longer meets the job's data policy (the team's country or
    certifications changed, or the tenant tightened its policy): its members may neither
    claim the job nor read its data, and the job is routed to another team."""

    problem = "team-not-eligible"
