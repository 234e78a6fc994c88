# One runtime image for every core2 service on a cluster: scheduler, agent, model server
# (MLServer), dataflow engine and gateways. Envoy and Triton use their own pinned images.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# Artifact-store extras baked in: the agent fetches s3:// (AWS, MinIO), gs:// and az://
# storageUris. Narrow with e.g. --build-arg EXTRAS=s3 for a smaller image.
ARG EXTRAS="s3,gcs,azure"

WORKDIR /opt/core2
COPY pyproject.toml requirements.lock ./
COPY runtime ./runtime
COPY components ./components
# Pinned by the lock file. xds-protos overwrites opentelemetry-proto's modules, so the pinned
# opentelemetry-proto is reinstalled over it (MLServer breaks otherwise).
RUN pip install -c requirements.lock ".${EXTRAS:+[$EXTRAS]}" \
    && pip install --force-reinstall --no-deps opentelemetry-proto==1.45.2

RUN groupadd --system --gid 10001 core2 \
    && useradd --system --uid 10001 --gid core2 --home-dir /var/lib/core2 core2 \
    && mkdir -p /var/lib/core2 /mnt/models /mnt/cache \
    && chown core2:core2 /var/lib/core2 /mnt/models /mnt/cache
USER 10001:10001
# Pods run with a read-only root filesystem and a writable /tmp; libraries that cache under
# $HOME write there.
ENV HOME=/tmp

# Each Deployment/StatefulSet sets its own command (python -m runtime.<service> ...).
CMD ["python", "-m", "runtime.scheduler", "--help"]
