"""Plain-Python engine: everything that touches PostgreSQL, Redis or Docker, with no Airflow import.

Operators, sensors and triggers stay thin over these modules so the engine is testable and reusable
on its own (e.g. from the ``airflow-expand`` CLI).
"""
