"""The router's view of the contract vocabulary: shared words plus the queue order."""

from __future__ import annotations

from shared.vocabulary import TIER_OF_DOMAIN, Domain, Priority, Tier, tier_of

__all__ = ["PRIORITY_RANK", "TIER_OF_DOMAIN", "Domain", "Priority", "Tier", "tier_of"]

# Queue order: a smaller rank is served first, so "high" jobs leave a team's queue first.
PRIORITY_RANK: dict[Priority, int] = {Priority.HIGH: 0, Priority.NORMAL: 1, Priority.LOW: 2}
