"""Airflow-side connections: PostgreSQL (``postgres``), Redis (``redis``) and Docker (``docker``), built
from Airflow's connection store the one way operators, sensors and triggers all share."""
