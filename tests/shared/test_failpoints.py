"""Failpoints: armed from a file, read at every hit; off when no file is named."""

from __future__ import annotations

import asyncio
import time

import pytest

from shared.failpoints import (
    FAILPOINTS_FILE_VARIABLE,
    FailpointError,
    async_failpoint,
    failpoint,
)


def test_an_unarmed_point_does_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv(FAILPOINTS_FILE_VARIABLE, raising=False)
    failpoint("gateway.submit.after_seal")
    armed = tmp_path / "failpoints"
    armed.write_text("router.submit.before_commit=error\n")
    monkeypatch.setenv(FAILPOINTS_FILE_VARIABLE, str(armed))
    failpoint("gateway.submit.after_seal")  # another point is armed, not this one


def test_an_error_point_raises_until_disarmed(tmp_path, monkeypatch):
    armed = tmp_path / "failpoints"
    armed.write_text("gateway.submit.after_seal=error\n")
    monkeypatch.setenv(FAILPOINTS_FILE_VARIABLE, str(armed))
    with pytest.raises(FailpointError):
        failpoint("gateway.submit.after_seal")
    armed.write_text("")
    failpoint("gateway.submit.after_seal")


async def test_a_sleep_point_stalls_only_its_own_coroutine(tmp_path, monkeypatch):
    armed = tmp_path / "failpoints"
    armed.write_text("gateway.submit.after_seal=sleep:0.3\n")
    monkeypatch.setenv(FAILPOINTS_FILE_VARIABLE, str(armed))
    failpoint("gateway.submit.after_seal")  # a synchronous hit cannot sleep: it ignores it
    ticks = 0

    async def the_rest_of_the_process() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    ticking = asyncio.create_task(the_rest_of_the_process())
    started = time.monotonic()
    await async_failpoint("gateway.submit.after_seal")
    stalled = time.monotonic() - started
    ticking.cancel()
    assert stalled >= 0.3
    assert ticks >= 5  # the loop went on meanwhile
    armed.write_text("gateway.submit.after_seal=error\n")
    with pytest.raises(FailpointError):
        await async_failpoint("gateway.submit.after_seal")
