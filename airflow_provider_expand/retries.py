"""One retry policy for every task: transient failures retry and resume, definitive ones fail at once.

Airflow's ``ExceptionRetryPolicy`` matches the exception actually raised, by class; the engine raises its
own hierarchy (``engine.errors``), and :class:`ClassifiedErrors` wraps what a task's ``execute``/``poke``
lets escape from a driver (psycopg, redis, docker) into that hierarchy, so the rules below see every
failure as one of two kinds. Anything unknown fails: a retry of a bug would only repeat it.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from typing import Any, TypeVar

from airflow.sdk import ExceptionRetryPolicy, RetryAction, RetryRule

from airflow_provider_expand.engine.errors import DefinitiveError, TransientError, translated

RETRY_POLICY = ExceptionRetryPolicy(
    rules=[
        RetryRule(
            exception=TransientError,
            action=RetryAction.RETRY,
            reason="transient failure (connection, restart, lock or serialization): the step resumes from its "
            "checkpoint",
        ),
        RetryRule(
            exception=DefinitiveError,
            action=RetryAction.FAIL,
            reason="definitive failure: a retry cannot fix it",
        ),
    ],
    default=RetryAction.FAIL,
)

# The longest wait between two tries, however many there were.
MAX_RETRY_DELAY = dt.timedelta(minutes=10)

F = TypeVar("F", bound=Callable[..., Any])
_WRAPPED = ("execute", "execute_complete", "poke")


def retry_args(retries: int, retry_delay: dt.timedelta) -> dict[str, Any]:
    """The task arguments for :data:`RETRY_POLICY` (a DAG's ``default_args``), doubling the delay each try."""
    return {
        "retries": retries,
        "retry_delay": retry_delay,
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": max(MAX_RETRY_DELAY, retry_delay),
        "retry_policy": RETRY_POLICY,
    }


def _classified(method: F) -> F:
    @functools.wraps(method)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        with translated(f"{getattr(self, 'task_id', type(self).__name__)}"):
            return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


class ClassifiedErrors:
    """Mixin for the provider's operators and sensors: driver errors leave them as the engine's classes."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in _WRAPPED:
            method = cls.__dict__.get(name)
            if callable(method) and not getattr(method, "__expand_classified__", False):
                wrapped = _classified(method)
                wrapped.__expand_classified__ = True
                setattr(cls, name, wrapped)
