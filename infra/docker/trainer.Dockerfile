# The CUDA trainer: tenali_model + torch + dagster-pipes (+ boto3, which dagster-pipes' S3 context
# loader and message writer need; the cluster launchers pass Pipes params on S3). No dagster, no
# pipeline: `tenali_model` never imports them (a test checks it).
#
#   docker build -f infra/docker/trainer.Dockerfile -t REGISTRY/tenali-trainer:$(git rev-parse --short HEAD) .
#
# The base image carries CUDA, cuDNN, NCCL and a matching torch build; pin it by digest in production.
FROM pytorch/pytorch:2.11.0-cuda12.8-cudnn9-runtime

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONPATH=/opt/tenali

# The versions the pipeline pins (pyproject.toml); torch comes with the base image. Every third-party
# module the trainer's code (tenali_model.train, tenali_model.posttrain and what they import, lazily
# too) needs is here (tests/pipeline/test_infra.py derives that list from the code):
# - pyarrow: user-supplied post-training data in Parquet (posttrain/data.py);
# - peft (the "hf" extra): LoRA, on by default in SFT and optional in DPO (posttrain/lora.py);
# - transformers (the "hf" extra): a Hugging Face teacher for distillation (posttrain/distill.py),
#   and a dependency of peft, pinned so the image has the version the tests run with;
# - accelerate: a dependency of peft that pyproject.toml does not pin; this is the version tested;
# - botocore: boto3's own, imported directly to tell a passing S3 outage from a refusal when the
#   trainer's Pipes reports are uploaded (pipes_s3.py); the version tested.
# None of them replaces the base image's torch (they ask for torch>=2.6 at most).
RUN pip install "dagster-pipes==1.13.27" "boto3==1.44.5" "botocore==1.44.8" "numpy>=2.4,<3" "safetensors>=0.8,<0.9" \
        "sentencepiece==0.2.3" "tokenizers>=0.22,<0.24" "pyarrow>=26,<27" \
        "peft==0.21.2" "transformers==5.23.0" "accelerate==1.16.0"

COPY tenali_model /opt/tenali/tenali_model

# Run as a non-root user; the shared volume must be writable by this uid (fsGroup / EFS access point).
RUN useradd --uid 10001 --create-home tenali
USER 10001
WORKDIR /opt/tenali

# The launchers set the command (torchrun ... -m tenali_model.train --config <path on the shared volume>).
CMD ["python", "-m", "tenali_model", "--help"]
