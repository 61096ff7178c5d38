"""The router's pure rules: classifier, routing filters and score, lifecycle, grants, cursors."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from services.router.db.pagination import InvalidCursor, decode_cursor, encode_cursor
from services.router.domain.classifier import LexiconClassifier, normalise
from services.router.domain.errors import InvalidTransition
from services.router.domain.grants import GrantAction, member_grant, tenant_result_grant
from services.router.domain.lifecycle import (
    ALLOWED_TRANSITIONS,
    TERMINAL,
    JobStatus,
    can_transition,
    ensure_transition,
    status_words,
)
from services.router.domain.routing import (
    DataPolicy,
    RoutingRequest,
    ScoreWeights,
    TeamProfile,
    WorkingHours,
    decide,
    shift_status,
)
from services.router.domain.taxonomy import TIER_OF_DOMAIN, Domain, Tier

THRESHOLD = 0.5  # the default triage threshold
classifier = LexiconClassifier()

# ----------------------------------------------------------------------------- classifier

REALISTIC = [
    (
        "Code adverse events from CRFs",
        "Read the case report forms of 40 patients in our phase III trial and code every "
        "adverse event with MedDRA preferred terms; flag serious adverse events.",
        Domain.CLINICAL,
    ),
    (
        "Month-end bookkeeping",
        "Reconcile the March bank statements against the general ledger, post the missing "
        "journal entries and match vendor invoices in accounts payable (QuickBooks).",
        Domain.BOOKKEEPING,
    ),
    (
        "Transcribe scanned forms",
        "Key in 2,000 handwritten customer registration forms from scanned PDFs into our "
        "spreadsheet template; double entry verification required.",
        Domain.DATA_ENTRY,
    ),
    (
        "Level 1 helpdesk cover",
        "Handle password reset tickets, troubleshoot VPN login issues and escalate printer "
        "outages to level 2 according to our SLA.",
        Domain.TECHNICAL_SUPPORT,
    ),
    (
        "Refunds and order status emails",
        "Answer customer service emails about order status, refund requests and return "
        "requests; keep CSAT above 90%.",
        Domain.CUSTOMER_SUPPORT,
    ),
    (
        "NDA and MSA review",
        "Review incoming NDAs and flag indemnity and limitation of liability clauses; "
        "summarise jurisdiction and governing law for our attorney.",
        Domain.LEGAL,
    ),
    (
        "KYC refresh",
        "Perform KYC refresh and sanctions screening for 300 corporate bank accounts, "
        "document anti money laundering risk ratings.",
        Domain.BANKING,
    ),
    (
        "PSUR preparation",
        "Compile the periodic safety update report (PSUR) for our drug: pharmacovigilance "
        "case listings, signal detection and ICSR counts for the EMA submission.",
        Domain.PHARMACEUTICAL,
    ),
    (
        "Competitor landscape",
        "Desk research and competitive analysis of five SaaS vendors with market sizing and a "
        "SWOT for each; cite every source.",
        Domain.RESEARCH,
    ),
    (
        "Explainer video",
        "Produce a 60 second 2D animation explainer video: storyboard, keyframes, lip sync for "
        "the narrator, rendered at 30 fps in After Effects.",
        Domain.ANIMATION,
    ),
    (
        "Landing page wireframes",
        "Design wireframes and high-fidelity mockups in Figma for our landing page, with a "
        "colour palette and typography that follow the brand identity.",
        Domain.DESIGN,
    ),
    (
        "Slow reports query",
        "Optimise the PostgreSQL stored procedures behind our reporting schema; add indexes "
        "and rewrite the SQL joins of the data warehouse load.",
        Domain.DATABASE_DEVELOPMENT,
    ),
    (
        "Onboarding course",
        "Build an e-learning course for new hires: curriculum, learning objectives, quizzes "
        "and SCORM packages for our LMS.",
        Domain.CONTENT_DEVELOPMENT,
    ),
    (
        "Blog posts",
        "Write four 1,200-word blog posts and a press release; proofread and copy edit them "
        "in our tone of voice.",
        Domain.WRITING,
    ),
    (
        "Outbound prospecting",
        "Cold calling and cold email prospecting to book meetings with decision makers; log "
        "every lead in Salesforce and qualify them.",
        Domain.SALES,
    ),
    (
        "Q3 campaign",
        "Plan the Q3 email marketing campaign and Google Ads retargeting; improve the "
        "conversion rate of our SEO landing pages.",
        Domain.MARKETING,
    ),
    (
        "Clean the supplier list",
        "Deduplicate and standardise 50,000 supplier records in CSV, data cleansing and "
        "validation of addresses before the data conversion.",
        Domain.DATA_PROCESSING,
    ),
]


@pytest.mark.parametrize(("title", "description", "expected"), REALISTIC)
def test_classifier_recognises_realistic_jobs(title, description, expected):
    result = classifier.classify(title=title, description=description, service_hint=None)
    assert result.domain is expected, result.reasons
    assert result.tier is TIER_OF_DOMAIN[expected]
    assert result.confidence >= THRESHOLD, result.reasons
    assert result.reasons
    assert expected.value in result.reasons[0]


def test_every_domain_is_covered_by_a_realistic_text():
    assert {expected for _, _, expected in REALISTIC} == set(Domain)


def test_reasons_name_the_matched_terms():
    result = classifier.classify(
        title="", description="Report each adverse event using MedDRA.", service_hint=None
    )
    assert result.domain is Domain.CLINICAL
    assert "'adverse event'" in result.reasons[0]
    assert "'meddra'" in result.reasons[0]
    assert "→ clinical" in result.reasons[0]


def test_tiers_follow_domains():
    assert (
        classifier.classify(title="Bank reconciliation", description="", service_hint=None).tier
        is Tier.BPO
    )
    assert TIER_OF_DOMAIN[Domain.LEGAL] is Tier.KPO
    assert sum(tier is Tier.BPO for tier in TIER_OF_DOMAIN.values()) == 5
    assert len(TIER_OF_DOMAIN) == 17


def test_service_hint_is_honoured():
    result = classifier.classify(
        title="Help", description="Please look at the attached.", service_hint="legal"
    )
    assert (result.domain, result.tier, result.confidence) == (Domain.LEGAL, Tier.KPO, 1.0)
    assert "client named the service" in result.reasons[0]


def test_unknown_service_hint_is_ignored_with_a_reason():
    result = classifier.classify(
        title="Invoices", description="Reconcile supplier invoices.", service_hint="astrology"
    )
    assert result.domain is Domain.BOOKKEEPING
    assert any("not a known domain" in reason for reason in result.reasons)


@pytest.mark.parametrize(
    "text", ["", "Please help us with this.", "Urgent!!! See attachment, thanks", "日本語のみ"]
)
def test_no_signal_means_no_confidence(text):
    result = classifier.classify(title=text, description=text, service_hint=None)
    assert result.confidence == 0.0
    assert "no known term matched" in result.reasons[-1]


def test_a_single_weak_word_goes_to_triage():
    result = classifier.classify(title="", description="Some analysis please", service_hint=None)
    assert result.confidence < THRESHOLD


def test_two_domains_in_a_tie_go_to_triage():
    # One decisive bookkeeping term and one decisive legal term: nothing separates them.
    result = classifier.classify(title="", description="payroll affidavit", service_hint=None)
    assert result.confidence == 0.0
    assert "runner-up" in result.reasons[1]


def test_normalisation_handles_case_accents_punctuation_and_plurals():
    assert normalise("Réconcile the INVOICES, please!") == "reconcile the invoice please"
    result = classifier.classify(title="", description="INVOICES & Ledgers", service_hint=None)
    assert result.domain is Domain.BOOKKEEPING


def test_classification_is_deterministic():
    first = classifier.classify(title="a", description="payroll affidavit", service_hint=None)
    second = classifier.classify(title="a", description="payroll affidavit", service_hint=None)
    assert first == second


# ----------------------------------------------------------------------------- routing

# Friday 27 November 2026, 10:00 UTC: 15:30 in Kolkata, 05:00 in New York, 18:00 in Manila.
NOW = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
OFFICE = WorkingHours.from_json({"start": "09:00", "end": "18:00", "days": [0, 1, 2, 3, 4]})


def team(**overrides) -> TeamProfile:
    base = TeamProfile(
        id="t-1",
        name="Alpha",
        country="IN",
        timezone="Asia/Kolkata",
        working_hours=OFFICE,
        tier=Tier.KPO,
        skills=frozenset({"clinical"}),
        certifications=frozenset({"HIPAA"}),
        capacity=10,
        hourly_rate=30.0,
        quality=0.8,
        active=True,
        load=0,
    )
    return replace(base, **overrides)


def request(**overrides) -> RoutingRequest:
    base = RoutingRequest(
        tier=Tier.KPO, domain=Domain.CLINICAL, policy=DataPolicy(), now=NOW, due_at=None
    )
    return replace(base, **overrides)


def codes_of(decision) -> dict[str, list[str]]:
    return {e.team.id: list(e.codes) for e in decision.excluded}


@pytest.mark.parametrize(
    ("overrides", "req", "code", "phrase"),
    [
        ({"active": False}, {}, "inactive", "inactive"),
        ({"tier": Tier.BPO}, {}, "wrong_tier", "the job is KPO"),
        ({"skills": frozenset({"legal"})}, {}, "lacks_skill", "'clinical'"),
        (
            {"country": "PH"},
            {"policy": DataPolicy(allowed_countries=frozenset({"IE", "CZ"}))},
            "country_not_allowed",
            "country PH not allowed by policy (CZ, IE)",
        ),
        (
            {"certifications": frozenset()},
            {"policy": DataPolicy(required_certifications=frozenset({"HIPAA", "SOC2"}))},
            "missing_certifications",
            "HIPAA, SOC2",
        ),
        ({"load": 10}, {}, "at_capacity", "at capacity (10/10)"),
        ({}, {"rejected_by": frozenset({"t-1"})}, "rejected", "rejected this job"),
    ],
)
def test_each_filter_excludes_with_a_reason(overrides, req, code, phrase):
    decision = decide(request=request(**req), teams=[team(**overrides)], weights=ScoreWeights())
    assert decision.eligible == []
    assert decision.chosen is None
    [exclusion] = decision.excluded
    assert exclusion.codes == (code,)
    assert phrase in exclusion.reasons[0]


def test_an_excluded_team_keeps_every_reason():
    decision = decide(
        request=request(policy=DataPolicy(allowed_countries=frozenset({"IE"}))),
        teams=[team(active=False, skills=frozenset({"legal"}), load=10)],
        weights=ScoreWeights(),
    )
    assert codes_of(decision)["t-1"] == [
        "inactive",
        "lacks_skill",
        "country_not_allowed",
        "at_capacity",
    ]


def test_policy_that_the_team_meets_keeps_it_eligible():
    policy = DataPolicy(
        allowed_countries=frozenset({"IN"}), required_certifications=frozenset({"HIPAA"})
    )
    decision = decide(request=request(policy=policy), teams=[team()], weights=ScoreWeights())
    assert decision.chosen is not None
    assert decision.chosen.team.id == "t-1"


def test_ranking_prefers_quality_and_low_load():
    good = team(id="good", name="Good", quality=0.95, load=1)
    busy = team(id="busy", name="Busy", quality=0.95, load=8)
    weak = team(id="weak", name="Weak", quality=0.5, load=1)
    decision = decide(request=request(), teams=[weak, busy, good], weights=ScoreWeights())
    assert [c.team.id for c in decision.eligible] == ["good", "busy", "weak"] or [
        c.team.id for c in decision.eligible
    ] == ["good", "weak", "busy"]
    assert decision.eligible[0].team.id == "good"
    components = decision.eligible[0].components
    assert set(components) == {"skill", "quality", "load", "cost", "timezone"}
    assert components["load"] == pytest.approx(0.9)


def test_specialist_beats_generalist_and_cheap_beats_dear():
    specialist = team(id="s", name="S", skills=frozenset({"clinical"}), hourly_rate=40)
    generalist = team(
        id="g", name="G", skills=frozenset({"clinical", "research", "legal"}), hourly_rate=40
    )
    decision = decide(request=request(), teams=[generalist, specialist], weights=ScoreWeights())
    assert decision.chosen is not None
    assert decision.chosen.team.id == "s"
    cheap = team(id="c", name="C", hourly_rate=10)
    dear = team(id="d", name="D", hourly_rate=50)
    decision = decide(request=request(), teams=[dear, cheap], weights=ScoreWeights())
    assert decision.chosen is not None
    assert decision.chosen.team.id == "c"
    assert {c.team.id: c.components["cost"] for c in decision.eligible} == {"c": 1.0, "d": 0.0}


def test_weights_are_configurable():
    cheap_weak = team(id="cw", name="CW", hourly_rate=10, quality=0.5)
    dear_strong = team(id="ds", name="DS", hourly_rate=50, quality=0.9)
    by_cost = ScoreWeights(skill=0, quality=0.1, load=0, cost=5, timezone=0)
    by_quality = ScoreWeights(skill=0, quality=5, load=0, cost=0.1, timezone=0)
    by_cost_choice = decide(request=request(), teams=[cheap_weak, dear_strong], weights=by_cost)
    by_quality_choice = decide(
        request=request(), teams=[cheap_weak, dear_strong], weights=by_quality
    )
    assert by_cost_choice.chosen is not None
    assert by_cost_choice.chosen.team.id == "cw"
    assert by_quality_choice.chosen is not None
    assert by_quality_choice.chosen.team.id == "ds"


def test_shift_status_with_a_fixed_clock():
    # 15:30 on a Friday in Kolkata: at work.
    assert shift_status(OFFICE, "Asia/Kolkata", NOW) == (True, 0.0)
    # 05:00 in New York: the shift starts in 4 hours.
    at_work, hours = shift_status(OFFICE, "America/New_York", NOW)
    assert not at_work
    assert hours == pytest.approx(4.0)
    # 18:00 on Friday in Manila: off until Monday 09:00, 63 hours away.
    at_work, hours = shift_status(OFFICE, "Asia/Manila", NOW)
    assert not at_work
    assert hours == pytest.approx(63.0)


def test_overnight_shift_spans_midnight():
    night = WorkingHours.from_json({"start": "22:00", "end": "06:00", "days": [3]})  # Thursday
    # Friday 03:00 in Dublin (UTC in winter) belongs to Thursday's night shift.
    friday_3am = datetime(2026, 11, 27, 3, 0, tzinfo=UTC)
    assert shift_status(night, "Europe/Dublin", friday_3am) == (True, 0.0)
    assert shift_status(night, "Europe/Dublin", NOW)[0] is False


def test_time_zone_fit_prefers_the_team_at_work_when_the_job_is_urgent():
    # Same in every way but one is at work (Kolkata) and one asleep (New York); the sleeping
    # one is cheaper, which wins when nothing is urgent.
    at_work = team(id="in", name="IN", timezone="Asia/Kolkata", hourly_rate=40)
    asleep = team(id="us", name="US", timezone="America/New_York", hourly_rate=30, country="US")
    weights = ScoreWeights()  # the defaults: cost 0.5, timezone 0.5, x3 when urgent
    relaxed = decide(request=request(), teams=[at_work, asleep], weights=weights)
    assert relaxed.chosen is not None
    assert relaxed.chosen.team.id == "us"
    assert not relaxed.urgent
    urgent = decide(
        request=request(due_at=NOW + timedelta(hours=3)), teams=[at_work, asleep], weights=weights
    )
    assert urgent.urgent
    assert urgent.chosen is not None
    assert urgent.chosen.team.id == "in"
    # New York starts work in 4 hours, after the 3-hour deadline: no time-zone credit at all.
    assert {c.team.id: c.components["timezone"] for c in urgent.eligible} == {"in": 1.0, "us": 0.0}
    # Without a deadline the same team, 4 hours from its shift, earns 1 - 4/24.
    assert {c.team.id: c.components["timezone"] for c in relaxed.eligible}["us"] == pytest.approx(
        1 - 4 / 24, abs=1e-3
    )


def test_decision_record_explains_itself():
    eligible = team(id="a", name="A")
    excluded = team(id="b", name="B", active=False)
    decision = decide(request=request(), teams=[excluded, eligible], weights=ScoreWeights())
    record = decision.to_record()
    assert record["chosen"]["team_id"] == "a"
    assert record["eligible"][0]["team_name"] == "A"
    assert set(record["eligible"][0]["components"]) == {
        "skill",
        "quality",
        "load",
        "cost",
        "timezone",
    }
    assert record["excluded"] == [
        {"team_id": "b", "team_name": "B", "codes": ["inactive"], "reasons": ["team is inactive"]}
    ]
    assert record["at"] == NOW.isoformat()
    assert record["policy"] == {
        "allowed_countries": None,
        "required_certifications": [],
        "require_e2e": False,
    }


def test_ties_are_broken_reproducibly():
    teams = [team(id=f"t{i}", name=f"Same {i}") for i in (3, 1, 2)]
    ids = [
        c.team.id for c in decide(request=request(), teams=teams, weights=ScoreWeights()).eligible
    ]
    assert ids == ["t1", "t2", "t3"]


# ----------------------------------------------------------------------------- lifecycle

S = JobStatus
CONTRACT_MOVES = [
    (S.PENDING, S.QUEUED),
    (S.PENDING, S.TRIAGE),
    (S.PENDING, S.UNROUTABLE),
    (S.QUEUED, S.IN_PROGRESS),
    (S.QUEUED, S.CANCELLED),
    (S.QUEUED, S.QUEUED),
    (S.IN_PROGRESS, S.COMPLETED),
    (S.IN_PROGRESS, S.QUEUED),
    (S.IN_PROGRESS, S.CANCELLED),
    (S.TRIAGE, S.QUEUED),
    (S.TRIAGE, S.CANCELLED),
    (S.UNROUTABLE, S.QUEUED),
    (S.UNROUTABLE, S.CANCELLED),
]


@pytest.mark.parametrize(("source", "target"), CONTRACT_MOVES)
def test_contract_transitions_are_allowed(source, target):
    ensure_transition(source, target)


@pytest.mark.parametrize(
    ("source", "target"),
    [
        (S.COMPLETED, S.QUEUED),
        (S.CANCELLED, S.QUEUED),
        (S.COMPLETED, S.CANCELLED),
        (S.QUEUED, S.COMPLETED),
        (S.TRIAGE, S.IN_PROGRESS),
        (S.PENDING, S.IN_PROGRESS),
        (S.UNROUTABLE, S.IN_PROGRESS),
        (S.QUEUED, S.PENDING),
    ],
)
def test_other_transitions_are_refused_with_409(source, target):
    with pytest.raises(InvalidTransition) as caught:
        ensure_transition(source, target)
    assert caught.value.status == 409


def test_terminal_statuses_and_the_reject_extension():
    assert TERMINAL == {S.COMPLETED, S.CANCELLED}
    # A rejected job with no other team must be able to wait as unroutable.
    assert can_transition(S.QUEUED, S.UNROUTABLE)
    assert can_transition(S.IN_PROGRESS, S.UNROUTABLE)
    allowed = {(s, t) for s, targets in ALLOWED_TRANSITIONS.items() for t in targets}
    assert set(CONTRACT_MOVES) <= allowed
    assert allowed - set(CONTRACT_MOVES) == {
        (S.QUEUED, S.UNROUTABLE),
        (S.IN_PROGRESS, S.UNROUTABLE),
        # Four-eyes review (docs/architecture.md): held results, approved or sent back.
        (S.IN_PROGRESS, S.IN_REVIEW),
        (S.IN_REVIEW, S.COMPLETED),
        (S.IN_REVIEW, S.IN_PROGRESS),
        (S.IN_REVIEW, S.CANCELLED),
        # A review that moves to another team, or work no allowed team may review, routed
        # to be done anew (a team or tenant policy change; docs/architecture.md).
        (S.IN_REVIEW, S.IN_REVIEW),
        (S.IN_REVIEW, S.QUEUED),
        (S.IN_REVIEW, S.UNROUTABLE),
    }


# ----------------------------------------------------------------------------- grants


LEASE = "2026-11-29T15:12:36.000001Z#2"


def test_member_grants_follow_the_documented_claims():
    opened = member_grant(
        action=GrantAction.OPEN,
        tenant_id="t",
        job_id="j",
        member_id="m",
        confidential_ref="rec_1",
        require_e2e=True,
        lease=LEASE,
    ).to_claims()
    assert opened == {
        "action": "open",
        "tenant_id": "t",
        "job_id": "j",
        "purpose": "job",
        "ref": "rec_1",
        "subject": "member:m",
        "require_e2e": True,
    }
    sealed = member_grant(
        action=GrantAction.SEAL,
        tenant_id="t",
        job_id="j",
        member_id="m",
        confidential_ref="rec_1",
        require_e2e=False,
        lease=LEASE,
    ).to_claims()
    assert (sealed["action"], sealed["purpose"], sealed["ref"]) == ("seal", "result", None)
    assert sealed["lease"] == LEASE  # the vault's receipt for the result names it


def test_tenant_result_grant():
    claims = tenant_result_grant(tenant_id="t", job_id="j", result_ref="rec_r").to_claims()
    assert claims["subject"] == "tenant:t"
    assert (claims["action"], claims["purpose"], claims["ref"]) == ("open", "result", "rec_r")


# ----------------------------------------------------------------------------- cursors


def test_cursor_round_trip():
    moment = datetime(2026, 1, 2, 3, 4, 5, 678, tzinfo=UTC)
    cursor = encode_cursor([1, moment, "abc"])
    assert decode_cursor(cursor, (int, datetime, str)) == [1, moment, "abc"]


@pytest.mark.parametrize(
    "cursor", ["!!!", "bm90IGpzb24", encode_cursor(["x"]), encode_cursor([1, 2])]
)
def test_bad_cursors_are_400(cursor):
    with pytest.raises(InvalidCursor) as caught:
        decode_cursor(cursor, (datetime, str))
    assert caught.value.status == 400


def test_a_status_reads_as_words_in_a_refusal():
    said = {status.value: f"The job is {status_words(status.value)}." for status in JobStatus}
    assert said["triage"] == "The job is in triage."
    assert said["in_review"] == "The job is in review."
    assert all("_" not in sentence for sentence in said.values())
