"""``airflow-expand new NAME``: a migration folder to fill in, laid out the runbook's way, that loads and
lints clean from the first minute (its SQL files hold only commented examples).
"""

from __future__ import annotations

import re
from pathlib import Path

_NAME = re.compile(r"^[a-z0-9_]+$")

MIGRATION_YAML = """\
# {name}: what changes, and why. The DAG runs: lint -> preflight -> [backup] -> [queues] -> expand
#   -> verify_expand -> [deploy] -> [backfill] -> [indexes] -> soak -> contract -> verify.
# Uncomment what this migration needs; every key is checked when the DAG loads.
# Check it any time with: airflow-expand lint {name}
id: {name}
description: "{name}: say what this migration changes and why"
postgres_conn_id: {conn_id}          # the Airflow connection of the target database
# redis_conn_id: redis_default       # needed with queues:
lock_timeout: 2s                     # DDL waits at most this for a lock, then retries with backoff
ddl_retries: 20
preflight:
  max_transaction_age: 5m            # wait while a transaction older than this runs
  wait: 10m
# backup:
#   directory: /var/backups/postgres   # or s3://<aws_conn_id>@<bucket>/<prefix>: every worker reads it
#   pattern: "pre_migration_*.dump"
#   max_age: 1h
#   take: true
#   must_contain: [my_table]
# queues:
#   names: [sync]
#   prefix: bull
#   drain_timeout: 30m
expand: expand.sql
# deploy:
#   container: backend-worker
#   image: app/backend-worker:1.3.0
#   health_url: http://localhost:65000/health/ready
# backfill:
#   - table: my_table
#     set: new_column = old_column
#     where: new_column IS NULL AND old_column IS NOT NULL
#     batch_size: 10000
# indexes:
#   - {{name: idx_my_table_new_column, table: my_table, columns: [new_column]}}
soak: 24h
contract: contract.sql
rollback: rollback.sql
# verify:
#   - {{name: no gaps, sql: SELECT count(*) FROM my_table WHERE new_column IS NULL, expect: 0}}
#   - name: tenant isolation
#     rls: {{table: my_table, role: app_user, setting: app.current_shop_id, value: "00000000-0000-0000-0000-000000000000"}}
#     expect: 0
tags: []
"""

EXPAND_SQL = """\
-- EXPAND: only additions, so the code running now keeps working. Applied in one transaction,
-- each statement under lock_timeout with retries.
--
-- ALTER TABLE my_table ADD COLUMN IF NOT EXISTS new_column text;
--
-- To rename a column, add the new one and keep both in sync with a trigger until the contract:
-- CREATE OR REPLACE FUNCTION my_table_sync() RETURNS trigger LANGUAGE plpgsql AS $$
-- BEGIN
--   NEW.new_column := coalesce(NEW.new_column, NEW.old_column);
--   RETURN NEW;
-- END
-- $$;
-- CREATE TRIGGER my_table_sync BEFORE INSERT OR UPDATE ON my_table
--   FOR EACH ROW EXECUTE FUNCTION my_table_sync();
--
-- To make new_column NOT NULL in the contract without a long lock, add its check here, NOT VALID:
-- ALTER TABLE my_table ADD CONSTRAINT my_table_new_column_not_null CHECK (new_column IS NOT NULL) NOT VALID;
--
-- Indexes go under indexes: in migration.yaml (built CONCURRENTLY, checked valid); data under backfill:.
"""

CONTRACT_SQL = """\
-- CONTRACT: runs after the soak, when only the new code is live. Applied in one transaction.
--
-- ALTER TABLE my_table VALIDATE CONSTRAINT my_table_new_column_not_null;
-- ALTER TABLE my_table ALTER COLUMN new_column SET NOT NULL;
-- ALTER TABLE my_table DROP CONSTRAINT my_table_new_column_not_null;
-- DROP TRIGGER my_table_sync ON my_table;
-- DROP FUNCTION my_table_sync();
-- ALTER TABLE my_table DROP COLUMN old_column;
"""

ROLLBACK_SQL = """\
-- ROLLBACK: undoes expand.sql (and the indexes), if anything fails before the contract.
-- Drop only what expand created; IF EXISTS, so it also works after a partial expand.
--
-- DROP INDEX CONCURRENTLY IF EXISTS idx_my_table_new_column;
-- DROP TRIGGER IF EXISTS my_table_sync ON my_table;
-- DROP FUNCTION IF EXISTS my_table_sync();
-- ALTER TABLE my_table DROP CONSTRAINT IF EXISTS my_table_new_column_not_null;
-- ALTER TABLE my_table DROP COLUMN IF EXISTS new_column;
"""


class ScaffoldError(ValueError):
    """The folder cannot be created: a bad name, or something already there."""


def scaffold_migration(
    name: str, directory: Path | str, *, postgres_conn_id: str = "postgres_default"
) -> Path:
    """Create ``directory/name/`` with migration.yaml, expand.sql, contract.sql and rollback.sql.

    Refuses to touch an existing path: a scaffold must never overwrite a migration someone wrote.
    """
    if not _NAME.match(name):
        raise ScaffoldError(f"{name!r} is not a migration id: use lower-case letters, digits and _")
    directory = Path(directory)
    if not directory.is_dir():
        raise ScaffoldError(f"{directory}: no such folder")
    folder = directory / name
    try:
        folder.mkdir()
    except FileExistsError as exc:
        raise ScaffoldError(f"{folder} already exists; refusing to overwrite it") from exc
    files = {
        "migration.yaml": MIGRATION_YAML.format(name=name, conn_id=postgres_conn_id),
        "expand.sql": EXPAND_SQL,
        "contract.sql": CONTRACT_SQL,
        "rollback.sql": ROLLBACK_SQL,
    }
    for file_name, text in files.items():
        (folder / file_name).write_text(text, encoding="utf-8")
    return folder
