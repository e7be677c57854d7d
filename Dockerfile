# Interlook controller image: kopf runs controller/main.py as a non-root user
# on a read-only root filesystem (manifests/30-deployment.yaml).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY controller ./controller
COPY extensions ./extensions
# The versions the test suite passed with, not whatever is newest on build day.
RUN pip install --no-cache-dir -c constraints.txt --prefix=/install .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 INTERLOOK_CONFIG=/etc/interlook/config.yml
COPY --from=build /install /usr/local
WORKDIR /app
COPY controller ./controller
COPY extensions ./extensions
COPY config.yml /etc/interlook/config.yml
RUN useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin interlook
USER 10001:10001
EXPOSE 8080 8081
ENTRYPOINT ["kopf"]
CMD ["run", "--all-namespaces", "--standalone", "/app/controller/main.py"]
