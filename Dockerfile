# The image the operator and its Jobs run: `layerpilot` as the entrypoint, user 1000, /workspace as WORKDIR.
#
#   CPU (default):  docker build -t ghcr.io/layerpilot/layerpilot:0.1.0 .
#   CUDA:           docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 \
#                     -t ghcr.io/layerpilot/layerpilot:0.1.0-cuda .
#
# The Jobs run with a read-only root filesystem: everything written goes to /tmp (HOME) or the
# workspace volume, both mounted by the operator.
ARG PYTHON_VERSION=3.12
FROM python:${PYTHON_VERSION}-slim

# torch comes first, from the index that matches the hardware: unpinned, pip resolves a CUDA build.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MLFLOW_DISABLE_TELEMETRY=true
# bubblewrap isolates the `code_tests` reward's child processes (it falls back to rlimits without).
RUN apt-get update && apt-get install -y --no-install-recommends bubblewrap && rm -rf /var/lib/apt/lists/*
RUN pip install --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}"

WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY service ./service
COPY cli ./cli
COPY k8s ./k8s
COPY mlflow_plugins ./mlflow_plugins
COPY examples ./examples
RUN sed -i "/^torch==/d" constraints.txt && echo "torch==${TORCH_VERSION}" >> constraints.txt \
    && pip install -c constraints.txt . \
    && layerpilot --version

RUN useradd --uid 1000 --user-group --no-create-home --home-dir /tmp layerpilot \
    && mkdir -p /workspace && chown 1000:1000 /workspace
USER 1000:1000
ENV HOME=/tmp
WORKDIR /workspace
ENTRYPOINT ["layerpilot"]
CMD ["--help"]
