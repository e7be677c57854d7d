# Interlook controller image: kopf runs controller/main.py as a non-root user
# on a read-only root filesystem (manifests/30-deployment.yaml).
#
# BASE_IMAGE is any image with python3.11 and its venv module.  The default is
# the official slim image pinned by digest (refresh the digest with
# `docker buildx imagetools inspect python:3.11-slim`); where no registry can
# be reached, scripts/build-images.sh builds on a Debian bookworm base made by
# debootstrap instead (`--build-arg BASE_IMAGE=...`).
ARG BASE_IMAGE=python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7

FROM ${BASE_IMAGE} AS build
# Optional pip settings for this stage only: a mirror, or the local wheelhouse
# scripts/build-images.sh serves (no package index is trusted from inside a
# container on the test machine).
ARG PIP_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_NO_INDEX
# A virtualenv, not --prefix: it lands in the same place whatever the base's
# Python layout (the official image's /usr/local, Debian's dist-packages).
RUN python3 -m venv /opt/interlook
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY controller ./controller
COPY extensions ./extensions
# The versions the test suite passed with, not whatever is newest on build day.
RUN /opt/interlook/bin/pip install --no-cache-dir --disable-pip-version-check -c constraints.txt .

FROM ${BASE_IMAGE}
ENV PATH=/opt/interlook/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 INTERLOOK_CONFIG=/etc/interlook/config.yml
COPY --from=build /opt/interlook /opt/interlook
WORKDIR /app
COPY controller ./controller
COPY extensions ./extensions
COPY config.yml /etc/interlook/config.yml
RUN useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin interlook
USER 10001:10001
EXPOSE 8080 8081
ENTRYPOINT ["kopf"]
CMD ["run", "--all-namespaces", "--standalone", "/app/controller/main.py"]
