"""Airflow operators of the provider: thin glue over `airflow_provider_expand.engine`."""
