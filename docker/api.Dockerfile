# The API: FastAPI + the Celery producer. No torch, no engine runtime (small, starts fast): the
# base requirements and the `tracing` extra, never `engine`. Versions come from
# deploy/constraints.txt (the tested environment), so a build resolves nothing on its own.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_CONSTRAINT=/app/deploy/constraints.txt
WORKDIR /app
COPY deploy/constraints.txt ./deploy/constraints.txt
COPY pyproject.toml README.md ./
COPY service ./service
COPY worker ./worker
COPY models ./models
RUN pip install --no-cache-dir -c deploy/constraints.txt '.[tracing]' \
 && python -c "import sys, service.app; assert 'torch' not in sys.modules" \
 && ! pip show --quiet torch 2>/dev/null
RUN useradd --uid 1000 c3 && mkdir -p /data /blobs && chown c3 /data /blobs
USER c3
EXPOSE 8000
CMD ["c3", "api", "--host", "0.0.0.0", "--port", "8000"]
