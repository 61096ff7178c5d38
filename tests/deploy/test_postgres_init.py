"""deploy/postgres/init.sh, run against the real PostgreSQL server: one database per service,
each owned by a login role that is not a superuser and can reach no other service's database
(a compromised service holds one database's rights, not the server's). Run again, it brings a
volume made by an older release (everything the superuser's) over, and changes nothing more."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from tests.conftest import BACKENDS, POSTGRES_ADMIN_URL
from tests.e2e.conftest import REPO_ROOT

SERVICES = ("gateway", "router", "vault")

pytestmark = [pytest.mark.postgres_only, pytest.mark.parametrize("backend", BACKENDS)]


@pytest.fixture
async def scratch(backend: str, tmp_path: Path) -> AsyncIterator[tuple[str, asyncpg.Connection]]:
    """A role prefix of this test's own, the superuser's connection; everything made with the
    prefix is dropped afterwards."""
    assert backend == "postgres"
    assert shutil.which("psql"), "the PostgreSQL client (psql) is needed to run init.sh"
    prefix = f"trinit_{secrets.token_hex(4)}_"
    admin = await asyncpg.connect(POSTGRES_ADMIN_URL)
    # The script locks down the server's default database: give it one of the test's own.
    await admin.execute(f'CREATE DATABASE "{prefix}default"')
    for service in SERVICES:
        (tmp_path / f"{service}_db_password").write_text(secrets.token_hex(12) + "\n")
    try:
        yield prefix, admin
    finally:
        for name in (*(f"{prefix}{s}" for s in (*SERVICES, "default")),):
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        for service in SERVICES:
            await admin.execute(f'DROP ROLE IF EXISTS "{prefix}{service}"')
        await admin.close()


def run_init(prefix: str, secrets_dir: Path) -> None:
    server = urlsplit(POSTGRES_ADMIN_URL)
    ran = subprocess.run(
        ["sh", str(REPO_ROOT / "deploy" / "postgres" / "init.sh")],
        env={
            **os.environ,
            "POSTGRES_USER": server.username or "postgres",
            "POSTGRES_DB": f"{prefix}default",
            "PGHOST": server.hostname or "127.0.0.1",
            "PGPORT": str(server.port or 5432),
            "TASKROUTE_DB_SECRETS_DIR": str(secrets_dir),
            "TASKROUTE_DB_ROLE_PREFIX": prefix,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 0, ran.stderr


def scram_matches(verifier: str, password: str) -> bool:
    """Whether PostgreSQL's SCRAM-SHA-256 verifier is of ``password`` (RFC 5802, 7677)."""
    scheme, rest = verifier.split("$", 1)
    assert scheme == "SCRAM-SHA-256"
    iterations_salt, keys = rest.split("$")
    iterations, salt = iterations_salt.split(":")
    stored_key = base64.b64decode(keys.split(":")[0])
    salted = hashlib.pbkdf2_hmac(
        "sha256", password.encode(), base64.b64decode(salt), int(iterations)
    )
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    return hmac.compare_digest(hashlib.sha256(client_key).digest(), stored_key)


async def assert_each_role_holds_its_database_only(
    prefix: str, admin: asyncpg.Connection, secrets_dir: Path
) -> None:
    for service in SERVICES:
        role = f"{prefix}{service}"
        # Its password is the secret file's (the test server trusts local logins, so the
        # stored verifier is checked instead of a login).
        verifier = await admin.fetchval(
            "SELECT rolpassword FROM pg_authid WHERE rolname = $1", role
        )
        password = (secrets_dir / f"{service}_db_password").read_text().strip()
        assert scram_matches(verifier, password), service
        flags = await admin.fetchrow(
            "SELECT rolsuper, rolcreatedb, rolcreaterole, rolcanlogin FROM pg_roles"
            " WHERE rolname = $1",
            role,
        )
        assert tuple(flags) == (False, False, False, True)
        own = await asyncpg.connect(POSTGRES_ADMIN_URL, user=role, database=role)
        try:  # its own database: it makes and changes its tables (migrations run as it)
            await own.execute("CREATE TABLE IF NOT EXISTS probe (id int)")
            await own.execute("DROP TABLE probe")
        finally:
            await own.close()
        for other in (*SERVICES, "default"):
            if other != service:
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await asyncpg.connect(
                        POSTGRES_ADMIN_URL, user=role, database=f"{prefix}{other}"
                    )


async def test_each_service_gets_its_own_database_and_nothing_else(
    scratch: tuple[str, asyncpg.Connection], tmp_path: Path
) -> None:
    prefix, admin = scratch
    run_init(prefix, tmp_path)
    await assert_each_role_holds_its_database_only(prefix, admin, tmp_path)
    run_init(prefix, tmp_path)  # again: nothing to do, nothing fails
    await assert_each_role_holds_its_database_only(prefix, admin, tmp_path)


async def test_a_volume_of_an_older_release_is_handed_to_the_service_roles(
    scratch: tuple[str, asyncpg.Connection], tmp_path: Path
) -> None:
    """The older layout: each database and all in it the superuser's, as its migrations made
    them while every service logged in as the superuser."""
    prefix, admin = scratch
    for service in SERVICES:
        await admin.execute(f'CREATE DATABASE "{prefix}{service}"')
        old = await asyncpg.connect(POSTGRES_ADMIN_URL, database=f"{prefix}{service}")
        try:
            await old.execute(
                "CREATE TYPE state AS ENUM ('queued', 'done');"
                " CREATE TABLE jobs (seq serial PRIMARY KEY, state state NOT NULL);"
                " CREATE SEQUENCE tickets; CREATE VIEW queued AS SELECT * FROM jobs;"
                " CREATE FUNCTION load() RETURNS bigint LANGUAGE sql AS"
                " 'SELECT count(*) FROM jobs';"
                " INSERT INTO jobs (state) VALUES ('queued');"
            )
        finally:
            await old.close()

    run_init(prefix, tmp_path)

    await assert_each_role_holds_its_database_only(prefix, admin, tmp_path)
    for service in SERVICES:
        role = f"{prefix}{service}"
        own = await asyncpg.connect(POSTGRES_ADMIN_URL, user=role, database=role)
        try:
            owners = await own.fetch(
                "SELECT c.relname, pg_get_userbyid(c.relowner) FROM pg_class c"
                " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'"
            )
            assert owners
            assert {owner for _, owner in owners} == {role}, owners
            assert await own.fetchval("SELECT pg_get_userbyid(typowner) FROM pg_type"
                                      " WHERE typname = 'state'") == role  # fmt: skip
            # Its data is its own to work with, as before.
            await own.execute("INSERT INTO jobs (state) VALUES ('done')")
            assert await own.fetchval("SELECT count(*) FROM queued") == 2
            assert await own.fetchval("SELECT nextval('tickets')") == 1
            # Later migrations change its tables and replace its functions.
            await own.execute("ALTER TABLE jobs ADD COLUMN note text")
            await own.execute(
                "CREATE OR REPLACE FUNCTION load() RETURNS bigint LANGUAGE sql AS"
                " 'SELECT count(*) + 0 FROM jobs'"
            )
        finally:
            await own.close()
