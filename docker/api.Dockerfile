# The API: FastAPI + the Celery producer. No torch, no engine runtime (small, starts fast).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY service ./service
COPY worker ./worker
COPY models ./models
RUN pip install --no-cache-dir . \
 && python -c "import sys, service.app; assert 'torch' not in sys.modules"
RUN useradd --uid 1000 c3 && mkdir -p /data /blobs && chown c3 /data /blobs
USER c3
EXPOSE 8000
CMD ["c3", "api", "--host", "0.0.0.0", "--port", "8000"]
