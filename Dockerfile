# syntax=docker/dockerfile:1
# yurong application image: one image, several services (connector, worker, sink, simulator),
# selected by the command (`yurong connect market`, `yurong worker`, ...). Configured only
# through YURONG_* environment variables (see streams/settings.py).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first (better layer caching): project metadata + the packages pip installs.
# README.md* is optional in the glob so the build works before a README exists; note that
# pyproject.toml names README.md as `readme`, so `pip install .` needs it once it is referenced.
COPY pyproject.toml README.md* ./
COPY streams/ streams/
COPY connectors/ connectors/
COPY sinks/ sinks/
COPY monitoring/ monitoring/
# EXTRAS="[sim]" builds the simulator's image (Faker); the services' image has no tooling deps.
ARG EXTRAS=""
RUN pip install ".${EXTRAS}" \
    && rm -rf build *.egg-info

# Schemas are data, read from YURONG_AVRO_DIR at run time.
COPY avro/ avro/

# Non-root runtime user; YURONG_HOME (/var/lib/yurong) is its writable state folder, a volume in compose.
RUN groupadd --system --gid 10001 yurong \
    && useradd --system --uid 10001 --gid yurong --home-dir /var/lib/yurong --create-home --shell /usr/sbin/nologin yurong

# PYTHONPATH=/app: the source tree in /app shadows the installed copy, so
# streams.settings.REPO_ROOT resolves to /app (the Avro schemas are read from /app/avro).
ENV PYTHONPATH=/app \
    YURONG_HOME=/var/lib/yurong \
    YURONG_AVRO_DIR=/app/avro \
    YURONG_METRICS_BIND=0.0.0.0

USER yurong:yurong
# writable working directory: relative paths (Faust's <app>-data folder, .env) resolve here
WORKDIR /var/lib/yurong

# metrics: connector 9101, worker 9102, sink 9103; Faust web 6066
EXPOSE 6066 9101 9102 9103

# Services choose the subcommand, e.g. `yurong worker` (see docker-compose.yml).
CMD ["yurong", "--help"]
