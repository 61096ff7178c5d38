"""``taskroute up`` stops all three services cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal

from tests.e2e.conftest import Platform


def test_sigterm_stops_every_service_cleanly(spare_platform: Platform) -> None:
    platform = spare_platform  # one no other module uses again: this test stops it
    pids = [platform.pid(service) for service in ("gateway", "router", "vault")]
    platform.process.send_signal(signal.SIGTERM)
    assert platform.process.wait(timeout=30) == 0, platform.logs()[-3000:]
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        raise AssertionError(f"process {pid} still running after taskroute up stopped")
    assert "all services stopped" in platform.logs()
    # The root key file was made on first start, readable by its owner only.
    assert (platform.data_dir / "vault-root.key").stat().st_mode & 0o777 == 0o600
    assert platform.data_dir.stat().st_mode & 0o777 == 0o700
