# Airflow's own image with this provider installed from the repository (docker-compose.yaml builds it).
# Airflow stays pinned to the image's version while pip resolves the provider's requirements.
FROM apache/airflow:3.3.2-python3.11

COPY --chown=airflow:root pyproject.toml README.md /opt/airflow-provider-expand/
COPY --chown=airflow:root airflow_provider_expand /opt/airflow-provider-expand/airflow_provider_expand
RUN pip install --no-cache-dir "apache-airflow==${AIRFLOW_VERSION}" /opt/airflow-provider-expand
