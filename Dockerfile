# segwatch worker image: small (slim Python, no build tools, no pip cache), runs as a
# non-root user, everything pinned (the base by version, Python packages by
# pyproject.toml). Build from the repository root:
#
#   docker build -t segwatch:0.1.0 .
#   docker run --rm segwatch:0.1.0 --help
#
# The model is mounted at /etc/segwatch/model.yaml; configuration comes from
# SEGWATCH_* variables or a file named by SEGWATCH_CONFIG (see README "Deploy").
FROM python:3.11.14-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SEGWATCH_WORKER__WEB_HOST=0.0.0.0 \
    SEGWATCH_WORKER__DATA_DIR=/var/lib/segwatch

WORKDIR /app
COPY pyproject.toml README.md ./
COPY detector/ detector/
COPY streams/ streams/
COPY deploy/elasticsearch/ deploy/elasticsearch/
COPY deploy/kibana/ deploy/kibana/
COPY rules/ rules/
# editable: the code stays in /app, beside the templates and rules it reads
RUN pip install --no-cache-dir -e . \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/segwatch --create-home segwatch

USER 10001:10001
EXPOSE 6066
ENTRYPOINT ["segwatch"]
CMD ["worker", "--model", "/etc/segwatch/model.yaml"]
