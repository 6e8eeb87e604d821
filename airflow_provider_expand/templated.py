"""Coercion of templated trigger params: native rendering gives bools and ints, string rendering gives text."""

from __future__ import annotations

from airflow_provider_expand.engine.queues.pause import queue_refs


def as_bool(value: object) -> bool:
    """``True``/``"True"``/``"true"``/``1`` -> True; ``None``/``"False"``/``""``/``0`` -> False."""
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off", "", "none"):
            return False
        raise ValueError(f"expected a boolean, got {value!r}")
    return bool(value)


def check_queues_unless_templated(queues: list[str], prefix: str) -> None:
    """Bad queue names fail when the DAG is parsed, unless Jinja still has to render them."""
    if any(isinstance(v, str) and "{{" in v for v in (prefix, *queues)):
        return
    queue_refs(queues, prefix)
