"""The vault's errors, on the shared problem+json base (see :mod:`shared.errors`).

No detail carries a key, a grant token or a confidential value: details are returned to the
gateway and written to logs.
"""

from __future__ import annotations

from shared.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    ServiceUnavailable,
    TaskrouteError,
)


class VaultSealed(ServiceUnavailable):
    """No root key is loaded: nothing can be sealed, opened or verified."""

    problem = "vault-sealed"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(
            detail
            or "The vault is sealed: no root key is loaded. Configure TASKROUTE_VAULT_ROOT_KEY "
            "or a root key file."
        )


class GrantRefused(Forbidden):
    """A grant is invalid, of the wrong kind, or does not cover the record asked for.

    ``reason`` is a short code stored in the audit log (never the token itself).
    """

    problem = "grant-refused"

    def __init__(self, detail: str, *, reason: str) -> None:
        super().__init__(detail)
        self.reason = reason


class RecordNotFound(NotFound):
    problem = "record-not-found"

    def __init__(self) -> None:
        super().__init__("No sealed record has this reference.")


class RecordExists(Conflict):
    problem = "record-exists"

    def __init__(self, purpose: str) -> None:
        super().__init__(f"A {purpose!s} record is already sealed for this tenant and job.")


class RecordIntegrityError(TaskrouteError):
    """A stored ciphertext or wrapped key failed authentication: tampering or a wrong root key."""

    status, title, problem = 500, "Integrity check failed", "integrity"

    def __init__(self) -> None:
        super().__init__(
            "A stored key or record failed its integrity check; it was not opened. "
            "Quote the request id to an operator."
        )


class AuditUnavailable(ServiceUnavailable):
    """The audit log cannot record the operation now, so the operation is refused (fail closed)."""

    problem = "audit-unavailable"


class RootKeyMismatch(ServiceUnavailable):
    """The loaded root key is not the one that wrapped a tenant key (a deployment fault)."""

    problem = "root-key-mismatch"

    def __init__(self) -> None:
        super().__init__(
            "The vault's root key is not the one this tenant's key was wrapped with; "
            "check the root key configuration."
        )


class InvalidCursor(BadRequest):
    def __init__(self) -> None:
        super().__init__("The cursor is not one this list returned; start again without it.")
