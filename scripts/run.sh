#!/usr/bin/env bash
# `make run`: the simulator and Envoy with emr-edge, in the foreground, on
# loopback. Ctrl-C stops both. Envoy must keep a live parent (it was seen to
# get SIGTERM when the shell that started it exits), so this script waits.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${LISTEN_PORT:=10000}" "${ADMIN_PORT:=9901}" "${SIM_PORT:=9902}"
: "${ENVOY:=.venv/bin/envoy-real}" "${WASM:=target/wasm32-wasip1/release/emr_edge.wasm}" "${SIM:=target/release/emr-sim}"
RUN_DIR=target/run
mkdir -p "$RUN_DIR"

# Local demo credentials: the simulator's seeded client. Real deployments
# pass their own through the environment (see README, "Production").
export EMR_GENESYS_CLIENT_ID="${EMR_GENESYS_CLIENT_ID:-emr-edge-client}"
export EMR_GENESYS_CLIENT_SECRET="${EMR_GENESYS_CLIENT_SECRET:-emr-edge-secret}"

pids=()
stop() {
  trap - INT TERM EXIT
  echo
  echo "stopping..."
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop INT TERM EXIT

"$SIM" --listen "127.0.0.1:$SIM_PORT" > "$RUN_DIR/sim.log" 2>&1 &
pids+=($!)

python3 scripts/render.py envoy/local.yaml.tmpl envoy/local.config.json \
  "WASM=$(realpath "$WASM")" "LISTEN_PORT=$LISTEN_PORT" "ADMIN_PORT=$ADMIN_PORT" "SIM_PORT=$SIM_PORT" \
  > "$RUN_DIR/envoy.yaml"
"$ENVOY" -c "$RUN_DIR/envoy.yaml" --concurrency 2 --use-dynamic-base-id --log-level info \
  > "$RUN_DIR/envoy.log" 2>&1 &
pids+=($!)

for _ in $(seq 1 100); do
  if [ "$(curl -s "http://127.0.0.1:$ADMIN_PORT/ready" 2>/dev/null)" = "LIVE" ]; then break; fi
  if ! kill -0 "${pids[1]}" 2>/dev/null; then
    echo "Envoy exited; its log:"; tail -n 30 "$RUN_DIR/envoy.log"; exit 1
  fi
  sleep 0.1
done

url="http://127.0.0.1:$LISTEN_PORT"
cat <<MSG

emr-edge is running.
  intake     $url/webhooks/canonical
  status     $url/emr/status/{correlationId}     state: $url/emr/state
  Envoy      http://127.0.0.1:$ADMIN_PORT (stats: /stats?filter=emr)
  simulator  http://127.0.0.1:$SIM_PORT (groups: /api/v2/architect/emergencygroups, log: /__sim/requests)
  logs       $RUN_DIR/envoy.log  $RUN_DIR/sim.log

Open an incident:

  curl -i $url/webhooks/canonical -H 'content-type: application/json' -d '{"correlationId":"INC-DEMO-1","incidentType":"CARRIER_OUTAGE","targetQueueIds":["queue-12345","queue-67890"],"routingMode":"EMERGENCY_ACTIVE","timestamp":"'"\$(date -u +%Y-%m-%dT%H:%M:%SZ)"'","ttl":3600}'

See it:

  curl -s $url/emr/status/INC-DEMO-1; curl -s $url/emr/state

Resolve it:

  curl -i $url/webhooks/canonical -H 'content-type: application/json' -d '{"correlationId":"INC-DEMO-1","incidentType":"CARRIER_OUTAGE","routingMode":"EMERGENCY_RESOLVED","timestamp":"'"\$(date -u +%Y-%m-%dT%H:%M:%SZ)"'"}'

Ctrl-C stops everything.
MSG

# Stay in the foreground until Ctrl-C or either process exits.
wait -n "${pids[@]}" || true
echo "a process exited; see $RUN_DIR/*.log"
