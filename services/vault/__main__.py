"""Run the vault alone: ``python -m services.vault`` (migrates, then serves on its port)."""

from __future__ import annotations

import uvicorn

from services.vault.app import create_app
from services.vault.db.migrate import upgrade
from services.vault.settings import VaultSettings
from shared.logging import configure_logging


def main() -> None:
    settings = VaultSettings()
    configure_logging(settings.service_name, settings.log_level)
    upgrade(settings.resolved_database_url())
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_config=None)


if __name__ == "__main__":
    main()
