"""The contract's classification vocabulary: tiers, the 17 domains, priorities."""

from __future__ import annotations

from enum import StrEnum


class Tier(StrEnum):
    KPO = "KPO"
    BPO = "BPO"


class Domain(StrEnum):
    RESEARCH = "research"
    CLINICAL = "clinical"
    PHARMACEUTICAL = "pharmaceutical"
    BANKING = "banking"
    LEGAL = "legal"
    SALES = "sales"
    MARKETING = "marketing"
    DESIGN = "design"
    ANIMATION = "animation"
    DATABASE_DEVELOPMENT = "database_development"
    WRITING = "writing"
    CONTENT_DEVELOPMENT = "content_development"
    DATA_ENTRY = "data_entry"
    DATA_PROCESSING = "data_processing"
    BOOKKEEPING = "bookkeeping"
    TECHNICAL_SUPPORT = "technical_support"
    CUSTOMER_SUPPORT = "customer_support"


_BPO = frozenset(
    {
        Domain.DATA_ENTRY,
        Domain.DATA_PROCESSING,
        Domain.BOOKKEEPING,
        Domain.TECHNICAL_SUPPORT,
        Domain.CUSTOMER_SUPPORT,
    }
)

# The tier follows from the domain: the contract lists each domain under exactly one tier.
TIER_OF_DOMAIN: dict[Domain, Tier] = {
    domain: (Tier.BPO if domain in _BPO else Tier.KPO) for domain in Domain
}


def tier_of(domain: Domain) -> Tier:
    return TIER_OF_DOMAIN[domain]


class Priority(StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"


# Queue order: a smaller rank is served first, so "high" jobs leave a team's queue first.
PRIORITY_RANK: dict[Priority, int] = {Priority.HIGH: 0, Priority.NORMAL: 1, Priority.LOW: 2}
