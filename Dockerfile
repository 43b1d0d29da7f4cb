# One image: the same `python -m supervisor` as the README, with the embedded server.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    DATA_DIR=/data

WORKDIR /app
RUN useradd --create-home --uid 10001 app && mkdir -p /data && chown app /data

# the README's first command, split so that the dependency layer is cached
COPY pyproject.toml README.md ./
COPY server ./server
COPY supervisor ./supervisor
COPY jobs ./jobs
COPY gunicorn.conf.py ./
RUN python3 -m venv /app/.venv && /app/.venv/bin/pip install -e .

USER app
VOLUME ["/data"]
EXPOSE 8000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["/app/.venv/bin/python", "-c", "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\", \"8000\")}/health', timeout=2)"]
CMD ["/app/.venv/bin/python", "-m", "supervisor"]
