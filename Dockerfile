# talkstream worker image (production: Apache Kafka from docker-compose.yml).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY pyproject.toml README.md ./
COPY streams ./streams
COPY connectors ./connectors
COPY schemas ./schemas
RUN pip install ".[rocksdb]"

RUN useradd --create-home --uid 10001 talkstream && mkdir -p /data && chown talkstream /data
USER talkstream
VOLUME ["/data"]
EXPOSE 6066

ENTRYPOINT ["talkstream"]
CMD ["worker", "-l", "info"]
