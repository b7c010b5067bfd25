# The serving image, CPU: tenali_model with the `serve` extra (FastAPI, uvicorn, prometheus-client).
# No dagster, no pipeline. It serves a release folder (releases/<id>/ from the lake) mounted at /models.
#
#   docker build -f infra/serve/serve-cpu.Dockerfile -t REGISTRY/tenali-serve:cpu-$(git rev-parse --short HEAD) .
#   docker run -p 8000:8000 -v $PWD/var/lake/releases/<id>:/models:ro REGISTRY/tenali-serve:cpu-...
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONPATH=/opt/tenali

# The CPU build of torch from PyTorch's CPU index (the default wheel would pull CUDA libraries).
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==2.11.0" && \
    pip install "numpy>=2.4,<3" "safetensors>=0.8,<0.9" "sentencepiece==0.2.3" "tokenizers>=0.22,<0.24" \
        "fastapi==0.165.0" "uvicorn==0.54.0" "prometheus-client==0.26.0"

COPY tenali_model /opt/tenali/tenali_model

RUN useradd --uid 10001 --create-home tenali
USER 10001
WORKDIR /opt/tenali
EXPOSE 8000

# 0.0.0.0 inside the container: the port is published by docker/compose/Kubernetes. Set TENALI_API_KEY
# (a secret) to require a key; TENALI_CORS_ORIGINS for browser clients on other origins.
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health').status != 200)"
CMD ["python", "-m", "tenali_model", "serve", "/models", "--host", "0.0.0.0", "--port", "8000", "--device", "cpu"]
