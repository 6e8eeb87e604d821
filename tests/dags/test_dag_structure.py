"""The DAG's shape, from the real factory: no database is needed to build it (parse time stays cheap)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from airflow.sdk import TriggerRule

from airflow_provider_expand.dag_factory import build_migration_dag, build_migration_dags
from tests.dags.harness import EXAMPLE, REPO, copy_migration


def test_every_dag_file_in_the_repository_loads() -> None:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert not bag.import_errors, bag.import_errors
    assert "products_title_to_name" in bag.dag_ids


def test_example_graph_follows_the_runbook() -> None:
    dag = build_migration_dag(EXAMPLE)
    assert dag.max_active_runs == 1 and dag.schedule is None
    assert set(dag.params.keys()) == {"dry_run", "batch_size", "skip_queue_drain"}
    order = [
        "lint",
        "begin",
        "preflight",
        "queues.pause",
        "queues.drain",
        "expand",
        "verify_expand",
        "backfill.products",
        "index.idx_products_name",
        "soak",
        "contract",
        "verify",
        "done",
    ]
    for upstream, downstream in itertools.pairwise(order):
        assert downstream in dag.get_task(upstream).downstream_task_ids, (upstream, downstream)

    rollback = dag.get_task("rollback")
    assert rollback.trigger_rule == TriggerRule.ONE_FAILED
    # marking soak failed from the UI rolls back; a failure in contract or the final verify does not
    assert {
        "queues.drain",
        "expand",
        "verify_expand",
        "backfill.products",
        "soak",
    } <= rollback.upstream_task_ids
    assert not {"contract", "verify", "lint", "begin", "preflight"} & rollback.upstream_task_ids
    assert dag.get_task("done").trigger_rule == TriggerRule.ALL_SUCCESS

    resume = dag.get_task("queues.resume")
    assert resume.is_teardown and "queues.pause" in resume.upstream_task_ids
    assert "verify_expand" in resume.upstream_task_ids
    assert "DROP COLUMN title" in (dag.doc_md or "")


def test_absent_steps_are_absent(tmp_path: Path) -> None:
    folder = copy_migration(
        tmp_path, "minimal", queues=None, backfill=None, indexes=None, soak=None, verify=None
    )
    dag = build_migration_dag(folder)
    assert not {t for t in dag.task_ids if t.startswith(("queues.", "backfill.", "index.", "backup."))}
    assert "soak" not in dag.task_ids
    assert {"lint", "begin", "preflight", "expand", "contract", "rollback", "done"} <= set(dag.task_ids)


def test_partitions_become_mapped_tasks_and_backup_adds_a_restore_dag(tmp_path: Path) -> None:
    folder = copy_migration(
        tmp_path,
        "mapped",
        backfill=[{"table": "products", "set": "name = title", "where": "name IS NULL", "partitions": 3}],
        backup={"directory": str(tmp_path), "take": True},
    )
    dags = build_migration_dags(folder.parent)
    assert set(dags) == {"mapped", "restore_from_backup__mapped"}
    mapped = dags["mapped"].get_task("backfill.products")
    assert mapped.expand_input.value == {"partition": [0, 1, 2]}  # type: ignore[attr-defined]
    assert [t for t in dags["mapped"].task_ids if t.startswith("backup.")] == ["backup.dump", "backup.fresh"]
    restore = dags["restore_from_backup__mapped"]
    assert set(restore.params.keys()) == {"dump_file", "confirm"}


def test_a_broken_folder_does_not_hide_the_others(tmp_path: Path) -> None:
    copy_migration(tmp_path, "good")
    bad = copy_migration(tmp_path, "bad")
    (bad / "migration.yaml").write_text((bad / "migration.yaml").read_text() + "\nsoke: 1h\n")
    dags = build_migration_dags(tmp_path / "migrations")
    assert "good" in dags and dags["bad"].task_ids == ["lint"]
    assert "soke" in (dags["bad"].doc_md or "")
    from airflow_provider_expand.spec import SpecError

    with pytest.raises(SpecError, match=r"bad/migration\.yaml: soke"):
        build_migration_dags(tmp_path / "migrations", strict=True)


def test_contract_approval_sits_between_soak_and_contract(tmp_path: Path) -> None:
    from airflow_provider_expand.operators.approval import ContractApprovalOperator

    folder = copy_migration(tmp_path, "approved", contract_approval={"approvers": ["alice"], "timeout": "2h"})
    dag = build_migration_dag(folder)
    approval = dag.get_task("approve_contract")
    assert isinstance(approval, ContractApprovalOperator)
    assert dag.get_task("soak").downstream_task_ids == {"approve_contract", "rollback"}
    assert "contract" in approval.downstream_task_ids and "rollback" in approval.downstream_task_ids
    assert approval.options == ["Contract now", "Wait", "Roll back"] and approval.defaults == ["Wait"]
    assert approval.assigned_users == [{"id": "alice", "name": "alice"}]
    assert approval.response_timeout is not None and approval.response_timeout.total_seconds() == 7200
    assert approval.retries >= 10  # a lost answer retries (asks again); only "Roll back" may fail it
    assert "approve_contract" not in build_migration_dag(EXAMPLE).task_ids


def test_notify_deadline_is_a_deadline_alert_mailing_through_the_notifier(tmp_path: Path) -> None:
    import datetime as dt

    from airflow.sdk.definitions.deadline import DeadlineReference

    from airflow_provider_expand.notifications import MigrationNotifier

    notify = {"smtp": {"to": ["oncall@example.com"], "conn_id": "smtp_x"}, "deadline": "30h"}
    dag = build_migration_dag(copy_migration(tmp_path, "late", notify=notify))
    (alert,) = dag.deadline
    assert alert.reference == DeadlineReference.DAGRUN_QUEUED_AT and alert.interval == dt.timedelta(hours=30)
    assert alert.callback.path == f"{MigrationNotifier.__module__}.MigrationNotifier"
    assert alert.callback.kwargs["event"] == "deadline" and alert.callback.kwargs["smtp_conn_id"] == "smtp_x"
    assert alert.callback.kwargs["to"] == ["oncall@example.com"]
    assert not build_migration_dag(EXAMPLE).deadline
