# Start one managed Redis data node (after common.sh, which the operator puts in front).
# The master is, in order: what the sentinels report (they follow failovers), else a data node that says it
# is a master, else the first pod (the bootstrap of a new chat system). Every address is a stable hostname
# of the headless Service, never a pod IP, so the configuration survives restarts and IP changes.
# Ports, directories, the bind address and the host names can be overridden by environment variables so
# the same script runs as plain processes in the real-process tests; on Kubernetes the defaults apply.
# The host lists come from the operator's ConfigMap (hosts.env), so changing a count restarts no data
# node; without the file (the real-process tests) they come from the environment.
hosts_file="${HOSTS_FILE:-/scripts/hosts.env}"
if [ -r "$hosts_file" ]; then . "$hosts_file"; fi
data_dir="${DATA_DIR:-/data}"
self="${SELF_HOST:-${POD_NAME}.${REDIS_HEADLESS}.${POD_NAMESPACE}.svc.${CLUSTER_DOMAIN}}"
first="${FIRST_HOST:-${REDIS_STS}-0.${REDIS_HEADLESS}.${POD_NAMESPACE}.svc.${CLUSTER_DOMAIN}}"
master="$(master_from_sentinels)"
[ -n "$master" ] || master="$(master_from_data_nodes "$self")"
[ -n "$master" ] || master="$first"
mkdir -p "$conf_dir" "$data_dir"

# A data node without data of its own must not become master while a peer holds data: the replicas would
# resync to its empty dataset. This happens when a pod that was master restarts on an empty volume before
# the sentinels noticed it was gone. It waits for them to promote a replica (or gives up, and the kubelet
# starts it again).
has_data() {
  [ -s "$data_dir/dump.rdb" ] || [ -n "$(ls -A "$data_dir/appendonlydir" 2>/dev/null)" ]
}
peer_with_data() {
  for h in $REDIS_HOSTS; do
    [ "$h" = "$self" ] && continue
    if REDISCLI_AUTH="$REDIS_PASSWORD" timeout 3 redis-cli $cli_tls -h "$h" -p "$redis_port" info keyspace 2>/dev/null | grep -q '^db[0-9]*:keys=[1-9]'; then
      echo "$h"; return 0
    fi
  done
  return 1
}
waited=0
while [ "$master" = "$self" ] && ! has_data && peer="$(peer_with_data)"; do
  if [ "$waited" -ge "${EMPTY_MASTER_WAIT:-120}" ]; then
    echo "redis: ${self} has no data, ${peer} has, and no other master was named in ${waited}s: exiting to try again" >&2
    exit 1
  fi
  [ "$waited" -eq 0 ] && echo "redis: ${self} is named master but has no data while ${peer} has: waiting for the sentinels to promote a replica"
  sleep 2; waited=$((waited + 2))
  named="$(master_from_sentinels)"
  if [ -n "$named" ]; then master="$named"; fi
done
listen_on "$redis_port"
cat > "$conf_dir/redis.conf" <<CONF
${listen}
bind ${BIND:-* -::*}
protected-mode no
dir ${data_dir}
appendonly yes
# Never evict silently: when the data reaches maxmemory (set from the pod's memory), writes are refused
# and clients are told (unavailable), instead of Redis dropping message logs or the kernel killing it.
maxmemory ${MAXMEMORY:-0}
maxmemory-policy noeviction
${acl}
masterauth ${REDIS_PASSWORD}
replica-announce-ip ${self}
replica-announce-port ${redis_port}
CONF
if [ "$master" != "$self" ]; then
  echo "replicaof ${master} ${redis_port}" >> "$conf_dir/redis.conf"
fi
echo "redis: ${self} starts with master ${master}"
exec redis-server "$conf_dir/redis.conf"
