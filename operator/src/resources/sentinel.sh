#!/bin/sh
# Start one managed sentinel.
# It monitors the master the other sentinels agree on, else the data node that says it is a master, else
# the first data node (bootstrap). The configuration is rewritten from scratch at every start, so a
# sentinel never keeps watching an address that is gone; hostnames are announced and resolved.
# Sentinels require the Redis password (the default user's) and use it with each other (sentinel-pass): without
# it nobody can re-point the master or learn the Redis password from a sentinel.
# Ports, the directory, the bind address, the host names and the failure timing can be overridden by
# environment variables for the real-process tests; on Kubernetes the defaults apply.
set -eu
redis_port="${REDIS_PORT:-6379}"
sentinel_port="${SENTINEL_PORT:-26379}"
conf_dir="${CONF_DIR:-/conf}"
self="${SELF_HOST:-${POD_NAME}.${SENTINEL_HEADLESS}.${POD_NAMESPACE}.svc.${CLUSTER_DOMAIN}}"
first="${FIRST_HOST:-${REDIS_STS}-0.${REDIS_HEADLESS}.${POD_NAMESPACE}.svc.${CLUSTER_DOMAIN}}"
# With TLS_DIR (spec.redis.managed.tls: tls.crt, tls.key, ca.crt) every port speaks TLS only, to clients
# and between the servers, and the redis-cli calls below do too.
cli_tls=""
if [ -n "${TLS_DIR:-}" ]; then cli_tls="--tls --cacert ${TLS_DIR}/ca.crt"; fi
master=""
for s in $SENTINEL_HOSTS; do
  [ "$s" = "$self" ] && continue
  reply="$(REDISCLI_AUTH="$REDIS_PASSWORD" timeout 3 redis-cli $cli_tls -h "$s" -p "$sentinel_port" sentinel get-master-addr-by-name "$MASTER_NAME" 2>/dev/null | head -n 1 || true)"
  if [ -n "$reply" ]; then master="$reply"; break; fi
done
if [ -z "$master" ]; then
  for h in $REDIS_HOSTS; do
    if REDISCLI_AUTH="$REDIS_PASSWORD" timeout 3 redis-cli $cli_tls -h "$h" -p "$redis_port" info replication 2>/dev/null | grep -q '^role:master'; then
      master="$h"; break
    fi
  done
fi
[ -n "$master" ] || master="$first"
mkdir -p "$conf_dir"
# Every password accepted (two while the operator rotates it: REDIS_PASSWORDS, space separated); the
# current one (REDIS_PASSWORD) is what this server uses with its peers.
acl="user default on resetpass"
set -f
for p in ${REDIS_PASSWORDS:-$REDIS_PASSWORD}; do acl="${acl} >${p}"; done
set +f
acl="${acl} ~* &* +@all"
if [ -n "${TLS_DIR:-}" ]; then
  listen="port 0
tls-port ${sentinel_port}
tls-cert-file ${TLS_DIR}/tls.crt
tls-key-file ${TLS_DIR}/tls.key
tls-ca-cert-file ${TLS_DIR}/ca.crt
tls-auth-clients no
tls-replication yes"
else
  listen="port ${sentinel_port}"
fi
cat > "$conf_dir/sentinel.conf" <<CONF
${listen}
bind ${BIND:-* -::*}
protected-mode no
${acl}
sentinel sentinel-pass ${REDIS_PASSWORD}
sentinel resolve-hostnames yes
sentinel announce-hostnames yes
sentinel announce-ip ${self}
sentinel announce-port ${sentinel_port}
sentinel monitor ${MASTER_NAME} ${master} ${redis_port} ${QUORUM}
sentinel auth-pass ${MASTER_NAME} ${REDIS_PASSWORD}
sentinel down-after-milliseconds ${MASTER_NAME} ${DOWN_AFTER_MS:-5000}
sentinel failover-timeout ${MASTER_NAME} ${FAILOVER_TIMEOUT_MS:-60000}
sentinel parallel-syncs ${MASTER_NAME} 1
CONF
echo "sentinel: ${self} monitors ${master}"
exec redis-sentinel "$conf_dir/sentinel.conf"
