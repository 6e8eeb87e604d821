"""The application side of a migration's DAG: its queues (pause, drain, the resume teardown), the deploy and
its watch, and what the rollback needs to put the old container back while it holds the queues.

Kept apart from ``dag_factory`` (the schema steps and the graph) so each reads as one concept.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator, TaskGroup, TriggerRule

from airflow_provider_expand.dag_params import DRY_RUN
from airflow_provider_expand.operators.deploy import DockerDeployOperator
from airflow_provider_expand.operators.queues import PauseQueuesOperator, ResumeQueuesOperator
from airflow_provider_expand.sensors.deploy_watch import DeployWatchSensor
from airflow_provider_expand.sensors.queues import QueueDrainSensor
from airflow_provider_expand.spec import MigrationSpec


class ReleaseSteps:
    """Builds the queue and deploy tasks of one migration (a base of the DAG factory's builder)."""

    def __init__(self, spec: MigrationSpec) -> None:
        self.spec = spec

    def common(self) -> dict[str, Any]:
        return {"migration_id": self.spec.id, "postgres_conn_id": self.spec.postgres_conn_id}

    def deploy_args(self) -> dict[str, Any] | None:
        """The container the deploy step recreates (and the rollback puts back), or None without ``deploy``."""
        deploy = self.spec.deploy
        if deploy is None:
            return None
        return {
            "container": deploy.container,
            "health_url": str(deploy.health_url),
            "health_timeout": deploy.health_timeout,
            "docker_url": deploy.docker_url,
            "docker_conn_id": deploy.docker_conn_id,
        }

    def deploy(self) -> list[BaseOperator]:
        """``deploy`` then ``watch`` (when the spec's watch is not zero)."""
        deploy, args = self.spec.deploy, self.deploy_args()
        if deploy is None or args is None:
            return []
        common = {**self.common(), "ledger_schema": self.spec.ledger_schema, "dry_run": DRY_RUN}
        tasks: list[BaseOperator] = [
            DockerDeployOperator(task_id="deploy", image=deploy.image, **args, **common)
        ]
        if deploy.watch.total_seconds() > 0:
            tasks.append(
                DeployWatchSensor(
                    task_id="watch",
                    container=deploy.container,
                    health_url=str(deploy.health_url),
                    watch=deploy.watch,
                    escalate_after=deploy.escalate_after,
                    max_error_lines=deploy.max_error_lines,
                    metrics_url=str(deploy.metrics_url) if deploy.metrics_url else None,
                    max_5xx_rate=deploy.max_5xx_rate,
                    docker_url=deploy.docker_url,
                    docker_conn_id=deploy.docker_conn_id,
                    **common,
                )
            )
        return tasks

    def rollback_queues(self) -> dict[str, Any] | None:
        """What the rollback holds around the container swap (``RollbackQueueHold``): with a deploy only."""
        queues = self.spec.queues
        if queues is None or self.spec.deploy is None:
            return None
        return {
            "redis_conn_id": self.spec.redis_conn_id,
            "queues": list(queues.names),
            "prefix": queues.prefix,
            "drain_timeout": queues.drain_timeout,
            "resume_url": str(queues.resume_url) if queues.resume_url else None,
        }

    def queues(self) -> list[BaseOperator]:
        """Pause, drain, and the resume teardown that runs whatever happens (even after a failure)."""
        queues = self.spec.queues
        if queues is None:
            return []
        redis: dict[str, Any] = {
            "redis_conn_id": self.spec.redis_conn_id,
            "queues": list(queues.names),
            "prefix": queues.prefix,
        }
        with TaskGroup("queues"):
            pause = PauseQueuesOperator(
                task_id="pause",
                migration_id=self.spec.id,
                pause_url=str(queues.pause_url) if queues.pause_url else None,
                dry_run=DRY_RUN,
                **redis,
            )
            drain = QueueDrainSensor(
                task_id="drain",
                drain_timeout=queues.drain_timeout,
                skip="{{ params.skip_queue_drain }}",
                deferrable=True,
                **redis,
            )
            resume = ResumeQueuesOperator(
                task_id="resume",
                migration_id=self.spec.id,
                resume_url=str(queues.resume_url) if queues.resume_url else None,
                # the ledger tells it when a rollback holds the queues (a deploy that failed)
                postgres_conn_id=self.spec.postgres_conn_id,
                ledger_schema=self.spec.ledger_schema,
                **redis,
            ).as_teardown(setups=pause)
            # a pause that died midway (SIGKILL, a timeout, its retries spent) is failed, yet its queues carry
            # this run's marker: the teardown runs even then (ALL_DONE), and resumes only what is marked
            resume.trigger_rule = TriggerRule.ALL_DONE
        return [pause, drain, resume]
