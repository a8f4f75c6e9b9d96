#!/usr/bin/env bash
# `make run`: the simulator and Envoy with emr-edge, in the foreground, on
# loopback. Ctrl-C stops both. Envoy must keep a live parent (it was seen to
# get SIGTERM when the shell that started it exits), so this script waits.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${LISTEN_PORT:=10000}" "${ADMIN_PORT:=9901}" "${SIM_PORT:=9902}"
: "${ENVOY:=.venv/bin/envoy-real}" "${WASM:=target/wasm32-wasip1/release/emr_edge.wasm}" "${SIM:=target/release/emr-sim}"
: "${RUN_DIR:=target/run}"
mkdir -p "$RUN_DIR"

# Local demo credentials: the simulator's seeded client, and a fake
# PagerDuty signing secret (the route checks X-PagerDuty-Signature against
# it, see docs/sources.md). A variable you set yourself is used instead, and
# each line below says which one was used.
demo_or_yours() { # variable, demo value, what the demo value is
  if [ -n "${!1:-}" ]; then
    echo "$1 is set: using yours"
  else
    export "$1=$2"
    echo "$1 is not set: using $3"
  fi
}
demo_or_yours EMR_GENESYS_CLIENT_ID emr-edge-client "the simulator's demo client id"
demo_or_yours EMR_GENESYS_CLIENT_SECRET emr-edge-secret "the simulator's demo client secret"
demo_or_yours EMR_PAGERDUTY_SECRET emr-demo-pagerduty-secret "a demo PagerDuty signing secret"
if [ "$EMR_GENESYS_CLIENT_ID" != emr-edge-client ] || [ "$EMR_GENESYS_CLIENT_SECRET" != emr-edge-secret ]; then
  echo "  note: the simulator knows only its demo client; unset EMR_GENESYS_CLIENT_ID and"
  echo "  EMR_GENESYS_CLIENT_SECRET, or its token endpoint refuses yours and no group switches"
fi
export EMR_GENESYS_CLIENT_ID EMR_GENESYS_CLIENT_SECRET EMR_PAGERDUTY_SECRET

# HMAC-SHA256 of stdin with key $1, in hex: what PagerDuty puts after `v1=`.
hmac_hex() {
  if command -v openssl >/dev/null 2>&1; then
    openssl dgst -sha256 -hmac "$1" | awk '{print $NF}'
  else
    python3 -c 'import hashlib, hmac, sys; print(hmac.new(sys.argv[1].encode(), sys.stdin.buffer.read(), hashlib.sha256).hexdigest())' "$1"
  fi
}

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

# Why Envoy did not start, most useful first: emr-edge's own refusal of its
# configuration (one line per problem, each naming its field), else Envoy's
# own errors; the whole log stays in the file.
why_not_started() {
  local refused
  refused="$(grep -o 'invalid emr-edge configuration.*' "$RUN_DIR/envoy.log" | awk '!seen[$0]++' || true)"
  echo
  if [ -n "$refused" ]; then
    echo "Envoy did not start: emr-edge refused its configuration (envoy/local.config.json,"
    echo "and the EMR_* variables it names):"
    echo
    echo "$refused" | sed 's/^/  /'
  else
    echo "Envoy did not start. Its errors:"
    echo
    grep -E '\[(critical|error)\]' "$RUN_DIR/envoy.log" | tail -n 10 | sed 's/^/  /' || true
  fi
  echo
  echo "The whole log: $RUN_DIR/envoy.log"
}

