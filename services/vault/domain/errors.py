"""The vault's errors, on the shared problem+json base (see :mod:`shared.errors`).

No detail carries a key, a grant token or a confidential value: details are returned to the
gateway and written to logs.
"""

from __future__ import annotations

from shared.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    Gone,
    NotFound,
    ServiceUnavailable,
    TaskrouteError,
    UnprocessableContent,
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
    # A busy chain lock is held for milliseconds; a second is ample before a retry.
    retry_after = 1


class TenantKeysChanging(ServiceUnavailable):
    """The tenant's key was retired or shredded under a seal, again on every retry."""

    problem = "tenant-keys-changing"
    retry_after = 1

    def __init__(self) -> None:
        super().__init__("The tenant's keys changed while sealing; nothing was stored. Retry.")


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


class EnvelopeRefused(UnprocessableContent):
    """A client-sealed envelope is malformed, names another tenant or key, or does not open.

    ``reason`` is the envelope error's code (stored in the audit log); ``field`` names the
    envelope field at fault. Neither ever carries a byte of the envelope's content.
    """

    problem = "envelope-refused"

    def __init__(self, detail: str, *, reason: str, field: str | None) -> None:
        super().__init__(f"The sealed envelope was refused: {detail}.", field=field, code=reason)
        self.reason = reason


class UnknownSealingKey(UnprocessableContent):
    problem = "unknown-sealing-key"

    def __init__(self) -> None:
        super().__init__(
            "The envelope's key_id is not one of this tenant's vault keys; fetch the current "
            "keys from GET /v1/vault/public-key and seal again.",
            field="key_id",
        )


class TenantShredded(Gone):
    """The tenant's keys were destroyed (crypto-shredding): its data can never be opened again."""

    problem = "tenant-shredded"

    def __init__(self) -> None:
        super().__init__(
            "This tenant's keys were destroyed; its confidential data can no longer be read "
            "or added."
        )


class KeyRetired(Conflict):
    """The data or envelope is under a key version an operator retired."""

    problem = "key-retired"

    def __init__(self) -> None:
        super().__init__(
            "This data is under a retired key version and is no longer decrypted; an operator "
            "retires a version only after rewrapping, so quote the request id to one."
        )


class RewrapPending(Conflict):
    problem = "rewrap-pending"

    def __init__(self, remaining: int) -> None:
        super().__init__(
            f"{remaining} records still use an older key version; rewrap them before retiring "
            "older versions."
        )


class AnchoringOff(Conflict):
    """No audit anchor store is configured, so the head cannot be anchored on demand."""

    problem = "anchoring-off"

    def __init__(self) -> None:
        super().__init__(
            "No audit anchor store is configured (TASKROUTE_VAULT_AUDIT_ANCHOR_FILE); nothing "
            "was anchored."
        )
