"""The gateway's errors (see :mod:`shared.errors` for the hierarchy they extend).

Details are written for the caller to act on and never quote a key or a confidential value.
"""

from __future__ import annotations

from shared.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    ServiceUnavailable,
    TaskrouteError,
    Unauthorized,
    UnprocessableContent,
)


class InvalidApiKey(Unauthorized):
    problem = "invalid-api-key"

    def __init__(self) -> None:
        # One message for missing, malformed, unknown and revoked keys: the answer must not
        # tell a prober which of those it hit.
        super().__init__("A valid API key is required: send 'Authorization: Bearer <api key>'.")


class WrongRole(Forbidden):
    problem = "wrong-role"

    def __init__(self, *, needed: str) -> None:
        article = "an" if needed[:1] in "aeiou" else "a"
        super().__init__(f"This endpoint needs {article} {needed} API key.")


class TenantNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("No tenant with this id.")


class ApiKeyNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("No API key with this id.")


class JobNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("No job with this id.")


class JobNotRoutedYet(ServiceUnavailable):
    """The gateway holds the job as pending and another replica (or the sweeper) is handing
    it to the router right now, or the router is away: it exists, so not 404."""

    problem = "job-pending"
    retry_after = 1

    def __init__(self) -> None:
        super().__init__(
            "The job was accepted and is being handed to routing; retry the request shortly."
        )


class SubmissionRolledBack(ServiceUnavailable):
    """A submit that took so long that the sweeper rolled it back as dead (its sealed data
    discarded, the router told to refuse it): nothing of it is stored; the client retries."""

    problem = "submission-rolled-back"
    retry_after = 1

    def __init__(self) -> None:
        super().__init__(
            "This submission took too long and was rolled back; nothing was stored. Retry it."
        )


class SubmissionBeingSettled(ServiceUnavailable):
    """A retried submit whose earlier attempt died mid-way while the gateway's sweeper is
    settling it (forwarding it, or rolling it back): the retry must not redo it meanwhile."""

    problem = "submission-being-settled"
    retry_after = 5

    def __init__(self) -> None:
        super().__init__(
            "An earlier attempt of this submission is being settled; retry it in a few seconds."
        )


class TeamNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("No team with this id.")


class MemberNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("No such member in this team.")


class ReviewTeamUnknown(UnprocessableContent):
    """A tenant policy naming a reviewer team the router does not know."""

    problem = "review-team-unknown"

    def __init__(self) -> None:
        super().__init__("policy.review_team_id names no team; create the reviewer team first.")


class PolicyWidening(UnprocessableContent):
    """A job's data policy that would leave no country the tenant allows."""

    problem = "policy-widening"


class LoopbackWebhookEndpoint(UnprocessableContent):
    """A webhook endpoint on a loopback host, in production (allowed for local development)."""

    problem = "webhook-endpoint-loopback"

    def __init__(self) -> None:
        super().__init__(
            "url must not point at a loopback host in production; use the receiver's public "
            "https address."
        )


class EndToEndRequired(Conflict):
    problem = "e2e-required"

    def __init__(self) -> None:
        super().__init__(
            "This job's data policy requires end-to-end delivery to a registered member key; "
            "plaintext delivery is refused."
        )


class InvalidCursor(BadRequest):
    problem = "invalid-cursor"

    def __init__(self) -> None:
        super().__init__("The cursor is not one this API returned; start again without it.")


class PreconditionFailed(TaskrouteError):
    status, title, problem = 412, "Precondition failed", "precondition-failed"


class RepeatedHeader(BadRequest):
    problem = "repeated-header"

    def __init__(self, name: str) -> None:
        # Which one is meant is ambiguous: a proxy in front may read one, this API another.
        super().__init__(f"Send the {name} header once.")


class IdempotencyKeyInvalid(BadRequest):
    problem = "idempotency-key-invalid"

    def __init__(self) -> None:
        super().__init__("Idempotency-Key must be 1 to 255 printable ASCII characters.")


class IdempotencyMismatch(UnprocessableContent):
    problem = "idempotency-key-reused"

    def __init__(self) -> None:
        super().__init__(
            "This Idempotency-Key was used with a different request (method, path or body); "
            "use a new key for a new request."
        )


class IdempotencyInFlight(Conflict):
    problem = "idempotency-in-flight"

    def __init__(self) -> None:
        super().__init__(
            "A request with this Idempotency-Key is still being processed; retry shortly to "
            "receive its answer."
        )


class RateLimited(TaskrouteError):
    status, title, problem = 429, "Too many requests", "rate-limited"

    def __init__(self, detail: str, *, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class WebhookEndpointNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("No webhook endpoint with this id.")
