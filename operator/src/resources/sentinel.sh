#!/bin/sh
# Start one managed sentinel.
# It monitors the master the other sentinels agree on, else the data node that says it is a master, else
# the first data node (bootstrap). The configuration is rewritten from scratch at every start, so a
# sentinel never keeps watching an address that is gone; hostnames are announced and resolved.
set -eu
self="${POD_NAME}.${SENTINEL_HEADLESS}.${POD_NAMESPACE}.svc.${CLUSTER_DOMAIN}"
first="${REDIS_STS}-0.${REDIS_HEADLESS}.${POD_NAMESPACE}.svc.${CLUSTER_DOMAIN}"
master=""
for s in $SENTINEL_HOSTS; do
  [ "$s" = "$self" ] && continue
  reply="$(timeout 3 redis-cli -h "$s" -p 26379 sentinel get-master-addr-by-name "$MASTER_NAME" 2>/dev/null | head -n 1 || true)"
  if [ -n "$reply" ]; then master="$reply"; break; fi
done
if [ -z "$master" ]; then
  for h in $REDIS_HOSTS; do
    if REDISCLI_AUTH="$REDIS_PASSWORD" timeout 3 redis-cli -h "$h" -p 6379 info replication 2>/dev/null | grep -q '^role:master'; then
      master="$h"; break
    fi
  done
fi
[ -n "$master" ] || master="$first"
mkdir -p /conf
cat > /conf/sentinel.conf <<CONF
port 26379
protected-mode no
sentinel resolve-hostnames yes
sentinel announce-hostnames yes
sentinel announce-ip ${self}
sentinel announce-port 26379
sentinel monitor ${MASTER_NAME} ${master} 6379 ${QUORUM}
sentinel auth-pass ${MASTER_NAME} ${REDIS_PASSWORD}
sentinel down-after-milliseconds ${MASTER_NAME} 5000
sentinel failover-timeout ${MASTER_NAME} 60000
sentinel parallel-syncs ${MASTER_NAME} 1
CONF
echo "sentinel: ${self} monitors ${master}"
exec redis-sentinel /conf/sentinel.conf
