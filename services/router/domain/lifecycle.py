"""The job lifecycle as data: which status may follow which.

Every change of a job's status goes through :func:`ensure_transition` before the conditional
UPDATE that performs it, so a forbidden move is refused with 409 whatever route asked for it.
Beyond the contract's list, ``queued`` and ``in_progress`` may become ``unroutable``: a team that
rejects a job passes it on, and when no other team is eligible the job must wait somewhere
visible instead of staying with the team that refused it.
"""

from __future__ import annotations

from enum import StrEnum

from services.router.domain.errors import InvalidTransition

# Every type of event a job's timeline holds: the ``type`` filter of a timeline takes only
# these (another word is a mistake, 422, not an empty page), and the repository refuses to
# write any other, so a new kind of event is added here first.
EVENT_TYPES = frozenset(
    {
        "created",
        "routed",
        "triaged",
        "unroutable",
        "routed_manually",
        "rerouted",
        "escalated",
        "escalation_held",
        "claimed",
        "released",
        "rejected",
        "lease_expired",
        "submitted_for_review",
        "review_moved",
        "approved",
        "sent_back",
        "completed",
        "cancelled",
        "feedback",
    }
)

# Events that are no news to a client: the job's creation (its submit's answer tells it) and
# an escalation that found no other team (the job stays where it was).
_UNREPORTED_EVENT_TYPES = frozenset({"created", "escalation_held"})


def reported_to_client(event_type: str, to_status: str | None) -> bool:
    """Whether the job's client hears of this event (the gateway's ``job.<status>`` webhooks):
    every change of status or queue, whoever made it; not a rating, which moves no status."""
    return to_status is not None and event_type not in _UNREPORTED_EVENT_TYPES


class JobStatus(StrEnum):
    PENDING = "pending"
    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    # Done by a member, waiting for a second pair of eyes (a tenant policy's require_review).
    IN_REVIEW = "in_review"
    COMPLETED = "completed"
    TRIAGE = "triage"
    UNROUTABLE = "unroutable"
    CANCELLED = "cancelled"


S = JobStatus
# How a status reads in a sentence ("The job is in triage"), for refusals people read.
_STATUS_WORDS = {"in_progress": "in progress", "in_review": "in review", "triage": "in triage"}


def status_words(status: str) -> str:
    """``status`` as it reads after "The job is"."""
    return _STATUS_WORDS.get(status, status)


ALLOWED_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    S.PENDING: frozenset({S.QUEUED, S.TRIAGE, S.UNROUTABLE}),
    # queued -> queued is a reassignment to another team (reject, operator).
    S.QUEUED: frozenset({S.IN_PROGRESS, S.CANCELLED, S.QUEUED, S.UNROUTABLE}),
    # in_progress -> queued: release, lease expiry or reject.
    # in_progress -> in_review: completed under a policy that requires review.
    S.IN_PROGRESS: frozenset({S.COMPLETED, S.QUEUED, S.CANCELLED, S.UNROUTABLE, S.IN_REVIEW}),
    # in_review -> completed (approved) or in_progress (sent back to the member who did it).
    # In review to in review: the review moves to another team; to queued or unroutable: no
    # team the job's data policy allows may review the work, so it is routed to be done anew.
    S.IN_REVIEW: frozenset(
        {S.COMPLETED, S.IN_PROGRESS, S.CANCELLED, S.IN_REVIEW, S.QUEUED, S.UNROUTABLE}
    ),
    S.TRIAGE: frozenset({S.QUEUED, S.CANCELLED}),
    S.UNROUTABLE: frozenset({S.QUEUED, S.CANCELLED}),
    S.COMPLETED: frozenset(),
    S.CANCELLED: frozenset(),
}

TERMINAL: frozenset[JobStatus] = frozenset(
    status for status, targets in ALLOWED_TRANSITIONS.items() if not targets
)


def can_transition(current: JobStatus, target: JobStatus) -> bool:
    return target in ALLOWED_TRANSITIONS[current]


def ensure_transition(current: JobStatus, target: JobStatus) -> None:
    """Refuse (409) a status change the lifecycle does not allow."""
    if not can_transition(current, target):
        raise InvalidTransition(f"A job that is {current.value} cannot become {target.value}.")


def sources_of(target: JobStatus) -> frozenset[JobStatus]:
    """Every status from which ``target`` may be reached."""
    return frozenset(s for s, targets in ALLOWED_TRANSITIONS.items() if target in targets)
