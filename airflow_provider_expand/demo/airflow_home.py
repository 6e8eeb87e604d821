"""The demo's Airflow: a home under ``.demo/`` (SQLite metadata DB), a copy of the example migration with
the soak shortened, and the connections ``app_db``/``app_redis`` passed through the environment.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import redis

MIGRATION_ID = "products_title_to_name"
ADMIN_USER = "admin"
ADMIN_PASSWORD = "admin"


def connection_env(
    pg_dsn: str, redis_url: str, *, pg_conn_id: str = "app_db", redis_conn_id: str = "app_redis"
) -> dict[str, str]:
    """``AIRFLOW_CONN_*`` variables (JSON form: a socket directory as host survives it, a URI would not)."""
    params = psycopg.conninfo.conninfo_to_dict(pg_dsn)
    pg: dict[str, object] = {
        "conn_type": "postgres",
        "host": str(params.get("host") or "127.0.0.1"),
        "port": int(str(params.get("port") or 5432)),
        "login": str(params.get("user") or "postgres"),
        "schema": str(params.get("dbname") or "postgres"),
    }
    if params.get("password"):
        pg["password"] = str(params["password"])
    r = redis.connection.parse_url(redis_url)
    rconn = {
        "conn_type": "redis",
        "host": str(r.get("host", "127.0.0.1")),
        "port": int(r.get("port", 6379)),
        "extra": {"db": int(r.get("db", 0))},
    }
    return {
        f"AIRFLOW_CONN_{pg_conn_id.upper()}": json.dumps(pg),
        f"AIRFLOW_CONN_{redis_conn_id.upper()}": json.dumps(rconn),
    }


def airflow_env(home: Path, dags: Path, *, port: int = 8080, parallelism: int = 4) -> dict[str, str]:
    """Settings for a small local Airflow: SQLite, LocalExecutor, few worker processes, no examples."""
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": str(parallelism),
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
        # the provider's plugins (the migration view) load only when providers are discovered eagerly
        "AIRFLOW__CORE__LAZY_DISCOVER_PROVIDERS": "False",
        # where the migration view finds the specs (the DAG file beside it loads the same folder)
        "AIRFLOW__EXPAND__MIGRATIONS_FOLDER": str(dags.parent / "migrations"),
    }


def write_passwords(home: Path) -> None:
    """A known login for the demo UI (the simple auth manager would otherwise generate one)."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "passwords.json").write_text(json.dumps({ADMIN_USER: ADMIN_PASSWORD}) + "\n")


def install_migration(example: Path, state: Path, *, soak: str) -> Path:
    """Copy the example migration into ``state/migrations`` with ``soak`` instead of 24 h, and a DAG file
    in ``state/dags`` that builds it. Returns the dags folder."""
    target = state / "migrations" / example.name
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(example, target)
    spec = target / "migration.yaml"
    text, count = re.subn(r"(?m)^soak:.*$", f"soak: {soak}", spec.read_text(encoding="utf-8"))
    if count != 1:
        raise ValueError(f"{spec}: expected one top-level 'soak:' key to shorten, found {count}")
    spec.write_text(text, encoding="utf-8")
    dags = state / "dags"
    dags.mkdir(parents=True, exist_ok=True)
    (dags / "expand_demo.py").write_text(
        '"""The demo\'s copy of the example migration (soak shortened)."""\n\n'
        "from airflow_provider_expand.dag_factory import build_migration_dags\n\n"
        f"globals().update(build_migration_dags({str(state / 'migrations')!r}))\n",
        encoding="utf-8",
    )
    return dags


def migrate_metadata_db(env: dict[str, str]) -> None:
    """``airflow db migrate``, once per Airflow version (idempotent, but it costs seconds on every run)."""
    marker = Path(env["AIRFLOW_HOME"]) / f".migrated-{importlib.metadata.version('apache-airflow')}"
    if marker.exists():
        return
    subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        env={**os.environ, **env},
        check=True,
        stdout=subprocess.DEVNULL,
    )
    marker.touch()
