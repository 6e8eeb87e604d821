"""The deploy operators over a real engine and a real ledger: DockerDeployOperator there and back, and the
app's own migrator in its image through DockerOperator."""

from __future__ import annotations

import datetime as dt
import json

import psycopg
import pytest
from docker import APIClient

from airflow_provider_expand.engine.deploy.docker_client import HealthCheckFailed
from airflow_provider_expand.engine.deploy.release import DEPLOY_STEP, ROLLBACK_STEP
from airflow_provider_expand.engine.ledger.store import Ledger
from airflow_provider_expand.engine.lifecycle import Event, Lifecycle
from airflow_provider_expand.operators.deploy import DockerDeployOperator
from airflow_provider_expand.operators.migrator import MigratorOperator, database_url
from tests.deploy.images import DOCKER_URL, AppContainer, AppImages


def _deploy_op(app: AppContainer, conn_id: str, **kwargs: object) -> DockerDeployOperator:
    args: dict[str, object] = {"health_timeout": dt.timedelta(seconds=20), **kwargs}
    return DockerDeployOperator(
        task_id="deploy",
        migration_id="m1",
        postgres_conn_id=conn_id,
        container=app.name,
        health_url=f"{app.url}/health/ready",
        docker_url=DOCKER_URL,
        **args,  # type: ignore[arg-type]
    )


def test_deploy_records_the_previous_image_and_rollback_returns_to_it(
    docker_api: APIClient,
    app_images: AppImages,
    app_container: AppContainer,
    airflow_conn: dict[str, str],
    pg_conn: psycopg.Connection,
) -> None:
    ledger = Ledger()
    ledger.ensure(pg_conn)
    Lifecycle(ledger).move(pg_conn, "m1", Event.EXPAND_STARTED)
    Lifecycle(ledger).move(pg_conn, "m1", Event.EXPANDED)

    done = _deploy_op(app_container, airflow_conn["postgres"], image=app_images.v2).execute({})  # type: ignore[arg-type]
    assert done is not None and done["previous_image"] == app_images.v1
    record = ledger.get(pg_conn, "m1")
    assert record is not None and record.phase == "deployed" and record.deployed_at is not None
    step = ledger.step(pg_conn, "m1", DEPLOY_STEP)
    assert step is not None and step.status == "success" and step.last_key == app_images.v1

    back = _deploy_op(app_container, airflow_conn["postgres"], rollback=True).execute({})  # type: ignore[arg-type]
    assert back is not None and back["image"] == app_images.v1
    assert docker_api.inspect_container(app_container.name)["Config"]["Image"] == app_images.v1
    rolled = ledger.step(pg_conn, "m1", ROLLBACK_STEP)
    assert rolled is not None and rolled.status == "success"


def test_a_failed_deploy_is_in_the_ledger_with_its_reason(
    app_images: AppImages,
    app_container: AppContainer,
    airflow_conn: dict[str, str],
    pg_conn: psycopg.Connection,
) -> None:
    op = _deploy_op(
        app_container, airflow_conn["postgres"], image=app_images.v3, health_timeout=dt.timedelta(seconds=2)
    )
    with pytest.raises(HealthCheckFailed, match="not healthy within"):
        op.execute({})  # type: ignore[arg-type]
    step = Ledger().step(pg_conn, "m1", DEPLOY_STEP)
    assert step is not None and step.status == "failed" and "404" in (step.error or "")
    assert step.last_key == app_images.v1  # what the rollback goes back to


def test_migrator_gets_the_database_as_private_environment(
    docker_api: APIClient,
    app_images: AppImages,
    airflow_conn: dict[str, str],
    pg_conn: psycopg.Connection,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os

    conn = json.loads(os.environ["AIRFLOW_CONN_APP_DB"])
    conn["password"] = "s3cret-pw"
    monkeypatch.setenv("AIRFLOW_CONN_APP_DB", json.dumps(conn))
    check = (
        'case "$DATABASE_URL" in postgresql://postgres:*@*/expand_test_*) echo "migrated ${#DATABASE_URL}";;'
        ' *) echo "unexpected database url"; exit 3;; esac'
    )
    op = MigratorOperator(
        task_id="expand",
        migration_id="m2",
        postgres_conn_id="app_db",
        image=app_images.v2,
        command=["sh", "-c", check],
        environment={"NODE_ENV": "production"},
        docker_url=DOCKER_URL,
    )
    assert "s3cret-pw" not in json.dumps(op.command)
    url = database_url("app_db")
    assert "s3cret-pw" in url
    assert op.execute({}) == f"migrated {len(url)}"  # type: ignore[arg-type]
    ledger = Ledger()
    record, step = ledger.get(pg_conn, "m2"), ledger.step(pg_conn, "m2", "expand")
    assert record is not None and record.phase == "expanded" and record.expanded_at is not None
    assert step is not None and step.status == "success"

    failing = MigratorOperator(
        task_id="expand",
        migration_id="m3",
        postgres_conn_id="app_db",
        image=app_images.v2,
        command=["sh", "-c", "echo 'migration 0042 failed'; exit 4"],
        docker_url=DOCKER_URL,
    )
    with pytest.raises(Exception, match=r"migration 0042 failed|exit|4"):
        failing.execute({})  # type: ignore[arg-type]
    failed = ledger.step(pg_conn, "m3", "expand")
    assert failed is not None and failed.status == "failed"
