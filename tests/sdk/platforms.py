"""A real platform with chosen settings (a tiny rate limit, a short upstream timeout, ...)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.e2e.conftest import Platform, launch_platform


@contextmanager
def started_platform(
    tmp_path_factory: pytest.TempPathFactory, extra_env: dict[str, str], backend: str = "sqlite"
) -> Iterator[Platform]:
    """``taskroute up`` on free ports with extra ``TASKROUTE_*`` settings."""
    with launch_platform(backend, tmp_path_factory.mktemp("platform"), extra_env) as platform:
        yield platform
