#!/bin/sh
# One database per service, each owned by a login role of its own that is not a superuser and
# can reach no other service's database: a compromised service holds one database's rights,
# not the server's. The superuser (POSTGRES_USER) is this container's alone.
#
# The postgres image's entrypoint runs this once, on a fresh volume. It can be run again at any
# time, and that is how a volume made by an older release (every database owned by the
# superuser, every service logging in as it) is brought over: it makes what is missing, sets
# each role's password from its secret file, and hands each database and everything in it to
# its role (docs/operations.md, "Upgrading"):
#
#   docker compose exec -T postgres sh /docker-entrypoint-initdb.d/10-taskroute.sh
#
# Each role's password is read from <secrets dir>/<service>_db_password (compose secrets).
# TASKROUTE_DB_SECRETS_DIR and TASKROUTE_DB_ROLE_PREFIX exist for the test that runs this
# script against a real server (tests/deploy/test_postgres_init.py).
set -eu

secrets_dir="${TASKROUTE_DB_SECRETS_DIR:-/run/secrets}"
prefix="${TASKROUTE_DB_ROLE_PREFIX:-taskroute_}"

as_superuser() {
  psql -v ON_ERROR_STOP=1 --quiet --username "$POSTGRES_USER" "$@"
}

for service in gateway router vault; do
  name="$prefix$service"
  # To psql through its environment, not its command line (which any process may list).
  TASKROUTE_DB_PASSWORD="$(cat "$secrets_dir/${service}_db_password")"
  export TASKROUTE_DB_PASSWORD
  as_superuser --dbname "$POSTGRES_DB" --set=name="$name" <<'SQL'
\getenv password TASKROUTE_DB_PASSWORD
SELECT format('CREATE ROLE %I LOGIN', :'name')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'name') \gexec
ALTER ROLE :"name" LOGIN PASSWORD :'password' NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION;
SELECT format('CREATE DATABASE %I OWNER %I', :'name', :'name')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'name') \gexec
ALTER DATABASE :"name" OWNER TO :"name";
REVOKE ALL ON DATABASE :"name" FROM PUBLIC;
SQL
  # What an older release made in the database belongs to the superuser: hand it over (a
  # table takes its indexes and its columns' sequences along).
  as_superuser --dbname "$name" --set=name="$name" <<'SQL'
ALTER SCHEMA public OWNER TO :"name";
SELECT format('ALTER TABLE public.%I OWNER TO %I', tablename, :'name')
FROM pg_tables WHERE schemaname = 'public' AND tableowner <> :'name' \gexec
SELECT format('ALTER VIEW public.%I OWNER TO %I', viewname, :'name')
FROM pg_views WHERE schemaname = 'public' AND viewowner <> :'name' \gexec
SELECT format('ALTER SEQUENCE public.%I OWNER TO %I', c.relname, :'name')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind = 'S' AND pg_get_userbyid(c.relowner) <> :'name' \gexec
SELECT format('ALTER TYPE public.%I OWNER TO %I', t.typname, :'name')
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE n.nspname = 'public' AND t.typtype IN ('e', 'd')
  AND pg_get_userbyid(t.typowner) <> :'name' \gexec
SELECT format('ALTER ROUTINE public.%I(%s) OWNER TO %I', p.proname,
              pg_get_function_identity_arguments(p.oid), :'name')
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = 'public' AND pg_get_userbyid(p.proowner) <> :'name' \gexec
SQL
done
unset TASKROUTE_DB_PASSWORD
# Nobody but the superuser connects to the server's default database either.
as_superuser --dbname "$POSTGRES_DB" --set=name="$POSTGRES_DB" <<'SQL'
REVOKE ALL ON DATABASE :"name" FROM PUBLIC;
SQL
