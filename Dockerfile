# The connector's image (docs/docker.md). Three stages:
#   base     the service as Sesam runs it: runtime dependencies, the code, a non-root user
#   test     base plus the test tools and the whole repository, so that
#            `docker-compose exec connector pytest` runs the suite (docker-compose builds it)
#   runtime  the default target of `docker build .`: base as it is, lean; what you push

# Pinned with its Debian release: the unsuffixed slim tags once moved to a new Debian.
FROM python:3.12-slim-bookworm AS base

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    STATE_DIR=/app/state

WORKDIR /app

# A numeric user, so that a platform can check "non-root" without reading /etc/passwd.
RUN useradd --uid 10001 --user-group --no-log-init --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin app \
    && mkdir /app/state \
    && chown 10001:10001 /app/state

# Dependencies in their own layer: a code change does not reinstall them.
COPY service/requirements.txt service/requirements-connector.txt service/
RUN pip install --no-cache-dir -r service/requirements.txt

COPY fork.toml ./
COPY service/*.py service/
COPY service/framework/ service/framework/

EXPOSE 5000

# Slim images have no curl; urlopen raises (exit 1) on an error status or no answer.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + (os.environ.get('PORT') or '5000') + '/health', timeout=4)"]

USER 10001:10001

# The contract's command, exec form: gunicorn is PID 1 and gets SIGTERM itself. It serves
# the app fork.toml names (wsgi_app in service/gunicorn.conf.py), so it names no module.
CMD ["gunicorn", "-c", "service/gunicorn.conf.py"]


FROM base AS test

USER 0
COPY service/requirements-dev.txt service/
RUN pip install --no-cache-dir -r service/requirements-dev.txt
COPY . .

# `pytest` with no arguments, from /app, finds the suite and its pytest.ini.
ENV PYTEST_ADDOPTS="-c service/tests/pytest.ini --rootdir service/tests -p no:cacheprovider"

USER 10001:10001


FROM base AS runtime
