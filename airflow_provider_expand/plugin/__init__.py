"""The migration view in the Airflow UI (``/expand/migrations``), shipped as an Airflow plugin."""
