"""Four-eyes review: who may review a job, as pure rules (no I/O, no clock).

A tenant policy with ``require_review`` holds a member's completion as ``in_review`` until a
reviewer approves it (``completed``) or sends it back with a comment (``in_progress`` again,
leased to the member who did the work). Reviewers are the members of the policy's
``review_team_id`` when it names a team that may see the job, otherwise the *other* members of
the job's own team. Either way the member who submitted the work never reviews it.

A reviewer team sees the job's confidential data (under an audited grant), so it must pass the
same data-policy filters as a working team: active, in an allowed country, holding every
required certification. A team that fails them never sees the job at all (404, not 403): it
must not even learn that the job exists.
"""

from __future__ import annotations

from collections.abc import Collection

from services.router.domain.routing import DataPolicy, policy_refusals


def reviewer_refusals(
    *, active: bool, country: str, certifications: Collection[str], policy: DataPolicy
) -> list[str]:
    """Why a team may not review a job under ``policy`` (empty: it may)."""
    refusals = [] if active else ["the team is inactive"]
    return refusals + policy_refusals(country=country, certifications=certifications, policy=policy)
