"""Airflow-side connections: PostgreSQL (``postgres``), Redis (``redis``), Docker (``docker``) and the backup
folder in object storage (``backup_store``), built from Airflow's connection store the one way operators,
sensors and triggers all share."""
