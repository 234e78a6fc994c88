# One runtime image for every core2 service on a cluster: scheduler, agent, model server
# (MLServer), dataflow engine and gateways. Envoy and Triton use their own pinned images.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /opt/core2
# Dependencies first (their layer is reused while only the source changes).
COPY pyproject.toml requirements.lock ./
COPY runtime ./runtime
COPY components ./components
RUN pip install -c requirements.lock . \
    # xds-protos overwrites opentelemetry-proto's modules; put the pinned ones back.
    && pip install --force-reinstall --no-deps opentelemetry-proto==1.45.2

RUN groupadd --system --gid 10001 core2 \
    && useradd --system --uid 10001 --gid core2 --home-dir /var/lib/core2 core2 \
    && mkdir -p /var/lib/core2 /mnt/models /mnt/cache \
    && chown core2:core2 /var/lib/core2 /mnt/models /mnt/cache
USER 10001:10001

# Each Deployment/StatefulSet sets its own command (python -m runtime.<service> ...).
CMD ["python", "-m", "runtime.scheduler", "--help"]
