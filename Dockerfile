# fhir-bridge: slim, non-root, gunicorn. Migrations run before the server starts.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml setup.py README.md LICENSE ./
COPY fhir_bridge ./fhir_bridge
# the wheel carries the code mappings (setup.py copies them into fhir_bridge/_mappings)
COPY mappings ./mappings
RUN pip install --no-cache-dir --upgrade pip \
 && pip wheel --no-cache-dir --wheel-dir /wheels '.[otel]'

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    FHIR_BRIDGE_DATABASE_URL=sqlite:////var/lib/fhir-bridge/fhir-bridge.db \
    FHIR_BRIDGE_MAPPINGS_DIR=/opt/fhir-bridge/mappings \
    FHIR_BRIDGE_AUDIT_SPOOL_DIR=/var/lib/fhir-bridge/audit
RUN useradd --system --uid 10001 --home-dir /var/lib/fhir-bridge --create-home bridge \
 && install -d -o bridge -g bridge /var/lib/fhir-bridge/audit
COPY --from=build /wheels /wheels
# with the OpenTelemetry extra: tracing is off unless FHIR_BRIDGE_OTEL=on
RUN pip install --no-cache-dir --no-index --find-links /wheels 'fhir-bridge[otel]' \
 && rm -rf /wheels
COPY mappings /opt/fhir-bridge/mappings
COPY sample_bundles /opt/fhir-bridge/sample_bundles
USER bridge
WORKDIR /var/lib/fhir-bridge
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=2).status == 200 else 1)"
# gunicorn's settings (threaded workers that never give a thread to a slow client, JSON logs)
# are in fhir_bridge/gunicorn_conf.py; WEB_CONCURRENCY sets the number of processes.
# Several containers may start at once: db upgrade waits for the others (an advisory lock).
CMD ["sh", "-c", "fhir-bridge mappings check && fhir-bridge db upgrade && exec gunicorn fhir_bridge.wsgi:app --config python:fhir_bridge.gunicorn_conf --bind 0.0.0.0:8080"]
