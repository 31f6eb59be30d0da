#!/bin/sh
# The part of the managed Redis start scripts that data nodes and sentinels share; the operator puts it in
# front of redis.sh and sentinel.sh (resources::REDIS_SCRIPT, SENTINEL_SCRIPT), so each stays one file.
set -eu
redis_port="${REDIS_PORT:-6379}"
sentinel_port="${SENTINEL_PORT:-26379}"
conf_dir="${CONF_DIR:-/conf}"
# With TLS_DIR (spec.redis.managed.tls: tls.crt, tls.key, ca.crt) every port speaks TLS only, to clients
# and between the servers, and the redis-cli calls below do too.
cli_tls=""
if [ -n "${TLS_DIR:-}" ]; then cli_tls="--tls --cacert ${TLS_DIR}/ca.crt"; fi

# The master the first sentinel that answers names, asking every sentinel but $1; empty when none does.
master_from_sentinels() {
  for s in $SENTINEL_HOSTS; do
    [ "$s" = "${1:-}" ] && continue
    reply="$(REDISCLI_AUTH="$REDIS_PASSWORD" timeout 3 redis-cli $cli_tls -h "$s" -p "$sentinel_port" sentinel get-master-addr-by-name "$MASTER_NAME" 2>/dev/null | head -n 1 || true)"
    if [ -n "$reply" ]; then echo "$reply"; return 0; fi
  done
}

# The first data node but $1 that says it is a master; empty when none does.
master_from_data_nodes() {
  for h in $REDIS_HOSTS; do
    [ "$h" = "${1:-}" ] && continue
    if REDISCLI_AUTH="$REDIS_PASSWORD" timeout 3 redis-cli $cli_tls -h "$h" -p "$redis_port" info replication 2>/dev/null | grep -q '^role:master'; then
      echo "$h"; return 0
    fi
  done
}

# The configuration's listening lines for port $1 (TLS only with TLS_DIR), in `listen`.
listen_on() {
  if [ -n "${TLS_DIR:-}" ]; then
    listen="port 0
tls-port ${1}
tls-cert-file ${TLS_DIR}/tls.crt
tls-key-file ${TLS_DIR}/tls.key
tls-ca-cert-file ${TLS_DIR}/ca.crt
tls-auth-clients no
tls-replication yes"
  else
    listen="port ${1}"
  fi
}

# Every password accepted (two while the operator rotates it: REDIS_PASSWORDS, space separated); the
# current one (REDIS_PASSWORD) is what this server uses with its peers.
acl="user default on resetpass"
set -f
for p in ${REDIS_PASSWORDS:-$REDIS_PASSWORD}; do acl="${acl} >${p}"; done
set +f
acl="${acl} ~* &* +@all"
