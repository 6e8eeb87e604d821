"""``ExpandPlugin``: the migration view, registered in the provider info so installing the provider is
enough. The DAG page gets a "Migration" tab (an external view embedding the page for that DAG) and the
navigation a "Migrations" entry."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from airflow_provider_expand.plugin.api import URL_PREFIX, app


class ExpandPlugin(AirflowPlugin):
    name = "expand"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "Expand/Contract migrations"}]
    external_views = [
        {
            "name": "Migration",
            "href": f"{URL_PREFIX}/migrations?dag_id={{DAG_ID}}",
            "destination": "dag",
            "url_route": "expand-migration",
        },
        {
            "name": "Migrations",
            "href": f"{URL_PREFIX}/migrations",
            "destination": "nav",
            "category": "browse",
            "url_route": "expand-migrations",
        },
    ]
