"""Failpoints: named places where a fault-injection test makes a service fail on purpose.

Off in every real deployment: only when ``TASKROUTE_FAILPOINTS_FILE`` names a file does a hit
read it, and only a line ``<name>=<action>`` there arms that point. The file is read on every
hit, so a test arms and disarms points while the processes run (a service restarted by the
supervisor sees the same file). Actions:

* ``kill``: the process sends itself SIGKILL at once, as a crash or an OOM kill would.
* ``error``: the hit raises :class:`FailpointError` (an ordinary exception: a failed step).

Points are placed where a crash is the hardest to survive: after one durable step and before
the next (see docs/operations.md, "Fault injection").
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

FAILPOINTS_FILE_VARIABLE = "TASKROUTE_FAILPOINTS_FILE"


class FailpointError(RuntimeError):
    """Raised by an armed ``error`` failpoint."""


def failpoint(name: str) -> None:
    """Act on ``name`` if a test armed it; nothing (one dictionary lookup) otherwise."""
    path = os.environ.get(FAILPOINTS_FILE_VARIABLE)
    if not path:
        return
    try:
        armed = Path(path).read_text()
    except OSError:
        return
    for line in armed.splitlines():
        point, _, action = line.strip().partition("=")
        if point != name:
            continue
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if action == "error":
            raise FailpointError(f"failpoint {name} armed")
