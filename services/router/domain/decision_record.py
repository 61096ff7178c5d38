"""The stored decision record, compact at scale, and its readable view.

A decision record used to list every excluded team with its sentences: 187 KB per decision at
1,000 teams (BENCHMARKS.md, "Routing at scale"), written with every routing. Excluded teams
are now stored grouped by their *set* of exclusion codes, with one sentence per code for the
job (team-independent: the team's own country or load is in the team, not repeated here)::

    "excluded_groups": [
        {"codes": ["country_not_allowed", "missing_certifications"],
         "reasons": ["country not allowed by policy (IE)", "missing a certification ..."],
         "team_ids": ["...", "..."]},
        ...
    ],
    "excluded_count": 997,
    "record_format": 2

Grouping by the set (not by each code) keeps every team's exact reasons and stores each id
once. Eligible teams are stored as before, with their scores and components.

:func:`routing_view` is what ``GET .../routing`` answers for old and new records alike:
``excluded_by_reason`` (the groups, with team names) and, for existing readers, ``excluded``
(one entry per team: ``team_id``, ``team_name``, ``codes``, ``reasons``). Records stored
before (with only ``excluded``) are grouped on the fly, so both keys are there for every job.
Team names of new records are the teams' current names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.router.domain.routing import Decision, group_reason

RECORD_FORMAT = 2


def stored_record(decision: Decision) -> dict[str, Any]:
    """The record to store: :meth:`Decision.to_record` with the excluded teams grouped."""
    record = decision.to_record()
    del record["excluded"]
    groups: dict[tuple[str, ...], list[str]] = {}
    for exclusion in decision.excluded:  # already sorted by team name, then id
        groups.setdefault(exclusion.codes, []).append(exclusion.team.id)
    record["excluded_groups"] = [
        {
            "codes": list(codes),
            "reasons": [group_reason(code, decision.request) for code in codes],
            "team_ids": team_ids,
        }
        for codes, team_ids in sorted(groups.items(), key=lambda item: (-len(item[1]), item[0]))
    ]
    record["excluded_count"] = len(decision.excluded)
    record["record_format"] = RECORD_FORMAT
    return record


def team_ids_of(record: Mapping[str, Any]) -> list[str]:
    """The excluded team ids a stored record names (to look their names up)."""
    return [
        str(team_id)
        for group in record.get("excluded_groups") or ()
        for team_id in group.get("team_ids") or ()
    ]


def routing_view(record: Mapping[str, Any], team_names: Mapping[str, str]) -> dict[str, Any]:
    """The readable record of either format; ``team_names`` maps ids to names (new format)."""
    view = {k: v for k, v in record.items() if k != "excluded_groups"}
    groups: list[dict[str, Any]]
    per_team: list[dict[str, Any]]
    if "excluded_groups" in record:
        groups = [
            {
                "codes": list(group["codes"]),
                "reasons": list(group["reasons"]),
                "teams": [
                    {"team_id": team_id, "team_name": team_names.get(team_id, team_id)}
                    for team_id in group["team_ids"]
                ],
            }
            for group in record["excluded_groups"]
        ]
        per_team = [
            {**team, "codes": group["codes"], "reasons": group["reasons"]}
            for group in groups
            for team in group["teams"]
        ]
        per_team.sort(key=lambda entry: (entry["team_name"], entry["team_id"]))
    else:
        per_team = [dict(entry) for entry in record.get("excluded") or ()]
        grouped: dict[tuple[str, ...], dict[str, Any]] = {}
        for entry in per_team:
            codes = tuple(entry.get("codes") or ())
            group = grouped.setdefault(
                codes,
                # An old record's sentences are per team; the group shows its first team's.
                {"codes": list(codes), "reasons": list(entry.get("reasons") or ()), "teams": []},
            )
            group["teams"].append(
                {"team_id": entry.get("team_id"), "team_name": entry.get("team_name")}
            )
        groups = sorted(grouped.values(), key=lambda g: (-len(g["teams"]), g["codes"]))
    for group in groups:
        group["count"] = len(group["teams"])
    view["excluded"] = per_team
    view["excluded_by_reason"] = groups
    view.setdefault("excluded_count", len(per_team))
    return view
