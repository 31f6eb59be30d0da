#!/bin/sh
# Start one managed Redis data node.
# The master is, in order: what the sentinels report (they follow failovers), else a data node that says it
# is a master, else the first pod (the bootstrap of a new chat system). Every address is a stable hostname
# of the headless Service, never a pod IP, so the configuration survives restarts and IP changes.
set -eu
self="${POD_NAME}.${REDIS_HEADLESS}.${POD_NAMESPACE}.svc.${CLUSTER_DOMAIN}"
first="${REDIS_STS}-0.${REDIS_HEADLESS}.${POD_NAMESPACE}.svc.${CLUSTER_DOMAIN}"
master=""
for s in $SENTINEL_HOSTS; do
  reply="$(timeout 3 redis-cli -h "$s" -p 26379 sentinel get-master-addr-by-name "$MASTER_NAME" 2>/dev/null | head -n 1 || true)"
  if [ -n "$reply" ]; then master="$reply"; break; fi
done
if [ -z "$master" ]; then
  for h in $REDIS_HOSTS; do
    [ "$h" = "$self" ] && continue
    if REDISCLI_AUTH="$REDIS_PASSWORD" timeout 3 redis-cli -h "$h" -p 6379 info replication 2>/dev/null | grep -q '^role:master'; then
      master="$h"; break
    fi
  done
fi
[ -n "$master" ] || master="$first"
mkdir -p /conf /data
cat > /conf/redis.conf <<CONF
port 6379
bind * -::*
protected-mode no
dir /data
appendonly yes
requirepass ${REDIS_PASSWORD}
masterauth ${REDIS_PASSWORD}
replica-announce-ip ${self}
replica-announce-port 6379
CONF
if [ "$master" != "$self" ]; then
  echo "replicaof ${master} 6379" >> /conf/redis.conf
fi
echo "redis: ${self} starts with master ${master}"
exec redis-server /conf/redis.conf
