"""Who is calling: the identity an API key stands for, and the role checks on it."""

from __future__ import annotations

from dataclasses import dataclass

from services.gateway.domain.api_keys import Role
from services.gateway.domain.errors import WrongRole


@dataclass(frozen=True)
class Principal:
    """The caller behind a verified, unrevoked API key."""

    key_id: str
    role: Role
    tenant_id: str | None = None
    team_id: str | None = None
    member_id: str | None = None

    def require(self, role: Role) -> Principal:
        """This principal if it has ``role``; 403 otherwise (the key itself was valid)."""
        if self.role is not role:
            raise WrongRole(needed=role.value)
        return self

    @property
    def actor(self) -> str:
        """How the router's event log names this caller."""
        if self.role is Role.CLIENT:
            return f"client:{self.tenant_id}"
        if self.role is Role.MEMBER:
            return f"member:{self.member_id}"
        return "operator"

    @property
    def tenant(self) -> str:
        """The client's tenant id (a client key always has one)."""
        if self.tenant_id is None:
            raise WrongRole(needed="client")
        return self.tenant_id

    @property
    def team(self) -> str:
        """The member's team id (a member key always has one)."""
        if self.team_id is None:
            raise WrongRole(needed="member")
        return self.team_id

    @property
    def member(self) -> str:
        """The member's own id (a member key always has one)."""
        if self.member_id is None:
            raise WrongRole(needed="member")
        return self.member_id
