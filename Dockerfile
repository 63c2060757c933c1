# The streamrec image used by docker-compose.yml (worker, producer, trainer).
# For machines WITH Docker; without it, see `streamrec kafka up` (a real local broker from jars).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Only what the package needs (no .venv, .kafka, models, ... from the host).
COPY pyproject.toml README.md constraints.txt ./
COPY streamrec ./streamrec
COPY streams ./streams
COPY indexing ./indexing
COPY producers ./producers
RUN pip install -c constraints.txt ".[cpu]"

# State (models/, .worker/) goes under the home, never beside the installed package.
ENV STREAMREC_HOME=/app \
    STREAMREC_LOG_LEVEL=INFO

CMD ["streamrec", "worker"]
