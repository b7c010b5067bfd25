# The serving image, CUDA: the trainer's base image (CUDA, cuDNN, torch 2.11) plus the `serve` extra.
#
#   docker build -f infra/serve/serve-cuda.Dockerfile -t REGISTRY/tenali-serve:cuda-$(git rev-parse --short HEAD) .
#   docker run --gpus all -p 8000:8000 -v $PWD/var/lake/releases/<id>:/models:ro REGISTRY/tenali-serve:cuda-...
#
# For traffic beyond one process, serve the same release folder (a Llama/Arcee transformers model)
# with vLLM or Text Generation Inference instead; this image is the simple, single-process option.
FROM pytorch/pytorch:2.11.0-cuda12.8-cudnn9-runtime

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONPATH=/opt/tenali

RUN pip install "numpy>=2.4,<3" "safetensors>=0.8,<0.9" "sentencepiece==0.2.3" "tokenizers>=0.22,<0.24" \
        "fastapi==0.165.0" "uvicorn==0.54.0" "prometheus-client==0.26.0"

COPY tenali_model /opt/tenali/tenali_model

RUN useradd --uid 10001 --create-home tenali
USER 10001
WORKDIR /opt/tenali
EXPOSE 8000

HEALTHCHECK --interval=15s --timeout=3s --start-period=120s \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health').status != 200)"
CMD ["python", "-m", "tenali_model", "serve", "/models", "--host", "0.0.0.0", "--port", "8000", "--device", "cuda"]
