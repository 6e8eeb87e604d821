"""The migration view's FastAPI app, mounted by the api-server at ``/expand``: the page
(``/expand/migrations``) and its data (``/expand/api/migrations``, ``/expand/api/migrations/{id}``).

A plugin's routes get no Airflow auth by themselves: every route here depends on the api-server's own
``get_user`` (the UI's cookie or a bearer token) and lists only migrations whose DAG the user may read.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Annotated, Any
from urllib.parse import quote

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from airflow_provider_expand.plugin.sources import Overview, load_specs, migrations_folders, read_overview

URL_PREFIX = "/expand"
_PAGE = files("airflow_provider_expand.plugin").joinpath("migrations.html")

app = FastAPI(
    title="Expand/Contract migrations",
    description="Where each migration stands, read from the ledgers of the migration specs' connections.",
    dependencies=[Depends(requires_access_dag("GET", DagAccessEntity.RUN))],
)


def _overview(user: Any, dag_id: str | None = None) -> Overview:
    overview = read_overview(load_specs(migrations_folders()))
    wanted = {m["dag_id"] for m in overview.migrations if dag_id is None or m["dag_id"] == dag_id}
    allowed = get_auth_manager().filter_authorized_dag_ids(dag_ids=wanted, user=user, method="GET")
    overview.migrations = [m for m in overview.migrations if m["dag_id"] in allowed]
    return overview


@app.exception_handler(HTTPException)
async def _login_first(request: Request, exc: HTTPException) -> Response:
    """A browser without a login goes to Airflow's login page and back; an API client gets the status."""
    wants_html = "text/html" in request.headers.get("accept", "")
    if exc.status_code in (401, 403) and wants_html and request.url.path.endswith("/migrations"):
        return RedirectResponse(f"/auth/login/?next={quote(str(request.url), safe='')}", status_code=303)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


@app.get("/migrations", response_class=HTMLResponse, summary="The migration view")
def migrations_page(user: GetUserDep) -> HTMLResponse:
    """The page; it draws itself from ``api/migrations`` and refreshes every two seconds."""
    return HTMLResponse(_PAGE.read_text(encoding="utf-8"))


@app.get("/api/migrations", summary="Every migration in the ledgers the specs name")
def list_migrations(
    user: GetUserDep, dag_id: Annotated[str | None, Query(description="only this DAG's migration")] = None
) -> dict[str, Any]:
    overview = _overview(user, dag_id)
    return {"migrations": overview.migrations, "ledgers": overview.ledgers}


@app.get("/api/migrations/{migration_id}", summary="One migration")
def get_migration(migration_id: str, user: GetUserDep) -> dict[str, Any]:
    overview = _overview(user)
    for migration in overview.migrations:
        if migration["id"] == migration_id:
            return migration
    searched = ", ".join(f"{s['postgres_conn_id']}:{s['schema']}" for s in overview.ledgers) or "none"
    raise HTTPException(
        status_code=404,
        detail=f"no migration {migration_id!r} in the ledgers of the migration specs (searched {searched})",
    )
