"""Zero-downtime PostgreSQL migrations for Apache Airflow, the Expand/Contract way."""

__version__ = "0.1.0"
