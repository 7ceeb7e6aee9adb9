# syntax=docker/dockerfile:1
#
# One image for the three ride-payments processes. The container command picks the service:
#
#   docker run IMAGE                      -> python -m services.webhook   (default CMD)
#   docker run IMAGE services.consumer    -> python -m services.consumer
#   docker run IMAGE services.notifier    -> python -m services.notifier
#
# ENTRYPOINT and CMD are exec form, so python is PID 1 and receives SIGTERM itself (no shell in
# between); each service handles SIGTERM and shuts down gracefully.
#
# Build:  docker build -t ride-payments:dev .
# The base image is pinned to a patch release; for fully reproducible builds also pin the digest
# (python:3.11.14-slim-bookworm@sha256:...), as CI tooling such as Renovate can keep it current.

############################################################################################
# builder: a virtualenv holding exactly the locked runtime dependencies (wheels only, hashes
# checked). Nothing from this stage but /opt/venv and the compiled sources reaches the runtime.
############################################################################################
FROM python:3.11.14-slim-bookworm AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# Dependencies first, so source changes do not invalidate this layer.
# --require-hashes: every package (including transitive ones) must be pinned with a hash in the
# lock; --only-binary: no compiler in the image, and no surprise sdist builds.
COPY requirements.lock /tmp/requirements.lock
RUN pip install --no-cache-dir --require-hashes --only-binary=:all: -r /tmp/requirements.lock \
    && pip check

# Only the runtime packages; devstack/, tests/, bench/ and docs/ never enter the image
# (.dockerignore excludes them as well).
COPY shared/ /app/shared/
COPY services/ /app/services/
# Byte-compile ahead of time: the runtime root filesystem is read-only in Kubernetes.
RUN python -m compileall -q /app /opt/venv

############################################################################################
# runtime: slim base, non-root user 10001, no build tooling.
############################################################################################
FROM python:3.11.14-slim-bookworm AS runtime

LABEL org.opencontainers.image.title="ride-payments" \
      org.opencontainers.image.description="Ride-hailing payments: consumer, webhook and notifier" \
      org.opencontainers.image.licenses="Proprietary"

# FAUST_DATADIR: the Faust worker keeps local state under a writable path (/tmp is an emptyDir
# in Kubernetes and a tmpfs in Compose; the root filesystem is read-only).
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONFAULTHANDLER=1 \
    PYTHONPATH=/app \
    PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    FAUST_DATADIR=/tmp/faust-data

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin app

# Owned by root and read-only for the app user.
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /app /app

WORKDIR /app
USER 10001:10001

# consumer health/metrics, webhook (public), notifier, webhook (internal: API, readiness, metrics)
EXPOSE 6066 9090 9091 9092

STOPSIGNAL SIGTERM

# Liveness only (/healthz never checks dependencies). There is no curl in the slim image, so
# python's urllib does the request. The port is $PORT when set; otherwise the contract default of
# the service named on PID 1's command line (6066 consumer, 9090 webhook, 9091 notifier).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request as u; argv = open('/proc/1/cmdline', 'rb').read().decode().split(chr(0)); d = {'services.consumer': '6066', 'services.webhook': '9090', 'services.notifier': '9091'}; port = os.environ.get('PORT') or next((d[a] for a in argv if a in d), '9090'); r = u.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4); sys.exit(0 if r.status == 200 else 1)"]

ENTRYPOINT ["python", "-m"]
CMD ["services.webhook"]
