# syntax=docker/dockerfile:1
# tabpfn-gateway server image: the wheel is built in one stage and installed with the server and
# postgres extras into a virtual environment, which the slim runtime stage copies. No compiler
# in the final image, a non-root user, configuration only from the environment.
#   docker build -t tabpfn-gateway .        (compose.yaml builds it for you)
# What it runs, and how to run it: docs/operations.md.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# -- build: the wheel, then a venv with it and its extras ------------------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md LICENSE alembic.ini ./
COPY src ./src
COPY migrations ./migrations
RUN pip install "build==1.2.2.post1" \
 && python -m build --wheel --outdir /dist \
 && python -m venv /opt/tabpfn-gateway \
 && /opt/tabpfn-gateway/bin/pip install "$(find /dist -name 'tabpfn_gateway-*.whl')[server,postgres]"

# -- runtime ---------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="tabpfn-gateway" \
      org.opencontainers.image.description="Self-hosted gateway in front of TabPFN: encrypted tokens, revocable metered keys." \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 tabpfn-gateway \
 && useradd --system --no-log-init --uid 10001 --gid tabpfn-gateway \
      --home-dir /var/lib/tabpfn-gateway --create-home --shell /usr/sbin/nologin tabpfn-gateway \
 && chmod 0700 /var/lib/tabpfn-gateway \
 && install -d -o root -g root -m 0755 /srv/tabpfn-gateway
COPY --from=build /opt/tabpfn-gateway /opt/tabpfn-gateway
COPY deploy/docker/entrypoint.sh /usr/local/bin/tabpfn-gateway-entrypoint
# Settings come from the environment only: the working directory is root-owned and empty, so no
# .env file can be picked up there (made above as root: an engine that creates a missing WORKDIR
# when the container starts, as podman does, would make it the user's). Migrations run when TABPFN_GATEWAY_MIGRATE_ON_START=true
# (the compose file's one-shot migrate service does it instead, so replicas never race).
ENV PATH=/opt/tabpfn-gateway/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TABPFN_GATEWAY_DATA_DIR=/var/lib/tabpfn-gateway \
    TABPFN_GATEWAY_MIGRATE_ON_START=false \
    TABPFN_GATEWAY_LOG_FORMAT=json
WORKDIR /srv/tabpfn-gateway
USER 10001:10001
EXPOSE 8000
VOLUME ["/var/lib/tabpfn-gateway"]
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
ENTRYPOINT ["tabpfn-gateway-entrypoint"]
CMD ["tabpfn-gateway", "serve", "--host", "0.0.0.0", "--port", "8000"]
