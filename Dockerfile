# One image for the four MCS processes; the command picks which: `api`, `dispatcher`, `watchdog`,
# `notifier` (or `up` for all four in one container, `migrate`, `check PROCESS`, any `mcs` subcommand).
#
#   docker build -t mcs .                      # python:3.12-slim by default
#   docker run --rm -v mcs-data:/data -e MCS_ADMIN_TOKEN=... -p 127.0.0.1:8080:8080 mcs api
#
# Runs as uid/gid 10001 (user `mcs`); the database lives in /data (a volume: mount the directory, never
# the .db file alone, or SQLite's -wal/-shm files are lost). Plain Dockerfile syntax on purpose: it must
# build with the legacy builder too (no BuildKit-only features).

ARG PYTHON_IMAGE=python:3.12-slim

# ---- build: a virtualenv with mcs and its dependencies, copied whole into the runtime stage
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/mcs
WORKDIR /src
# Dependencies first, against an empty package, so editing the code does not reinstall them; psycopg
# too (the `postgres` extra), for MCS_DATABASE_URL.
COPY pyproject.toml ./
RUN mkdir -p services/mcs && touch README.md services/mcs/__init__.py \
 && /opt/mcs/bin/pip install --quiet ".[postgres]" \
 && /opt/mcs/bin/pip uninstall --quiet --yes mcs \
 && rm -rf build services
COPY README.md ./
COPY services ./services
COPY docker/healthcheck.sh /opt/mcs/bin/mcs-healthcheck
RUN /opt/mcs/bin/pip install --quiet --no-deps . \
 && chmod 0755 /opt/mcs/bin/mcs-healthcheck \
 && /opt/mcs/bin/pip uninstall --quiet --yes pip

# ---- runtime
FROM ${PYTHON_IMAGE}
ARG MCS_UID=10001
RUN groupadd --system --gid ${MCS_UID} mcs \
 && useradd --system --uid ${MCS_UID} --gid mcs --home-dir /data --no-create-home --shell /usr/sbin/nologin mcs \
 && mkdir -p /data && chown mcs:mcs /data && chmod 0750 /data
COPY --from=build /opt/mcs /opt/mcs
ENV PATH=/opt/mcs/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MCS_DB=/data/mcs.db \
    MCS_HOST=0.0.0.0
USER ${MCS_UID}:${MCS_UID}
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080 9101 9102 9103
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 CMD ["mcs-healthcheck"]
ENTRYPOINT ["mcs"]
CMD ["api"]
