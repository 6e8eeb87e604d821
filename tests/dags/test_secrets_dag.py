"""A whole migration through ``dag.test()`` whose ``pause_url``, ``resume_url`` and ``health_url`` carry
credentials, with a deploy that fails its health check (so the rollback and the failure mails run): the
password reaches none of the rendered fields Airflow stored, the serialized DAG, the task output, Redis,
the ledger or the mails, while the app's endpoints still got it as Basic auth."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from sqlalchemy import text

from tests.dags.harness import copy_migration, install_dag_file, run_dag, seed_bullmq_queue, seed_demo, states
from tests.dags.test_deploy_dag import Inbox, smtp_inbox
from tests.deploy.images import DOCKER_URL, AppContainer, AppImages, app_container, app_images, docker_api
from tests.secret_urls import PASSWORD, USER, AuthServer, ledger_text, redis_dump

__all__ = ["app_container", "app_images", "docker_api", "smtp_inbox"]


@pytest.fixture
def auth_server() -> Iterator[AuthServer]:
    server = AuthServer()
    yield server
    server.close()


def _metadata_text(dag_id: str) -> str:
    """What Airflow stored for the run: the rendered template fields and the serialized DAG."""
    from airflow.utils.session import create_session

    with create_session() as session:
        rendered = session.execute(
            text("SELECT rendered_fields FROM rendered_task_instance_fields WHERE dag_id = :d"), {"d": dag_id}
        ).fetchall()
        serialized = session.execute(
            text("SELECT data FROM serialized_dag WHERE dag_id = :d"), {"d": dag_id}
        ).fetchall()
    assert rendered, "no rendered fields stored"
    return "\n".join(str(r[0]) for r in [*rendered, *serialized])


def test_credentials_in_urls_stay_out_of_everything_a_run_leaves(
    tmp_path: Path,
    airflow_home: Path,
    airflow_conn: dict[str, str],
    pg_conn: psycopg.Connection,
    redis_client: redis.Redis,
    redis_prefix: str,
    docker_api: object,
    app_images: AppImages,
    app_container: AppContainer,
    smtp_inbox: Inbox,
    auth_server: AuthServer,
    capfd: pytest.CaptureFixture[str],
) -> None:
    seed_demo(pg_conn, 2000)
    seed_bullmq_queue(redis_client, redis_prefix)
    migration_id = f"products_secrets_{uuid.uuid4().hex[:8]}"
    folder = copy_migration(
        tmp_path,
        migration_id,
        soak="1s",
        queues={
            "names": ["sync"],
            "prefix": redis_prefix,
            "drain_timeout": "30s",
            "pause_url": auth_server.url("/admin/queues/pause"),
            "resume_url": auth_server.url("/admin/queues/resume"),
        },
        deploy={
            "container": app_container.name,
            "image": app_images.v3,  # its health check answers 404: deploy fails, rollback runs
            "health_url": f"http://{USER}:{PASSWORD}@127.0.0.1:{app_container.port}/health/ready",
            "health_timeout": "3s",
            "watch": "2s",
            "docker_url": DOCKER_URL,
        },
        notify={"smtp": {"to": ["oncall@example.com"], "conn_id": "smtp_test"}},
    )
    dag_file = install_dag_file(airflow_home, folder.parent, migration_id)

    run = run_dag(dag_file, migration_id)

    got = states(run)
    assert str(run.state) == "failed" and got["deploy"] == "failed" and got["rollback"] == "success", got
    paths = [(path, ok) for _, path, ok in auth_server.requests]
    assert ("/admin/queues/pause", True) in paths and ("/admin/queues/resume", True) in paths, paths
    assert smtp_inbox.messages, "no mail sent"
    mails = "\n".join(smtp_inbox.body(str(m["Subject"])) for m in smtp_inbox.messages)
    assert "GET http://***@127.0.0.1" in mails  # the deploy's failure, its URL redacted
    out, err = capfd.readouterr()
    for where, found in {
        "airflow metadata": _metadata_text(migration_id),
        "task output": out + err,
        "redis": redis_dump(redis_client, redis_prefix),
        "ledger": ledger_text(pg_conn),
        "mails": mails,
    }.items():
        i = found.find(PASSWORD)
        assert i < 0, (where, found[max(0, i - 400) : i + 100])
