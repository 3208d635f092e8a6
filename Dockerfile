# stream-monitor: the monitor service (`stream-monitor run`) in a slim image.
#
#   docker build -t stream-monitor:0.1.0 .
#   docker run --rm -p 9108:9108 -v $PWD/config/compose.yaml:/etc/stream-monitor/config.yaml:ro \
#       stream-monitor:0.1.0
#
# Settings come from the mounted config file and STREAM_MONITOR_* variables
# (e.g. STREAM_MONITOR_KAFKA__BOOTSTRAP_SERVERS, STREAM_MONITOR_KAFKA__SASL_PASSWORD).
# Every dependency ships as a manylinux wheel (librdkafka is inside
# confluent-kafka's), so no compiler or system library is installed.
FROM python:3.11.10-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NUMBA_CACHE_DIR=/tmp/numba-cache

# numba compiles the detectors' inner loops at their first call (about 2 CPU-seconds) and
# caches the machine code under NUMBA_CACHE_DIR: /tmp is writable for the non-root user
# here and in deploy/kubernetes (an emptyDir under a read-only root filesystem).

# a fixed numeric uid so Kubernetes' runAsNonRoot can verify it
RUN groupadd --system --gid 10001 monitor \
 && useradd --system --uid 10001 --gid monitor --no-create-home --shell /usr/sbin/nologin monitor

WORKDIR /opt/stream-monitor
COPY pyproject.toml README.md ./
COPY stream_monitor ./stream_monitor
RUN pip install . && rm -rf build stream_monitor.egg-info
COPY config ./config

USER 10001:10001
EXPOSE 9108

# /healthz answers 200 while the consumer loop is alive. No curl in a slim
# image: the standard library does it (urlopen raises on a non-2xx status).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('STREAM_MONITOR_METRICS__PORT', '9108') + '/healthz', timeout=4)"]

ENTRYPOINT ["stream-monitor"]
CMD ["run", "--config", "/etc/stream-monitor/config.yaml"]
