# syntax=docker/dockerfile:1
# mcp-gateway image: a builder stage makes a wheel and installs it with its runtime
# dependencies into /opt/venv; the runtime stage copies only that venv.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# Only what the wheel needs: metadata first (better layer caching), then the package.
COPY pyproject.toml README.md ./
COPY gateway ./gateway
# Runtime dependencies only: no `[test]` extra. `--build-arg EXTRAS=otel` adds OpenTelemetry tracing
# (README "Tracing"; on when OTEL_EXPORTER_OTLP_ENDPOINT is set).
ARG EXTRAS=""
RUN pip wheel --no-deps --wheel-dir /wheels . \
 && wheel="$(ls /wheels/*.whl)" \
 && pip install "${wheel}${EXTRAS:+[$EXTRAS]}" \
 && python -m compileall -q /opt/venv

FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN groupadd --system --gid 10001 mcpgw \
 && useradd --system --uid 10001 --gid mcpgw --no-create-home --home-dir /nonexistent \
    --shell /usr/sbin/nologin mcpgw
COPY --from=builder /opt/venv /opt/venv
# Numeric user so Kubernetes `runAsNonRoot` can verify it.
USER 10001:10001
EXPOSE 8080
# slim has no curl: probe /healthz with the standard library.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["mcp-gateway"]
CMD ["--host", "0.0.0.0", "--port", "8080"]
