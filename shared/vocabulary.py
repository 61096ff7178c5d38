"""The contract's public vocabulary, which gateway and router must spell the same way.

Tiers, the 17 domains (and the tier each belongs to), priorities, and the ISO 3166-1 alpha-2
country codes that teams and data policies name. Words only: the rules that use them live in
each service's ``domain/``.
"""

from __future__ import annotations

from enum import StrEnum


class Tier(StrEnum):
    KPO = "KPO"
    BPO = "BPO"


class Domain(StrEnum):
    """The contract's 17 service domains (12 KPO, 5 BPO)."""

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


# Officially assigned ISO 3166-1 alpha-2 codes: a policy or team naming anything else is refused.
ISO_3166_ALPHA2: frozenset[str] = frozenset(
    """
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ
    BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM
    DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS
    GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN
    KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ
    MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM
    PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV
    SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI
    VN VU WF WS YE YT ZA ZM ZW
    """.split()
)
