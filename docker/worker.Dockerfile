# A worker: the engine with torch (PyPI's Linux torch wheels bundle the CUDA runtime; the NVIDIA
# container toolkit provides the driver). The Celery main process never imports torch: jobs run
# in its pool's child process. Versions come from deploy/constraints.txt (the tested
# environment). A CPU-only image: `--build-arg TORCH_INDEX_URL=<PyTorch's CPU wheel index>`
# installs the same torch==2.13.0 without the CUDA libraries.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_CONSTRAINT=/app/deploy/constraints.txt
WORKDIR /app
# bubblewrap isolates upload validation (namespaces); where the container forbids them, the
# worker validates without and logs it (C3_SANDBOX_ISOLATION=auto).
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends bubblewrap \
    && rm -rf /var/lib/apt/lists/*
COPY deploy/constraints.txt ./deploy/constraints.txt
ARG TORCH_INDEX_URL=""
RUN pip install --no-cache-dir -c deploy/constraints.txt \
    ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} torch
COPY pyproject.toml README.md ./
COPY service ./service
COPY worker ./worker
COPY models ./models
RUN pip install --no-cache-dir -c deploy/constraints.txt '.[engine,tracing]'
RUN useradd --uid 1000 c3 && mkdir -p /data /blobs && chown c3 /data /blobs
USER c3
CMD ["c3", "worker", "--queues", "gpu", "--concurrency", "1"]
