"""A whole migration with a deploy step through ``dag.test()``: a real container recreated on the new image
and watched, notifications to a real local SMTP server (aiosmtpd) with the ledger's timeline; a deploy whose
health fails rolls the container back to v1 before rollback.sql, and the run ends failed."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from docker import APIClient

from airflow_provider_expand.engine.ledger.store import Ledger
from tests.dags.harness import Inbox, copy_migration, install_dag_file, run_dag, seed_demo, states
from tests.deploy.images import DOCKER_URL, AppContainer, AppImages, app_container, app_images, docker_api

__all__ = ["app_container", "app_images", "docker_api"]


@pytest.fixture
def smtp_inbox(monkeypatch: pytest.MonkeyPatch) -> Iterator[Inbox]:
    """A real SMTP server on loopback and the Airflow connection ``smtp_test`` pointing at it."""
    from aiosmtpd.controller import Controller

    from tests.deploy.images import free_port

    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    extra = {"disable_ssl": True, "disable_tls": True, "retry_limit": 0, "timeout": 10}
    monkeypatch.setenv(
        "AIRFLOW_CONN_SMTP_TEST",
        json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": port, "extra": extra}),
    )
    yield inbox
    controller.stop()


def _migration(tmp: Path, home: Path, app: AppContainer, image: str, **deploy: Any) -> tuple[Path, str]:
    migration_id = f"products_deploy_{uuid.uuid4().hex[:8]}"
    folder = copy_migration(
        tmp,
        migration_id,
        queues=None,
        redis_conn_id=None,
        soak="1s",
        deploy={
            "container": app.name,
            "image": image,
            "health_url": f"{app.url}/health/ready",
            "health_timeout": "15s",
            "watch": "2s",
            "escalate_after": "30s",
            "docker_url": DOCKER_URL,
            **deploy,
        },
        notify={"smtp": {"to": ["oncall@example.com"], "conn_id": "smtp_test"}},
    )
    return install_dag_file(home, folder.parent, migration_id), migration_id


def test_migration_with_deploy_completes_and_mails_the_timeline(
    tmp_path: Path,
    airflow_home: Path,
    airflow_conn: dict[str, str],
    pg_conn: psycopg.Connection,
    docker_api: APIClient,
    app_images: AppImages,
    app_container: AppContainer,
    smtp_inbox: Inbox,
) -> None:
    seed_demo(pg_conn, 2000)
    dag_file, migration_id = _migration(tmp_path, airflow_home, app_container, app_images.v2)

    run = run_dag(dag_file, migration_id)

    got = states(run)
    assert str(run.state) == "success", got
    assert got["deploy"] == got["watch"] == got["done"] == "success"
    assert got["rollback"] == "skipped", got
    assert docker_api.inspect_container(app_container.name)["Config"]["Image"] == app_images.v2
    record = Ledger().get(pg_conn, migration_id)
    assert record is not None and record.phase == "completed" and record.deployed_at is not None
    assert record.expanded_at is not None and record.expanded_at <= record.deployed_at
    assert [s for s in smtp_inbox.subjects() if "completed" in s], smtp_inbox.subjects()
    body = smtp_inbox.body("completed")
    for line in ("phase deployed", "deploy success", "watch success", "expand success", "phase contracted"):
        assert line in body, body


def test_failed_deploy_rolls_the_container_back_before_rollback_sql(
    tmp_path: Path,
    airflow_home: Path,
    airflow_conn: dict[str, str],
    pg_conn: psycopg.Connection,
    docker_api: APIClient,
    app_images: AppImages,
    app_container: AppContainer,
    smtp_inbox: Inbox,
) -> None:
    seed_demo(pg_conn, 2000)
    dag_file, migration_id = _migration(
        tmp_path, airflow_home, app_container, app_images.v3, health_timeout="3s"
    )

    run = run_dag(dag_file, migration_id)

    got = states(run)
    assert str(run.state) == "failed", got
    assert got["deploy"] == "failed" and got["rollback"] == "success", got
    assert got["done"] == "upstream_failed", got
    info = docker_api.inspect_container(app_container.name)
    assert info["Config"]["Image"] == app_images.v1 and info["State"]["Running"]
    ledger = Ledger()
    record = ledger.get(pg_conn, migration_id)
    assert record is not None and record.phase == "rolled_back"
    steps = {s.step: s for s in ledger.steps(pg_conn, migration_id)}
    assert steps["deploy"].status == "failed" and steps["rollback:deploy"].status == "success"
    container_back, sql_back = steps["rollback:deploy"], steps["rollback"]
    assert container_back.finished_at is not None and sql_back.started_at is not None
    assert container_back.finished_at <= sql_back.started_at  # the new code stopped before rollback.sql
    columns = {
        r[0]
        for r in pg_conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'products'"
        )
    }
    assert "name" not in columns and "title" in columns
    subjects = smtp_inbox.subjects()
    assert any("FAILED at task deploy" in s for s in subjects), subjects
    assert any("ROLLED BACK" in s for s in subjects), subjects
    body = smtp_inbox.body("ROLLED BACK")
    assert "deploy failed" in body and "404" in body and "rollback:deploy success" in body, body


def test_deploy_watch_migrator_and_notify_in_the_graph(tmp_path: Path) -> None:
    """Built without any server: where the issue-5 steps sit and what rolls back."""
    from airflow.sdk import TriggerRule

    from airflow_provider_expand.dag_factory import build_migration_dag
    from airflow_provider_expand.notifications import MigrationNotifier
    from airflow_provider_expand.operators.deploy import DockerDeployOperator
    from airflow_provider_expand.operators.migrator import MigratorOperator
    from airflow_provider_expand.operators.rollback import RollbackOperator

    deploy = {
        "container": "backend-worker",
        "image": "app/backend-worker:1.3.0",
        "health_url": "http://localhost:65000/health/ready",
    }
    notify = {"smtp": {"to": ["oncall@example.com"]}}
    folder = copy_migration(tmp_path, "with_deploy", deploy=deploy, notify=notify)
    dag = build_migration_dag(folder)
    for upstream, downstream in (
        ("verify_expand", "deploy"),
        ("deploy", "watch"),
        ("watch", "backfill.products"),
    ):
        assert downstream in dag.get_task(upstream).downstream_task_ids, (upstream, downstream)
    assert "deploy" in dag.get_task("queues.resume").upstream_task_ids
    rollback = dag.get_task("rollback")
    assert isinstance(rollback, RollbackOperator) and rollback.deploy is not None
    assert rollback.deploy["container"] == "backend-worker"
    assert {"deploy", "watch"} <= rollback.upstream_task_ids
    events = {
        task_id: [
            n.event
            for n in dag.get_task(task_id).on_failure_callback or []
            if isinstance(n, MigrationNotifier)
        ]
        for task_id in ("expand", "deploy", "contract")
    }
    assert events == {"expand": ["failure"], "deploy": ["failure"], "contract": ["failure"]}
    assert [n.event for n in rollback.on_success_callback] == ["rollback"]  # type: ignore[union-attr]
    assert [n.event for n in dag.get_task("done").on_success_callback] == ["completion"]  # type: ignore[union-attr]

    migrator = copy_migration(
        tmp_path / "m",
        "with_migrator",
        expand={"image": "app/backend-worker:1.3.0", "command": "pnpm --filter @app/database run migrate"},
        deploy=deploy,
        rollback=None,
        contract=None,
    )
    dag = build_migration_dag(migrator)
    expand = dag.get_task("expand")
    assert isinstance(expand, MigratorOperator) and expand.image == "app/backend-worker:1.3.0"
    assert "DATABASE_URL" not in str(expand.command) and expand.network_mode == "host"
    back = dag.get_task("rollback")  # no rollback.sql: the container alone goes back
    assert isinstance(back, DockerDeployOperator) and back.rollback
    assert back.trigger_rule == TriggerRule.ONE_FAILED and "deploy" in back.upstream_task_ids
