# Hearth node on embedded defaults. Build: docker build -t hearth .
# Run:   docker run -p 8787:8787 -v hearth-data:/data hearth
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    HEARTH_SERVER_HOST=0.0.0.0 HEARTH_SERVER_PORT=8787 HEARTH_SERVER_DATA_DIR=/data

WORKDIR /app
COPY pyproject.toml README.md config.toml ./
COPY gateway ./gateway
COPY storage ./storage
COPY identity ./identity
RUN pip install --no-cache-dir . && useradd --system --home /data hearth && mkdir -p /data && chown hearth /data

USER hearth
VOLUME ["/data"]
EXPOSE 8787
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8787/healthz', timeout=4)" || exit 1
CMD ["hearth", "serve", "--config", "/app/config.toml"]
