"""The provider's face: every dotted path ``get_provider_info`` lists imports, lists what it claims (each
operator, sensor and trigger module of the package is listed), and Airflow's ProvidersManager finds it."""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

import pytest
from airflow.plugins_manager import AirflowPlugin, is_valid_plugin
from airflow.sdk import BaseNotifier, BaseOperator
from airflow.triggers.base import BaseTrigger

import airflow_provider_expand
from airflow_provider_expand.provider_info import get_provider_info

INFO = get_provider_info()
KINDS = ("operators", "sensors", "triggers", "hooks")


def _modules(kind: str) -> list[str]:
    return [module for entry in INFO[kind] for module in entry["python-modules"]]


def _import(dotted: str) -> Any:
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("kind", KINDS)
def test_every_listed_module_imports_and_every_module_is_listed(kind: str) -> None:
    listed = _modules(kind)
    for module in listed:
        importlib.import_module(module)
    package = importlib.import_module(f"airflow_provider_expand.{kind}")
    present = {
        f"{package.__name__}.{m.name}"
        for m in pkgutil.iter_modules(package.__path__)
        if not m.name.startswith("_")
    }
    assert set(listed) == present, (kind, set(listed) ^ present)
    integrations = {i["integration-name"] for i in INFO["integrations"]}
    assert all(entry["integration-name"] in integrations for entry in INFO[kind])


def test_listed_modules_hold_what_their_kind_says() -> None:
    def members(kind: str, base: type) -> set[str]:
        found = set()
        for module in _modules(kind):
            for name, value in vars(importlib.import_module(module)).items():
                if isinstance(value, type) and issubclass(value, base) and value.__module__ == module:
                    found.add(name)
        return found

    assert {"BatchBackfillOperator", "ConcurrentIndexOperator", "ContractApprovalOperator"} <= members(
        "operators", BaseOperator
    )
    assert {"BackupFreshnessSensor", "QueueDrainSensor", "SoakSensor"} <= members("sensors", BaseOperator)
    assert {"LongTransactionTrigger", "QueueDrainTrigger"} <= members("triggers", BaseTrigger)


def test_notifications_and_the_plugin_import() -> None:
    for dotted in INFO["notifications"]:
        assert issubclass(_import(dotted), BaseNotifier), dotted
    (plugin,) = INFO["plugins"]
    cls = _import(plugin["plugin-class"])
    assert issubclass(cls, AirflowPlugin) and is_valid_plugin(cls) and cls.name == plugin["name"]
    assert [app["url_prefix"] for app in cls.fastapi_apps] == ["/expand"]
    assert {view["destination"] for view in cls.external_views} == {"dag", "nav"}


def test_airflow_discovers_the_provider_and_its_plugin() -> None:
    from airflow.providers_manager import ProvidersManager

    manager = ProvidersManager()
    assert manager.providers["airflow-provider-expand"].version == airflow_provider_expand.__version__
    assert [p.plugin_class for p in manager.plugins if p.provider_name == "airflow-provider-expand"] == [
        INFO["plugins"][0]["plugin-class"]
    ]
    triggers = {t.trigger_class_name for t in manager.trigger}
    assert "airflow_provider_expand.triggers.queues" in triggers  # modules, as Airflow lists them
    # the connection types the operators use come from the official providers, registered there
    official = {f"apache-airflow-providers-{name}" for name in ("postgres", "redis", "docker", "smtp")}
    assert official <= set(manager.providers)
