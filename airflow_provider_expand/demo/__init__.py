"""The two-command demo: embedded PostgreSQL and Redis, a seeded shop database, the example migration.

``make demo`` runs ``python -m airflow_provider_expand.demo run``; ``make ui`` runs ``... ui``. It works
from a checkout of the repository: it reads the example migration under ``dags/migrations`` and the shop
schema under ``tests/fixtures``, and keeps its state (data directory, Airflow home) in ``.demo/``.
"""
