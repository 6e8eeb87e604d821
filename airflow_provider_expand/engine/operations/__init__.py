"""Declarative operations in pgroll's vocabulary: each operation plans expand, backfill, indexes, contract
and rollback as data (``plan.py``); the migration planner (``planner.py``) runs them in order over one schema
model read from the catalog (``schema.py``). Nothing here executes SQL or imports Airflow.
"""
