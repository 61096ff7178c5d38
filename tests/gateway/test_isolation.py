"""The isolation walk: every client and member route, enumerated from the app itself (so a route
added later cannot be forgotten), called with another tenant's or another team's credentials
and this tenant's or team's ids. The answer is 404 or 403 (the same as for an unknown id), never
data, and nothing changes.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI

from tests.gateway.conftest import Platform
from tests.gateway.test_api import BOOKKEEPING_JOB, BOOKKEEPING_TEAM, bearer, create_tenant

UNKNOWN_ID = "0b0e7d7e-1f0a-4b8e-9d55-3c2a1b0f9e77"
# A valid body for each route that takes one, so that the walk reaches the route's scoping
# (an invalid body would stop at a 422 first). A new route with a body needs an entry here.
BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/v1/jobs"): BOOKKEEPING_JOB,
    ("POST", "/v1/jobs/{job_id}/cancel"): {"reason": "walk"},
    ("POST", "/v1/team/jobs/{job_id}/send-back"): {"comment": "walk"},
    ("POST", "/v1/jobs/{job_id}/feedback"): {"rating": 1, "comment": "walk"},
    ("POST", "/v1/team/jobs/{job_id}/release"): {"reason": "walk"},
    ("POST", "/v1/team/jobs/{job_id}/reject"): {"reason": "walk"},
    ("POST", "/v1/team/jobs/{job_id}/complete"): {"result": {"walk": True}},
    ("POST", "/v1/classify"): {"items": [{"description": "Reconcile bookkeeping ledgers"}]},
    ("POST", "/v1/webhook-endpoints"): {"url": "https://example.com/hook"},
}


def routes_for(
    app: FastAPI, prefix: str, *, excluding: tuple[str, ...] = ()
) -> list[tuple[str, str]]:
    """(method, path) of every documented operation under ``prefix``.

    Read from the OpenAPI document, the public list of routes: the contract puts member routes
    under ``/v1/team/``, operator routes under ``/v1/admin/`` and client routes everywhere else
    under ``/v1/``.
    """
    found = []
    for path, operations in app.openapi()["paths"].items():
        if path.startswith(prefix) and not path.startswith(excluding):
            for method in operations:
                found.append((method.upper(), path))
    return sorted(found)


def fill(path: str, ids: dict[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in ids, f"the walk has no victim id for {{{name}}} in {path}: add one"
        return ids[name]

    return re.sub(r"\{(\w+)\}", one, path)


async def _world(platform: Platform) -> dict[str, Any]:
    """Acme's jobs at team A (one queued, one claimed by A's member); Globex and team B attack."""
    gw = platform.client
    acme = await create_tenant(platform, name="Acme")
    globex = await create_tenant(platform, name="Globex")
    teams, members = [], []
    for name in ("Team A", "Team B"):
        team = await gw.post(
            "/v1/admin/teams", json={**BOOKKEEPING_TEAM, "name": name}, headers=platform.operator
        )
        assert team.status_code == 201, team.text
        teams.append(team.json())
        member = await gw.post(
            f"/v1/admin/teams/{team.json()['id']}/members",
            json={"name": f"Member of {name}"},
            headers=platform.operator,
        )
        assert member.status_code == 201, member.text
        members.append(member.json())
        if name == "Team A":
            # Team B does not exist yet: Acme's jobs can only go to team A.
            jobs = []
            for title in ("Acme secret ledger one", "Acme secret ledger two"):
                job = await gw.post(
                    "/v1/jobs",
                    json={**BOOKKEEPING_JOB, "title": title, "confidential": {"k": title}},
                    headers=bearer(acme["api_key"]),
                )
                assert job.status_code == 202, job.text
                assert job.json()["assignment"]["team_id"] == team.json()["id"]
                jobs.append(job.json())
            claimed = await gw.post(
                f"/v1/team/jobs/{jobs[1]['id']}/claim", headers=bearer(member.json()["api_key"])
            )
            assert claimed.status_code == 200, claimed.text
    hook = await gw.post(
        "/v1/webhook-endpoints",
        json={"url": "https://acme.example.com/secret-hook-path"},
        headers=bearer(acme["api_key"]),
    )
    assert hook.status_code == 201, hook.text
    return {
        "acme": acme,
        "globex": globex,
        "members": members,
        "jobs": jobs,
        "endpoint": hook.json(),
    }


async def _statuses(platform: Platform, acme_key: str, jobs: list[dict[str, Any]]) -> list[str]:
    answers = [
        await platform.client.get(f"/v1/jobs/{job['id']}", headers=bearer(acme_key)) for job in jobs
    ]
    return [answer.json()["status"] for answer in answers]


async def _walk(
    platform: Platform,
    routes: list[tuple[str, str]],
    attacker: dict[str, str],
    victim_ids: list[dict[str, str]],
    secrets: list[str],
) -> None:
    for method, path in routes:
        body = BODIES.get((method, path))
        if "{" not in path:
            # A list or a create: it runs for the attacker, and shows nothing of the victim.
            answer = await platform.client.request(method, path, json=body, headers=attacker)
            assert answer.status_code < 500, (method, path, answer.text)
            for secret in secrets:
                assert secret not in answer.text, (method, path)
            continue
        for ids in victim_ids:
            foreign = await platform.client.request(
                method, fill(path, ids), json=body, headers=attacker
            )
            assert foreign.status_code in (403, 404), (method, path, foreign.text)
            for secret in secrets:
                assert secret not in foreign.text, (method, path)
            unknown = await platform.client.request(
                method,
                fill(path, dict.fromkeys(ids, UNKNOWN_ID)),
                json=body,
                headers=attacker,
            )
            # Foreign and unknown ids answer alike: the answer does not reveal existence.
            assert unknown.status_code == foreign.status_code, (method, path)
            a, b = foreign.json(), unknown.json()
            assert (a["type"], a["title"], a["detail"]) == (b["type"], b["title"], b["detail"])


async def test_every_client_and_member_route_is_isolated(platform):
    world = await _world(platform)
    acme_key = world["acme"]["api_key"]
    jobs = world["jobs"]
    before = await _statuses(platform, acme_key, jobs)
    assert before == ["queued", "in_progress"]
    endpoint = world["endpoint"]
    secrets = [job["id"] for job in jobs] + [job["title"] for job in jobs]
    secrets += [endpoint["id"], endpoint["url"], endpoint["secret"]]

    client_routes = routes_for(platform.app, "/v1/", excluding=("/v1/team/", "/v1/admin/"))
    member_routes = routes_for(platform.app, "/v1/team/")
    # The walk is not vacuous: the contract's routes are all there.
    assert ("GET", "/v1/jobs/{job_id}") in client_routes
    assert ("POST", "/v1/jobs/{job_id}/cancel") in client_routes
    assert ("GET", "/v1/team/jobs/{job_id}/confidential") in member_routes
    assert ("POST", "/v1/team/jobs/{job_id}/complete") in member_routes
    assert ("DELETE", "/v1/webhook-endpoints/{endpoint_id}") in client_routes
    victim_ids = [{"job_id": job["id"], "endpoint_id": endpoint["id"]} for job in jobs]

    # Another tenant's client key on every client route, with Acme's job ids.
    await _walk(platform, client_routes, bearer(world["globex"]["api_key"]), victim_ids, secrets)
    # Another team's member key on every member route, with team A's job ids.
    await _walk(
        platform, member_routes, bearer(world["members"][1]["api_key"]), victim_ids, secrets
    )
    # Nothing changed.
    assert await _statuses(platform, acme_key, jobs) == before
    hooks = await platform.client.get("/v1/webhook-endpoints", headers=bearer(acme_key))
    assert [hook["id"] for hook in hooks.json()["data"]] == [endpoint["id"]]
    # The victims still see their own data (the checks above were not vacuous).
    mine = await platform.client.get(
        "/v1/team/jobs", headers=bearer(world["members"][0]["api_key"])
    )
    assert {job["id"] for job in jobs} <= {job["id"] for job in mine.json()["data"]}
