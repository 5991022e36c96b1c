# segwatch worker image: small (slim Python, no build tools, no pip cache), runs as a
# non-root user, everything pinned (the base by version, Python packages by
# pyproject.toml). The first stage builds the wheel (it carries the index templates,
# dashboards, default detection rules and example models); the image installs only
# that wheel, no source checkout. Build from the repository root:
#
#   docker build -t segwatch:0.1.0 .
#   docker run --rm segwatch:0.1.0 --help
#
# The model is mounted at /etc/segwatch/model.yaml; configuration comes from
# SEGWATCH_* variables or a file named by SEGWATCH_CONFIG (see README "Deploy").
FROM python:3.11.14-slim-bookworm AS build

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY detector/ detector/
COPY streams/ streams/
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11.14-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SEGWATCH_WORKER__WEB_HOST=0.0.0.0 \
    SEGWATCH_WORKER__DATA_DIR=/var/lib/segwatch

COPY --from=build /wheels/ /wheels/
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/segwatch --create-home segwatch

USER 10001:10001
WORKDIR /var/lib/segwatch
EXPOSE 6066
ENTRYPOINT ["segwatch"]
CMD ["worker", "--model", "/etc/segwatch/model.yaml"]
