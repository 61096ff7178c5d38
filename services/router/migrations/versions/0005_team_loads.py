"""Per-team load counter (issue 4, routing at scale): ``team_loads`` and its triggers.

A routing decision needs each able team's load (queued plus in-progress jobs). Counting them
per decision made its cost grow with the queue (BENCHMARKS.md, "Routing at scale"); now the
database keeps the count:

- ``team_loads (team_id PK -> teams.id, active_jobs)``, back-filled here from ``COUNT(*)``;
- a trigger on ``teams`` inserts each new team's row (0);
- a trigger on ``jobs`` (insert, delete, update of ``status`` or ``team_id``) subtracts one
  from the team a job leaves the active set of and adds one to the team it enters, as atomic
  ``active_jobs = active_jobs +/- 1`` in the writer's own transaction. A move between two teams
  updates the two rows in team-id order, so two opposite moves cannot deadlock each other.

Triggers, not application code, so every writer keeps the count right, including replicas
still running the previous release while this migration runs and bulk loads.

Revision ID: 0005_team_loads
Revises: 0004_review
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_team_loads"
down_revision: str | None = "0004_review"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The statuses that occupy a team (written out: a migration must do the same thing forever).
_ACTIVE = "('queued', 'in_progress')"

_BACKFILL = f"""
INSERT INTO team_loads (team_id, active_jobs)
SELECT teams.id, (
    SELECT COUNT(*) FROM jobs WHERE jobs.team_id = teams.id AND jobs.status IN {_ACTIVE}
) FROM teams
"""

_SQLITE = [
    """
CREATE TRIGGER trg_teams_load_row AFTER INSERT ON teams
BEGIN
    INSERT OR IGNORE INTO team_loads (team_id, active_jobs) VALUES (NEW.id, 0);
END
""",
    f"""
CREATE TRIGGER trg_jobs_load_insert AFTER INSERT ON jobs
WHEN NEW.team_id IS NOT NULL AND NEW.status IN {_ACTIVE}
BEGIN
    UPDATE team_loads SET active_jobs = active_jobs + 1 WHERE team_id = NEW.team_id;
END
""",
    f"""
CREATE TRIGGER trg_jobs_load_delete AFTER DELETE ON jobs
WHEN OLD.team_id IS NOT NULL AND OLD.status IN {_ACTIVE}
BEGIN
    UPDATE team_loads SET active_jobs = active_jobs - 1 WHERE team_id = OLD.team_id;
END
""",
    f"""
CREATE TRIGGER trg_jobs_load_update AFTER UPDATE OF status, team_id ON jobs
WHEN OLD.team_id IS NOT NEW.team_id
    OR (OLD.status IN {_ACTIVE}) IS NOT (NEW.status IN {_ACTIVE})
BEGIN
    UPDATE team_loads SET active_jobs = active_jobs - 1
    WHERE team_id = OLD.team_id AND OLD.status IN {_ACTIVE};
    UPDATE team_loads SET active_jobs = active_jobs + 1
    WHERE team_id = NEW.team_id AND NEW.status IN {_ACTIVE};
END
""",
]

_POSTGRES = [
    """
CREATE FUNCTION taskroute_team_load_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO team_loads (team_id, active_jobs) VALUES (NEW.id, 0)
    ON CONFLICT (team_id) DO NOTHING;
    RETURN NULL;
END
$$
""",
    """
CREATE TRIGGER trg_teams_load_row AFTER INSERT ON teams
FOR EACH ROW EXECUTE FUNCTION taskroute_team_load_row()
""",
    f"""
CREATE FUNCTION taskroute_team_load() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    left_team text;
    entered_team text;
BEGIN
    IF TG_OP <> 'INSERT' THEN
        IF OLD.team_id IS NOT NULL AND OLD.status IN {_ACTIVE} THEN
            left_team := OLD.team_id;
        END IF;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        IF NEW.team_id IS NOT NULL AND NEW.status IN {_ACTIVE} THEN
            entered_team := NEW.team_id;
        END IF;
    END IF;
    IF left_team IS NOT DISTINCT FROM entered_team THEN
        RETURN NULL;
    END IF;
    -- Two rows: lock them in team-id order, so opposite moves cannot deadlock.
    IF left_team IS NOT NULL AND (entered_team IS NULL OR left_team < entered_team) THEN
        UPDATE team_loads SET active_jobs = active_jobs - 1 WHERE team_id = left_team;
        IF entered_team IS NOT NULL THEN
            UPDATE team_loads SET active_jobs = active_jobs + 1 WHERE team_id = entered_team;
        END IF;
    ELSE
        UPDATE team_loads SET active_jobs = active_jobs + 1 WHERE team_id = entered_team;
        IF left_team IS NOT NULL THEN
            UPDATE team_loads SET active_jobs = active_jobs - 1 WHERE team_id = left_team;
        END IF;
    END IF;
    RETURN NULL;
END
$$
""",
    """
CREATE TRIGGER trg_jobs_team_load AFTER INSERT OR DELETE OR UPDATE OF status, team_id ON jobs
FOR EACH ROW EXECUTE FUNCTION taskroute_team_load()
""",
]


def upgrade() -> None:
    op.create_table(
        "team_loads",
        sa.Column(
            "team_id",
            sa.String(36),
            sa.ForeignKey("teams.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("active_jobs", sa.Integer(), nullable=False, server_default="0"),
    )
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        # No job may move between the back-fill and the trigger taking over.
        op.execute("LOCK TABLE jobs IN SHARE ROW EXCLUSIVE MODE")
        op.execute("LOCK TABLE teams IN SHARE ROW EXCLUSIVE MODE")
    for statement in _POSTGRES if dialect == "postgresql" else _SQLITE:
        op.execute(statement)
    op.execute(_BACKFILL)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS trg_jobs_team_load ON jobs")
        op.execute("DROP TRIGGER IF EXISTS trg_teams_load_row ON teams")
        op.execute("DROP FUNCTION IF EXISTS taskroute_team_load()")
        op.execute("DROP FUNCTION IF EXISTS taskroute_team_load_row()")
    else:
        for name in (
            "trg_jobs_load_update",
            "trg_jobs_load_delete",
            "trg_jobs_load_insert",
            "trg_teams_load_row",
        ):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.drop_table("team_loads")