ready=
for _ in $(seq 1 100); do
  if [ "$(curl -s "http://127.0.0.1:$ADMIN_PORT/ready" 2>/dev/null)" = "LIVE" ]; then ready=1; break; fi
  if ! kill -0 "${pids[1]}" 2>/dev/null; then
    why_not_started; exit 1
  fi
  if ! kill -0 "${pids[0]}" 2>/dev/null; then
    echo "The simulator exited; its log ($RUN_DIR/sim.log):"; tail -n 10 "$RUN_DIR/sim.log"; exit 1
  fi
  sleep 0.1
done
if [ -z "$ready" ]; then
  echo "Envoy did not become ready within 10 s (admin: http://127.0.0.1:$ADMIN_PORT/ready)."
  why_not_started; exit 1
fi

url="http://127.0.0.1:$LISTEN_PORT"
sim="http://127.0.0.1:$SIM_PORT"
# The demo's emergency group: the one the local config drives.
group="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["genesys"]["default_group"])' envoy/local.config.json)"

# A PagerDuty v3 webhook, signed now, exactly as PagerDuty would send it.
# The signature covers these exact bytes: paste the command as printed.
pd_event() { # event_type, event id, time
  printf '{"event":{"id":"%s","event_type":"%s","resource_type":"incident","occurred_at":"%s","data":{"id":"PDEMO01","type":"incident","title":"SIP trunk carrier-a: call setup failures","service":{"id":"PIJ90N7","summary":"Voice Platform - SIP Trunks","type":"service_reference"},"urgency":"high","priority":{"id":"PSO75BM","summary":"P1","type":"priority_reference"}}}}' "$2" "$1" "$3"
}
pd_curl() { # event_type, event id, time
  local body sig
  body="$(pd_event "$1" "$2" "$3")"
  sig="v1=$(printf '%s' "$body" | hmac_hex "$EMR_PAGERDUTY_SECRET")"
  printf "curl -i %s/webhooks/pagerduty -H 'content-type: application/json' -H 'x-webhook-id: %s' -H 'x-pagerduty-signature: %s' --data-binary '%s'" \
    "$url" "$2" "$sig" "$body"
}
utc_at() { # epoch seconds → RFC 3339 (GNU date, else BSD date)
  date -u -d "@$1" +%Y-%m-%dT%H:%M:%SZ 2>/dev/null || date -u -r "$1" +%Y-%m-%dT%H:%M:%SZ
}
started="$(date -u +%s)"
pd_open="$(pd_curl incident.triggered "demo-$started-1" "$(utc_at "$started")")"
pd_resolve="$(pd_curl incident.resolved "demo-$started-2" "$(utc_at "$((started + 1))")")"

cat <<MSG

emr-edge is running.
  intake     $url/webhooks/canonical   $url/webhooks/pagerduty
  status     $url/emr/status/{correlationId}[?source=canonical|pagerduty]     state: $url/emr/state     health: $url/emr/health
  Envoy      http://127.0.0.1:$ADMIN_PORT (stats: /stats?filter=emr)
  simulator  $sim (the switch: /__sim/groups, the calls emr-edge made: /__sim/requests)
  logs       $RUN_DIR/envoy.log  $RUN_DIR/sim.log

The emergency groups in the simulated Genesys, "enabled" is the switch:

  curl -s $sim/__sim/groups

Open an incident:

  curl -i $url/webhooks/canonical -H 'content-type: application/json' -d '{"correlationId":"INC-DEMO-1","incidentType":"CARRIER_OUTAGE","targetQueueIds":["queue-12345","queue-67890"],"routingMode":"EMERGENCY_ACTIVE","timestamp":"'"\$(date -u +%Y-%m-%dT%H:%M:%SZ)"'","ttl":3600}'

See it (the group is now enabled):

  curl -s $url/emr/status/INC-DEMO-1; curl -s $url/emr/state; curl -s $sim/__sim/groups

Resolve it:

  curl -i $url/webhooks/canonical -H 'content-type: application/json' -d '{"correlationId":"INC-DEMO-1","incidentType":"CARRIER_OUTAGE","routingMode":"EMERGENCY_RESOLVED","timestamp":"'"\$(date -u +%Y-%m-%dT%H:%M:%SZ)"'"}'

PagerDuty (signed with \$EMR_PAGERDUTY_SECRET; pasting one twice shows a replay):

  $pd_open

  curl -s $url/emr/status/PDEMO01

  $pd_resolve

A wrong or missing signature is refused with 401 (docs/sources.md has every tool's settings).

Switched a group by hand in the simulator? Hand it back to the incidents (JSON, or it is refused):

  curl -i -X POST $url/emr/groups/$group/resume -H 'content-type: application/json'

Ctrl-C stops everything.
MSG

# Stay in the foreground until Ctrl-C or either process exits.
wait -n "${pids[@]}" || true
echo "a process exited; see $RUN_DIR/*.log"
