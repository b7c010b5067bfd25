# The Dagster code location (user deployment): tenali_pipeline + tenali_model with the aws, k8s,
# postgres, live and track extras. The run worker pods (K8sRunLauncher) use this image too: they download
# shards into the shared volume, launch the trainer, evaluate checkpoints on CPU and upload results.
#
#   docker build -f infra/docker/pipeline.Dockerfile -t REGISTRY/tenali-pipeline:$(git rev-parse --short HEAD) .
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home

# CPU torch: the run worker only evaluates; training happens in the trainer image.
RUN pip install "torch==2.11.0" --index-url https://download.pytorch.org/whl/cpu

WORKDIR /opt/tenali
COPY pyproject.toml README.md workspace.yaml ./
COPY tenali_pipeline ./tenali_pipeline
COPY tenali_model ./tenali_model
# track: the MLflow and W&B clients, imported by the run worker when TENALI_MLFLOW_TRACKING_URI or
# TENALI_WANDB_PROJECT is set (tenali_pipeline/tracking.py); without them tracking is only a warning.
RUN pip install ".[aws,k8s,postgres,live,track]"

RUN useradd --uid 10001 --create-home tenali && mkdir -p "$DAGSTER_HOME" && chown 10001 "$DAGSTER_HOME"
USER 10001

EXPOSE 4000
# The Helm chart passes dagsterApiGrpcArgs; this default serves the same code location.
CMD ["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", "4000", "-m", "tenali_pipeline.definitions"]
