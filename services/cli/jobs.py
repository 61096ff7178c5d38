"""``taskroute jobs``: submit and follow jobs as a client system, through the Python client.

The gateway URL and API key come from ``--url`` / ``--api-key`` or ``TASKROUTE_URL`` /
``TASKROUTE_API_KEY``. Confidential data is read from a file (or stdin), never from an argument,
so it stays out of shell history and process listings; it is sealed on this machine by default.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich import box
from rich.console import Console
from rich.table import Table

from services.sdk import TaskrouteAPIError, TaskrouteClient, TaskrouteConnectionError
from services.sdk.models import Job

app = typer.Typer(help="Submit jobs and follow them (client API key).", no_args_is_help=True)

DEFAULT_URL = "http://127.0.0.1:8000"  # where `taskroute up` serves the gateway

UrlOption = Annotated[
    str, typer.Option("--url", envvar="TASKROUTE_URL", help="gateway URL", show_default=True)
]
ApiKeyOption = Annotated[
    str,
    typer.Option("--api-key", envvar="TASKROUTE_API_KEY", help="API key (or TASKROUTE_API_KEY)"),
]
JsonOption = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]


# Piped or captured output has no terminal width: wide enough that rows stay one line each.
PIPED_WIDTH = 200


def console() -> Console:
    return Console(width=None if sys.stdout.isatty() else PIPED_WIDTH)


def fail(message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


@contextmanager
def connected(url: str, api_key: str) -> Iterator[TaskrouteClient]:
    """A client; API errors become a one-line message (with the request id) and exit 1."""
    try:
        with TaskrouteClient(url, api_key) as client:
            yield client
    except TaskrouteAPIError as exc:
        raise fail(str(exc)) from None
    except TaskrouteConnectionError as exc:
        raise fail(f"{exc} at {url}") from None


def print_json(value: BaseModel | Sequence[BaseModel] | dict[str, Any]) -> None:
    if isinstance(value, BaseModel):
        data: Any = value.model_dump(mode="json")
    elif isinstance(value, Sequence):
        data = [item.model_dump(mode="json") for item in value]
    else:
        data = value
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


def _when(job: Job) -> str:
    return job.created_at.strftime("%Y-%m-%d %H:%M:%S")


def jobs_table(jobs: list[Job], title: str | None = None) -> Table:
    table = Table(title=title, box=box.SIMPLE_HEAD)
    table.add_column("id", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("priority", no_wrap=True)
    table.add_column("tier/domain", no_wrap=True)
    table.add_column("team", overflow="fold")
    table.add_column("created (UTC)", no_wrap=True)
    table.add_column("title", overflow="fold")
    for job in jobs:
        kind = (
            f"{job.classification.tier}/{job.classification.domain}" if job.classification else "-"
        )
        team = (job.assignment.team_name or job.assignment.team_id) if job.assignment else "-"
        table.add_row(job.id, job.status, job.priority, kind, team, _when(job), job.title)
    return table


def _confidential(path: Path | None) -> Any:
    if path is None:
        return None
    text = sys.stdin.read() if str(path) == "-" else path.read_text()
    try:
        return json.loads(text)
    except ValueError:
        raise fail("the confidential file is not JSON") from None


def _metadata(pairs: list[str]) -> dict[str, str] | None:
    metadata: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise fail(f"--metadata takes NAME=VALUE, not {pair!r}")
        metadata[name] = value
    return metadata or None


@app.command()
def submit(
    title: Annotated[str, typer.Option(help="short title (the router reads it)")],
    description: Annotated[str, typer.Option(help="what to do (the router reads it)")],
    api_key: ApiKeyOption,
    url: UrlOption = DEFAULT_URL,
    priority: Annotated[str, typer.Option(help="low, normal or high")] = "normal",
    service: Annotated[str | None, typer.Option(help="domain, if you know it")] = None,
    confidential_file: Annotated[
        Path | None,
        typer.Option(help="JSON file with the confidential data ('-' for stdin)"),
    ] = None,
    seal: Annotated[
        bool, typer.Option(help="seal the confidential data here (else at the vault)")
    ] = True,
    metadata: Annotated[
        list[str] | None, typer.Option(help="NAME=VALUE label; repeat for more")
    ] = None,
    callback_url: Annotated[str | None, typer.Option(help="webhook for this job")] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="reuse to retry this submission safely")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Submit a job; its confidential data (from a file) is sealed on this machine."""
    with connected(url, api_key) as client:
        job = client.submit_job(
            title,
            description,
            confidential=_confidential(confidential_file),
            seal=seal,
            service=service,
            priority=priority,
            metadata=_metadata(metadata or []),
            callback_url=callback_url,
            idempotency_key=idempotency_key,
        )
    if as_json:
        print_json(job)
    else:
        console().print(jobs_table([job], title="Submitted"))


