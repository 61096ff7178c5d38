# syntax=docker/dockerfile:1
# One image for the three services; the command picks the service:
#   docker run IMAGE serve gateway --no-migrate      (router, vault likewise)
#   docker run IMAGE migrate                         (one-shot, before a rollout)
# No secrets are baked in: keys and the pepper are mounted at run time (docs/operations.md).

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------- builder: a venv with the app
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/taskroute
WORKDIR /src
# Dependencies first, from the exact lock, so a code change reuses this layer. Every file pip
# fetches must match a sha256 in the lock (--require-hashes): a changed or substituted
# distribution fails the build instead of entering the image.
COPY deploy/requirements.lock /src/deploy/requirements.lock
RUN /opt/taskroute/bin/pip install --no-deps --require-hashes --only-binary=:all: \
    --require-virtualenv -r deploy/requirements.lock
COPY pyproject.toml README.md /src/
COPY shared /src/shared
COPY services /src/services
# The project itself, without resolving anything new: every dependency is already locked above.
RUN /opt/taskroute/bin/pip install --no-deps --require-virtualenv . \
    && /opt/taskroute/bin/python -m compileall -q /opt/taskroute/lib

# ---------------------------------------------------------------- runtime: the venv, nothing else
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="taskroute" \
      org.opencontainers.image.description="Taskroute gateway, router and vault (one image)" \
      org.opencontainers.image.licenses="Proprietary"
ENV PATH=/opt/taskroute/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TASKROUTE_ENVIRONMENT=production \
    TASKROUTE_DATA_DIR=/tmp/taskroute \
    HEALTHCHECK_PORT=8000
# A numeric, unprivileged user, so Kubernetes' runAsNonRoot can verify it without /etc/passwd.
RUN groupadd --system --gid 10001 taskroute \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin taskroute \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/taskroute
COPY --from=builder /opt/taskroute /opt/taskroute
WORKDIR /tmp
USER 10001:10001
EXPOSE 8000 8001 8002
# Liveness without curl: the image's own Python asks /healthz on the service's port.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ['HEALTHCHECK_PORT'] + '/healthz', timeout=4)"]
ENTRYPOINT ["taskroute"]
CMD ["serve", "gateway", "--no-migrate"]
