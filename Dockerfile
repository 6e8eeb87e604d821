# Airflow's own image with this provider installed from the repository (docker-compose.yaml builds it).
# Airflow stays pinned to the image's version while pip resolves the provider's requirements; the celery
# extra keeps celery below 5.7 (the celery provider breaks with 5.7), the s3 extra lets backup.directory be
# an s3:// URL that every worker reads (docs/scaling-out.md).
FROM apache/airflow:3.3.2-python3.11

COPY --chown=airflow:root pyproject.toml README.md /opt/airflow-provider-expand/
COPY --chown=airflow:root airflow_provider_expand /opt/airflow-provider-expand/airflow_provider_expand
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" "/opt/airflow-provider-expand[celery,s3]"
