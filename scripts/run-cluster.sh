#!/usr/bin/env bash
# `make run-cluster`: three etcd members, three Envoy replicas with emr-edge
# in cluster mode, and the simulator, in the foreground on loopback
# (docs/cluster.md). Ctrl-C stops everything. Like `make run`, it waits, so
# every process keeps a live parent.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${INTAKE_PORTS:=10001 10002 10003}" "${ADMIN_PORTS:=9911 9912 9913}" "${SIM_PORT:=9902}"
: "${ETCD_CLIENT_PORTS:=12379 12479 12579}" "${ETCD_PEER_PORTS:=12380 12480 12580}"
: "${ENVOY:=.venv/bin/envoy-real}" "${WASM:=target/wasm32-wasip1/release/emr_edge.wasm}" "${SIM:=target/release/emr-sim}"
: "${ETCD:=etcd}"
: "${RUN_DIR:=target/run-cluster}"
read -r -a intake <<<"$INTAKE_PORTS"
read -r -a admin <<<"$ADMIN_PORTS"
read -r -a etcd_client <<<"$ETCD_CLIENT_PORTS"
read -r -a etcd_peer <<<"$ETCD_PEER_PORTS"
rm -rf "$RUN_DIR"
mkdir -p "$RUN_DIR"

# The simulator's demo client, as `make run` uses it.
export EMR_GENESYS_CLIENT_ID="${EMR_GENESYS_CLIENT_ID:-emr-edge-client}"
export EMR_GENESYS_CLIENT_SECRET="${EMR_GENESYS_CLIENT_SECRET:-emr-edge-secret}"
export EMR_PAGERDUTY_SECRET="${EMR_PAGERDUTY_SECRET:-emr-demo-pagerduty-secret}"