@app.command("list")
def list_jobs(
    api_key: ApiKeyOption,
    url: UrlOption = DEFAULT_URL,
    status: Annotated[str | None, typer.Option(help="only jobs in this status")] = None,
    limit: Annotated[int, typer.Option(min=1, help="at most this many jobs")] = 20,
    all_: Annotated[bool, typer.Option("--all", help="every job, page after page")] = False,
    as_json: JsonOption = False,
) -> None:
    """List the tenant's jobs, newest first."""
    with connected(url, api_key) as client:
        found = client.iter_jobs(status=status, page_size=100 if all_ else min(limit, 100))
        jobs = list(found if all_ else islice(found, limit))
    if as_json:
        print_json(jobs)
    else:
        console().print(jobs_table(jobs, title=f"{len(jobs)} job(s)"))


@app.command()
def get(
    job_id: Annotated[str, typer.Argument(help="the job's id")],
    api_key: ApiKeyOption,
    url: UrlOption = DEFAULT_URL,
    as_json: JsonOption = False,
) -> None:
    """Show one job and its timeline."""
    with connected(url, api_key) as client:
        job = client.get_job(job_id)
        events = client.job_events(job_id)
    if as_json:
        print_json(
            {**job.model_dump(mode="json"), "events": [e.model_dump(mode="json") for e in events]}
        )
        return
    out = console()
    out.print(jobs_table([job]))
    timeline = Table(title="Timeline", box=box.SIMPLE_HEAD)
    for name in ("at (UTC)", "from", "to", "actor", "reason"):
        timeline.add_column(name)
    for event in events:
        timeline.add_row(
            event.at.strftime("%Y-%m-%d %H:%M:%S"),
            event.from_status or "-",
            event.to_status or "-",
            event.actor,
            event.reason or "",
        )
    out.print(timeline)


@app.command()
def result(
    job_id: Annotated[str, typer.Argument(help="the job's id")],
    api_key: ApiKeyOption,
    url: UrlOption = DEFAULT_URL,
    show_confidential: Annotated[
        bool, typer.Option(help="print the confidential result too")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Show a completed job's result (the confidential part only on request)."""
    with connected(url, api_key) as client:
        answer = client.get_result(job_id)
    data = answer.model_dump(mode="json")
    has_confidential = data.get("confidential_result") is not None
    if not show_confidential:
        # A terminal is often shared, logged or recorded: confidential data only when asked.
        data.pop("confidential_result", None)
    if as_json:
        print_json(data)
        return
    table = Table(title=f"Result of {job_id}", box=box.SIMPLE_HEAD)
    table.add_column("part")
    table.add_column("value", overflow="fold")
    table.add_row("result", json.dumps(data.get("result"), ensure_ascii=False))
    if show_confidential:
        table.add_row(
            "confidential", json.dumps(data.get("confidential_result"), ensure_ascii=False)
        )
    elif has_confidential:
        table.add_row("confidential", "(present: --show-confidential to print it)")
    console().print(table)


@app.command()
def cancel(
    job_id: Annotated[str, typer.Argument(help="the job's id")],
    api_key: ApiKeyOption,
    url: UrlOption = DEFAULT_URL,
    reason: Annotated[str | None, typer.Option(help="why (kept in the timeline)")] = None,
    as_json: JsonOption = False,
) -> None:
    """Cancel a job that is not completed yet."""
    with connected(url, api_key) as client:
        job = client.cancel_job(job_id, reason=reason)
    if as_json:
        print_json(job)
    else:
        console().print(jobs_table([job], title="Cancelled"))
