# Redis and Sentinel for the operator's managed Redis: Debian 12's redis-server, redis-sentinel and
# redis-cli, plus the POSIX sh and coreutils `timeout` that the operator's redis.sh and sentinel.sh use.
# Runs as uid 999 (the uid the upstream redis images use). Needs no build context beyond this file:
#   docker build -f deploy/docker/redis.Dockerfile -t switchboard/redis:7.0.15 deploy/docker
# The version is pinned to Debian's security update; when Debian ships a newer one, move the ARG.
FROM debian:bookworm-slim
ARG REDIS_VERSION=5:7.0.15-1~deb12u10
RUN groupadd --system --gid 999 redis \
 && useradd --system --uid 999 --gid redis --home-dir /data --no-create-home redis \
 && apt-get update \
 && apt-get install -y --no-install-recommends \
      redis-server=${REDIS_VERSION} redis-sentinel=${REDIS_VERSION} redis-tools=${REDIS_VERSION} \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
 && mkdir -p /data /conf && chown redis:redis /data /conf
USER 999:999
WORKDIR /data
EXPOSE 6379 26379
CMD ["redis-server", "--protected-mode", "no"]