pids=()
stop() {
  trap - INT TERM EXIT
  echo
  echo "stopping..."
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop INT TERM EXIT

# etcd: three members, a fresh cluster each run.
initial=""
for i in 0 1 2; do
  initial+="${initial:+,}m$((i + 1))=http://127.0.0.1:${etcd_peer[$i]}"
done
for i in 0 1 2; do
  "$ETCD" --name "m$((i + 1))" --data-dir "$RUN_DIR/etcd-$((i + 1))" \
    --listen-client-urls "http://127.0.0.1:${etcd_client[$i]}" \
    --advertise-client-urls "http://127.0.0.1:${etcd_client[$i]}" \
    --listen-peer-urls "http://127.0.0.1:${etcd_peer[$i]}" \
    --initial-advertise-peer-urls "http://127.0.0.1:${etcd_peer[$i]}" \
    --initial-cluster "$initial" --initial-cluster-token emr-run-cluster \
    --log-level warn > "$RUN_DIR/etcd-$((i + 1)).log" 2>&1 &
  pids+=($!)
done
for _ in $(seq 1 100); do
  if curl -s "http://127.0.0.1:${etcd_client[0]}/health" | grep -q true; then break; fi
  sleep 0.1
done
if ! curl -s "http://127.0.0.1:${etcd_client[0]}/health" | grep -q true; then
  echo "etcd did not become healthy; its logs: $RUN_DIR/etcd-*.log"
  tail -n 5 "$RUN_DIR"/etcd-1.log
  exit 1
fi

"$SIM" --listen "127.0.0.1:$SIM_PORT" > "$RUN_DIR/sim.log" 2>&1 &
pids+=($!)

endpoints=""
for p in "${etcd_client[@]}"; do
  endpoints+="${endpoints:+, }{ endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: $p } } } }"
done
for i in 0 1 2; do
  python3 scripts/render.py envoy/cluster.yaml.tmpl envoy/cluster.config.json \
    "WASM=$(realpath "$WASM")" "LISTEN_PORT=${intake[$i]}" "ADMIN_PORT=${admin[$i]}" \
    "SIM_PORT=$SIM_PORT" "ETCD_ENDPOINTS=$endpoints" > "$RUN_DIR/envoy-$((i + 1)).yaml"
  EMR_REPLICA_ID="replica-$((i + 1))" "$ENVOY" -c "$RUN_DIR/envoy-$((i + 1)).yaml" \
    --concurrency 1 --use-dynamic-base-id --log-level info > "$RUN_DIR/envoy-$((i + 1)).log" 2>&1 &
  pids+=($!)
done

for i in 0 1 2; do
  ready=
  for _ in $(seq 1 100); do
    if [ "$(curl -s "http://127.0.0.1:${admin[$i]}/ready" 2>/dev/null)" = "LIVE" ]; then ready=1; break; fi
    sleep 0.1
  done
  if [ -z "$ready" ]; then
    echo "replica-$((i + 1)) did not start. Its errors ($RUN_DIR/envoy-$((i + 1)).log):"
    grep -o 'invalid emr-edge configuration.*' "$RUN_DIR/envoy-$((i + 1)).log" | sort -u | sed 's/^/  /' || true
    grep -E '\[(critical|error)\]' "$RUN_DIR/envoy-$((i + 1)).log" | tail -n 5 | sed 's/^/  /' || true
    exit 1
  fi
done

# Who leads: the replicas' own word (/emr/state, cluster.leader).
leader=""
for _ in $(seq 1 100); do
  leader="$(curl -s "http://127.0.0.1:${intake[0]}/emr/state" |
    python3 -c 'import json, sys
try:
    print(json.load(sys.stdin).get("cluster", {}).get("leader") or "")
except Exception:
    print("")')"
  [ -n "$leader" ] && break
  sleep 0.1
done

# One activation, its time fixed now, so that sending it twice is a replay.
opened="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
open_body='{"correlationId":"INC-DEMO-1","incidentType":"CARRIER_OUTAGE","targetQueueIds":["queue-12345"],"routingMode":"EMERGENCY_ACTIVE","timestamp":"'"$opened"'","ttl":3600}'
now='"$(date -u +%Y-%m-%dT%H:%M:%SZ)"'
cat <<MSG

emr-edge is running as a cluster of three replicas on etcd.
  replicas   replica-1 http://127.0.0.1:${intake[0]}   replica-2 http://127.0.0.1:${intake[1]}   replica-3 http://127.0.0.1:${intake[2]}
  admin      http://127.0.0.1:${admin[0]}  http://127.0.0.1:${admin[1]}  http://127.0.0.1:${admin[2]}  (stats: /stats?filter=emr)
  etcd       http://127.0.0.1:${etcd_client[0]}  http://127.0.0.1:${etcd_client[1]}  http://127.0.0.1:${etcd_client[2]}
  simulator  http://127.0.0.1:$SIM_PORT (the switch: /__sim/groups)
  logs       $RUN_DIR/*.log
  leader     ${leader:-not elected yet} (each replica's /emr/state says, under "cluster")

Open an incident at replica-1:

  curl -i http://127.0.0.1:${intake[0]}/webhooks/canonical -H 'content-type: application/json' -d '$open_body'

The same event at replica-2 is a replay (Idempotent-Replayed: true); replica-3 knows it too:

  curl -i http://127.0.0.1:${intake[1]}/webhooks/canonical -H 'content-type: application/json' -d '$open_body'
  curl -s http://127.0.0.1:${intake[2]}/emr/status/INC-DEMO-1; curl -s http://127.0.0.1:$SIM_PORT/__sim/groups

Resolve it at replica-3:

  curl -i http://127.0.0.1:${intake[2]}/webhooks/canonical -H 'content-type: application/json' -d '{"correlationId":"INC-DEMO-1","incidentType":"CARRIER_OUTAGE","routingMode":"EMERGENCY_RESOLVED","timestamp":"'$now'"}'

Who leads, and how far each replica has read the log:

  for p in ${intake[*]}; do curl -s http://127.0.0.1:\$p/emr/state | python3 -c 'import json,sys; print(json.load(sys.stdin)["cluster"])'; done

Kill the leader (its Envoy: ps -ef | grep envoy-${leader#replica-}.yaml) and run that again: another replica leads within seconds.

Ctrl-C stops everything.
MSG

wait -n "${pids[@]}" || true
echo "a process exited; see $RUN_DIR/*.log"
