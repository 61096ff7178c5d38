"""Failpoints: named places where a fault-injection test makes a service fail on purpose.

Off in every real deployment: only when ``TASKROUTE_FAILPOINTS_FILE`` names a file does a hit
read it, and only a line ``<name>=<action>`` there arms that point. The file is read on every
hit, so a test arms and disarms points while the processes run (a service restarted by the
supervisor sees the same file). Actions:

* ``kill``: the process sends itself SIGKILL at once, as a crash or an OOM kill would.
* ``error``: the hit raises :class:`FailpointError` (an ordinary exception: a failed step).
* ``sleep:<seconds>``: at an async point (:func:`async_failpoint`) the request waits that long
  on the event loop while the rest of the process carries on, as a stalled request would (a
  slow network path, a paused client); a synchronous point ignores it.

Points are placed where a crash is the hardest to survive: after one durable step and before
the next (see docs/operations.md, "Fault injection").
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

FAILPOINTS_FILE_VARIABLE = "TASKROUTE_FAILPOINTS_FILE"


class FailpointError(RuntimeError):
    """Raised by an armed ``error`` failpoint."""


def failpoint(name: str) -> None:
    """Act on ``name`` if a test armed it; nothing (one dictionary lookup) otherwise."""
    _act(name, _armed_action(name))


async def async_failpoint(name: str) -> None:
    """:func:`failpoint` for a point in a coroutine, which may also be armed to ``sleep``."""
    action = _armed_action(name)
    if action is not None and action.startswith("sleep:"):
        await asyncio.sleep(float(action.removeprefix("sleep:")))
        return
    _act(name, action)


def _act(name: str, action: str | None) -> None:
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if action == "error":
        raise FailpointError(f"failpoint {name} armed")


def _armed_action(name: str) -> str | None:
    path = os.environ.get(FAILPOINTS_FILE_VARIABLE)
    if not path:
        return None
    try:
        armed = Path(path).read_text()
    except OSError:
        return None
    for line in armed.splitlines():
        point, _, action = line.strip().partition("=")
        if point == name:
            return action
    return None
