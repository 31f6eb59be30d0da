# Start one managed sentinel (after common.sh, which the operator puts in front).
# It monitors the master the other sentinels agree on, else the data node that says it is a master, else
# the first data node (bootstrap). The configuration is rewritten from scratch at every start, so a
# sentinel never keeps watching an address that is gone; hostnames are announced and resolved.
# Sentinels require the Redis password (the default user's) and use it with each other (sentinel-pass): without
# it nobody can re-point the master or learn the Redis password from a sentinel.
# Ports, the directory, the bind address, the host names and the failure timing can be overridden by
# environment variables for the real-process tests; on Kubernetes the defaults apply.
self="${SELF_HOST:-${POD_NAME}.${SENTINEL_HEADLESS}.${POD_NAMESPACE}.svc.${CLUSTER_DOMAIN}}"
first="${FIRST_HOST:-${REDIS_STS}-0.${REDIS_HEADLESS}.${POD_NAMESPACE}.svc.${CLUSTER_DOMAIN}}"
master="$(master_from_sentinels "$self")"
[ -n "$master" ] || master="$(master_from_data_nodes)"
[ -n "$master" ] || master="$first"
mkdir -p "$conf_dir"
listen_on "$sentinel_port"
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
