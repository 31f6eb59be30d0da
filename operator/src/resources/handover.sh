# Before a managed Redis data node stops (its pod's preStop hook; after common.sh, which the operator puts
# in front): if it is the master and has a replica, hand the master role over the way the operator's Redis
# update does (switchboard_redis::sentinel::planned_failover), so deleting or evicting the master's pod
# costs the chat system a reconnect instead of the sentinels' down-after and failover:
#   1. hold writes here (CLIENT PAUSE WRITE, 20 s at most: it ends by itself if this script is cut short);
#   2. let the replicas catch up with the last write (5 s at most; the sentinels then pick the one with the
#      most data);
#   3. ask a sentinel for the failover (SENTINEL FAILOVER; the sentinels in turn, again for 5 s while
#      none starts it);
#   4. once every sentinel that answers, a majority at least, names another master (15 s at most), close
#      this server's client connections so that everyone asks the sentinels again and moves at once.
# A replica, a master without replicas, or a master no sentinel fails over (the hold is lifted then) just
# stops; the sentinels fail over after their down-after as before. Every step is bounded: the whole hand-over
# stays well inside the pod's termination grace period. It never fails the hook: the pod stops either way.
# Like redis.sh, the host names and ports can be overridden by the environment for the real-process tests.
set +e
hosts_file="${HOSTS_FILE:-/scripts/hosts.env}"
if [ -r "$hosts_file" ]; then . "$hosts_file"; fi
# The password in use now: the mounted applied Secret follows a rotation; the environment holds the one
# this pod started with.
if [ -r "${AUTH_DIR:-}/password" ]; then REDIS_PASSWORD="$(cat "$AUTH_DIR/password")"; fi
self="${SELF_HOST:-${POD_NAME}.${REDIS_HEADLESS}.${POD_NAMESPACE}.svc.${CLUSTER_DOMAIN}}"
# This server (as the probes ask it), and the sentinel at $1.
here() { REDISCLI_AUTH="$REDIS_PASSWORD" timeout 3 redis-cli $cli_tls -h "${LOCAL_HOST:-127.0.0.1}" -p "$redis_port" "$@" 2>/dev/null | tr -d '\r'; }
sentinel() { at="$1"; shift; REDISCLI_AUTH="$REDIS_PASSWORD" timeout 3 redis-cli $cli_tls -h "$at" -p "$sentinel_port" sentinel "$@" 2>/dev/null | tr -d '\r'; }
# The value of field $1 in an INFO section read from stdin.
field() { sed -n "s/^$1:\\([^,]*\\).*/\\1/p"; }
now() { date +%s; }

replication="$(here info replication)"
[ "$(echo "$replication" | field role)" = "master" ] || exit 0
if [ "$(echo "$replication" | field connected_slaves)" = "0" ]; then
  echo "handover: ${self} is master without replicas: nothing to hand over"
  exit 0
fi
started="$(now)"
echo "handover: ${self} is master: holding writes and handing the role over"
here client pause 20000 write >/dev/null
target="$(here info replication | field master_repl_offset)"
until_time=$((started + 5))
while [ "$(now)" -lt "$until_time" ]; do
  # Each replica's line: slaveN:ip=…,port=…,state=online,offset=N,lag=N
  behind="$(here info replication | sed -n 's/^slave[0-9]*:.*offset=\([0-9]*\).*/\1/p' | while read -r o; do [ "$o" -lt "${target:-0}" ] && echo x; done)"
  [ -z "$behind" ] && break
  sleep 0.1
done
# A sentinel refuses while it sees no replica fit to promote (NOGOODSLAVE: briefly, after its links to
# them were reset) or a failover is being finished (INPROG): the sentinels are asked again for 5 s.
failed_over=""
refused=""
until_time=$(($(now) + 5))
while :; do
  for s in $SENTINEL_HOSTS; do
    answer="$(sentinel "$s" failover "$MASTER_NAME")"
    if [ "$answer" = "OK" ]; then failed_over="$s"; break 2; fi
    refused="${answer:-no answer}"
  done
  [ "$(now)" -lt "$until_time" ] || break
  sleep 0.25
done
if [ -z "$failed_over" ]; then
  echo "handover: no sentinel started a failover (${refused}): writes resumed; the sentinels fail over after their down-after"
  here client unpause >/dev/null
  exit 0
fi
until_time=$(($(now) + 15))
while [ "$(now)" -lt "$until_time" ]; do
  answered=0; moved=0; count=0
  for s in $SENTINEL_HOSTS; do
    count=$((count + 1))
    named="$(sentinel "$s" get-master-addr-by-name "$MASTER_NAME" | head -n 1)"
    [ -n "$named" ] || continue
    answered=$((answered + 1))
    [ "$named" != "$self" ] && moved=$((moved + 1))
  done
  if [ "$answered" -gt $((count / 2)) ] && [ "$moved" -eq "$answered" ]; then
    here client kill type normal >/dev/null
    here client kill type pubsub >/dev/null
    echo "handover: sentinel ${failed_over} failed over; every sentinel names the new master after $(($(now) - started))s; this server's clients were sent to it"
    exit 0
  fi
  sleep 0.2
done
echo "handover: the sentinels did not all name a new master within 15s: stopping anyway"
exit 0
