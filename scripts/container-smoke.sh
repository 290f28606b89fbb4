#!/usr/bin/env bash
# container-smoke.sh - the container image and the compose stack, checked end to end on a Docker
# engine (npm run test:container; .ci/run runs it when an engine answers).
#
#   1. builds the image (Dockerfile, default target) and the demo image (--target demo)
#   2. checks the image: user node, tini as PID 1, HEALTHCHECK, nothing but package.json, dist and
#      production dependencies in /app, no secret in its environment; refuses to start without
#      API_KEYS; starts with environment variables only (SQLite on the /data volume; read-only root
#      file system, no capabilities), turns healthy, and exits 0 on SIGTERM
#   3. starts docker-compose.yml (PostgreSQL, two replicas, the demo tool server and fake model),
#      registers a tool through replica 1, runs a run through replica 1, reads it through replica 2
#   4. starts a slow run through replica 1, kills replica 1 (docker kill) while its tool call is in
#      flight, and sees replica 2 take the run over and finish it
#   5. tears everything down and removes what it built, also when a check fails or on Ctrl-C
#
# Each check prints a PASS or FAIL line; the last line says how it went. Host ports are free ones on
# 127.0.0.1, the compose project name is unique, and every wait has a deadline.
#
# Environment: DOCKER_HOST as usual. SMOKE_BUILD_NETWORK (default `host`): `docker build --network`,
# since some engines give builds no network otherwise (npm ci needs the registry).
# SMOKE_KEEP=1 leaves the stack and images in place for a look after a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

started_at=$(date +%s)
project="sbsmoke$(date +%s)$$"
image="switchboard-smoke:$project"
demo_image="switchboard-smoke-demo:$project"
single="${project}_single"
logs=$(mktemp -d "${TMPDIR:-/tmp}/switchboard-smoke.XXXXXX")
checks=0
dangling_before=""

say() { printf '%s\n' "$*"; }
pass() { checks=$((checks + 1)); say "PASS  $*"; }
fail() { say "FAIL  $*"; exit 1; }
elapsed() { echo $(($(date +%s) - $1)); }

# Runs "$@" once a second until it succeeds; fails the smoke with $1 after $2 seconds.
wait_until() {
  local what=$1 timeout=$2
  shift 2
  local deadline=$(($(date +%s) + timeout))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || fail "$what: not within ${timeout} s"
    sleep 1
  done
}

compose() { docker-compose --env-file .env.example -p "$project" -f docker-compose.yml "$@"; }

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [ "$status" -ne 0 ] && [ -n "${SMOKE_KEEP:-}" ]; then
    say "SMOKE_KEEP: left running; remove with: docker-compose -p $project down -v; docker rm -f -v $single; docker image rm $image $demo_image"
    say "container smoke: FAIL after $(elapsed "$started_at") s"
    exit "$status"
  fi
  if [ "$status" -ne 0 ]; then
    say "--- last log lines of the stack"
    compose logs --no-color --tail=30 2>/dev/null | tail -n 120 || true
    docker logs --tail 30 "$single" 2>/dev/null || true
  fi
  docker rm -f -v "$single" >/dev/null 2>&1 || true
  compose down -v --remove-orphans -t 10 >/dev/null 2>&1 || true
  docker image rm -f "$image" "$demo_image" >/dev/null 2>&1 || true
  # The legacy builder keeps each stage's last image (untagged): remove those this build made.
  local id
  for id in $(docker images -q --filter dangling=true 2>/dev/null); do
    case " $dangling_before " in *" $id "*) ;; *) docker image rm "$id" >/dev/null 2>&1 || true ;; esac
  done
  rm -rf "$logs"
  if [ "$status" -eq 0 ]; then
    say "container smoke: PASS ($checks checks, $(elapsed "$started_at") s)"
  else
    say "container smoke: FAIL after $checks passing checks, $(elapsed "$started_at") s"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- helpers talking HTTP and JSON with Node (the host needs no curl or jq) ----

# http METHOD URL [BODY]: prints "STATUS BODY" (STATUS 000 when nothing answered). Uses $auth.
http() {
  node -e '
    const [method, url, body, auth] = process.argv.slice(1)
    const headers = { authorization: `Bearer ${auth}` }
    if (body) headers["content-type"] = "application/json"
    fetch(url, { method, headers, body: body || undefined, signal: AbortSignal.timeout(60000) })
      .then(async (r) => process.stdout.write(`${r.status} ${await r.text()}`),
        (e) => process.stdout.write(`000 ${e.cause?.code ?? e.message}`))
  ' "$1" "$2" "${3:-}" "${auth:-}"
}
# json EXPR: reads "STATUS BODY" on stdin, prints EXPR evaluated with s (status) and j (body).
json() {
  node -e '
    let d = ""
    process.stdin.on("data", (c) => { d += c }).on("end", () => {
      const s = Number(d.slice(0, 3)); let j = null
      try { j = JSON.parse(d.slice(4)) } catch {}
      const v = new Function("s", "j", `return (${process.argv[1]})`)(s, j)
      process.stdout.write(typeof v === "string" ? v : JSON.stringify(v ?? null))
    })
  ' "$1"
}
free_port() {
  node -e 'const s = require("net").createServer(); s.listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close() })'
}
answers() { [ "$(http GET "$1" | cut -c1-3)" = "$2" ]; }
run_status() { http GET "$1/runs/$2" | json 'j?.status'; }

command -v docker >/dev/null || fail "docker: command not found"
command -v docker-compose >/dev/null || fail "docker-compose: command not found (Compose v1, as Debian's docker-compose package)"
docker info >/dev/null 2>&1 || fail "no Docker engine answers (DOCKER_HOST=${DOCKER_HOST:-unset})"
say "container smoke: project $project, engine $(docker version --format '{{.Server.Version}}' 2>/dev/null), $(docker-compose version --short)"
compose config -q || fail "docker-compose.yml does not validate"
pass "docker-compose.yml validates (docker-compose config)"

# ---- 1. build ----
dangling_before=$(docker images -q --filter dangling=true | tr '\n' ' ')
build_started=$(date +%s)
if ! docker build --force-rm --network "${SMOKE_BUILD_NETWORK:-host}" -t "$image" . >"$logs/build.log" 2>&1; then
  tail -n 40 "$logs/build.log"
  fail "docker build"
fi
docker build --force-rm --network "${SMOKE_BUILD_NETWORK:-host}" --target demo -t "$demo_image" . >"$logs/build-demo.log" 2>&1 ||
  { tail -n 40 "$logs/build-demo.log"; fail "docker build --target demo"; }
size_mb=$(( $(docker image inspect -f '{{.Size}}' "$image") / 1000000 ))
pass "image built in $(elapsed "$build_started") s: $image, $size_mb MB"

# ---- 2. the image alone ----
[ "$(docker image inspect -f '{{.Config.User}}' "$image")" = node ] || fail "the image should run as user node"
docker image inspect -f '{{json .Config.Healthcheck}}' "$image" | grep -q /healthz || fail "no HEALTHCHECK on /healthz"
docker image inspect -f '{{json .Config.Entrypoint}}' "$image" | grep -q tini || fail "the entrypoint should be tini"
baked=$(docker image inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$image" | grep -E '^(API_KEYS|ANTHROPIC_API_KEY|DATABASE_URL|METRICS_TOKEN|POSTGRES_PASSWORD)=' || true)
[ -z "$baked" ] || fail "secrets in the image's environment: $baked"
contents=$(docker run --rm --network none --entrypoint sh "$image" -c 'ls -A /app | tr "\n" " "; test -d node_modules/typescript && echo "+typescript"; test -d node_modules/vitest && echo "+vitest"; test -e dist/demo && echo "+dist/demo"; true')
[ "$contents" = "dist node_modules package.json " ] || fail "/app should hold dist, node_modules (production) and package.json only, found: $contents"
pass "image: user node, tini, HEALTHCHECK /healthz, /app = dist + production node_modules + package.json, no secret"

refused=$(docker run --rm --network none "$image" 2>&1 || true)
echo "$refused" | grep -q 'API_KEYS is empty but NODE_ENV=production' || fail "without API_KEYS the image should refuse to start, said: $refused"
pass "without API_KEYS the container refuses to start, saying why"

key=$(node -e 'console.log(require("crypto").randomBytes(24).toString("hex"))')
auth=$key
docker run -d --name "$single" --network none --read-only --cap-drop ALL --security-opt no-new-privileges \
  -e API_KEYS="smoke:$key" -e ANTHROPIC_API_KEY=unused "$image" >/dev/null
healthy() { [ "$(docker inspect -f '{{.State.Health.Status}}' "$single")" = healthy ]; }
wait_until "the container's HEALTHCHECK" 90 healthy
[ "$(docker exec "$single" cat /proc/1/comm)" = tini ] || fail "PID 1 should be tini"
[ "$(docker exec "$single" id -u)" = 1000 ] || fail "the process should run as uid 1000 (node)"
docker exec "$single" test -s /data/switchboard.db || fail "no SQLite database in the /data volume"
pass "environment variables only (read-only, no capabilities): healthy, tini as PID 1, uid 1000, SQLite in /data"
stop_started=$(date +%s)
docker stop -t 45 "$single" >/dev/null
code=$(docker inspect -f '{{.State.ExitCode}}' "$single")
[ "$code" = 0 ] || fail "SIGTERM should drain and exit 0, exit code $code"
pass "docker stop: SIGTERM drained, exit 0 in $(elapsed "$stop_started") s"
docker rm -v "$single" >/dev/null

# ---- 3. the compose stack ----
port1=$(free_port)
port2=$(free_port)
while [ "$port2" = "$port1" ]; do port2=$(free_port); done
export SWITCHBOARD_IMAGE=$image SWITCHBOARD_DEMO_IMAGE=$demo_image SWITCHBOARD_1_PORT=$port1 SWITCHBOARD_2_PORT=$port2
POSTGRES_PASSWORD=$(node -e 'console.log(require("crypto").randomBytes(16).toString("hex"))')
export API_KEYS="smoke:$key" POSTGRES_PASSWORD
# A dead replica's runs are taken over after RUN_LEASE_MS: short here, so step 4 is quick.
export RUN_LEASE_MS=3000 LOG_LEVEL=info
r1="http://127.0.0.1:$port1"
r2="http://127.0.0.1:$port2"
up_started=$(date +%s)
timeout 180 docker-compose --env-file .env.example -p "$project" -f docker-compose.yml up -d --no-build >"$logs/up.log" 2>&1 ||
  { cat "$logs/up.log"; fail "docker-compose up"; }
wait_until "replica 1 ready ($r1/readyz)" 120 answers "$r1/readyz" 200
wait_until "replica 2 ready ($r2/readyz)" 60 answers "$r2/readyz" 200
pass "compose stack up in $(elapsed "$up_started") s: PostgreSQL, replicas on 127.0.0.1:$port1 and :$port2, tools, model"

tool='{"description":"Current weather for a city","input_schema":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"],"additionalProperties":false},"url":"http://tools:4000/tools/get_weather","effect":"read_only","timeout_ms":5000}'
reply=$(http PUT "$r1/tools/get_weather" "$tool")
[ "$(echo "$reply" | json 's === 201 && j.signing_secret.startsWith("whsec_")')" = true ] || fail "PUT /tools/get_weather through replica 1: $reply"
pass "tool get_weather registered through replica 1 (201, signing secret)"

reply=$(http POST "$r1/runs" '{"input":"What is the weather in Paris?","tools":["get_weather"],"metadata":{"smoke":"sync"}}')
run=$(echo "$reply" | json 'j?.id')
[ "$(echo "$reply" | json 's === 200 && j.status === "completed" && j.output_text.includes("Paris: 14 °C")')" = true ] ||
  fail "run through replica 1: $reply"
pass "run $run through replica 1: completed, \"$(echo "$reply" | json 'j.output_text.split("\n")[1]')\""

reply=$(http GET "$r2/runs/$run")
[ "$(echo "$reply" | json 's === 200 && j.status === "completed" && j.output_text.includes("Paris: 14 °C") && j.tool_calls.total === 1')" = true ] ||
  fail "GET /runs/$run through replica 2: $reply"
reply=$(http GET "$r2/runs/$run/events?limit=100")
[ "$(echo "$reply" | json 'j.data.some((e) => e.type === "tool_call.completed" && !e.data.is_error)')" = true ] ||
  fail "events of $run through replica 2: $reply"
pass "run $run read through replica 2: the same run, its tool call in the events"

# get_forecast answers later (202, its result posted 3 s after): the tools service registered it
# itself under the first API key, and posts the result to http://switchboard:3000 (either replica).
forecast_registered() { [ "$(http GET "$r1/tools/get_forecast" | json 's')" = 200 ]; }
wait_until "get_forecast registered by the tools service" 90 forecast_registered
reply=$(http POST "$r1/runs" '{"input":"What is the forecast for Paris?","tools":["get_forecast"],"metadata":{"smoke":"later"}}')
[ "$(echo "$reply" | json 's === 200 && j.status === "running" && j.pending_tool_calls?.length === 1')" = true ] ||
  fail "forecast run through replica 1 (answered while it waits): $reply"
run=$(echo "$reply" | json 'j.id')
forecast_done() { [ "$(run_status "$r2" "$run")" = completed ]; }
wait_until "forecast run $run completed" 60 forecast_done
reply=$(http GET "$r2/runs/$run")
[ "$(echo "$reply" | json 'j.tool_calls.errors === 0 && j.output_text.includes("Paris")')" = true ] || fail "forecast run $run: $reply"
pass "run $run: get_forecast answered 202, posted its result later, and the run completed"

# ---- 4. replica 1 killed in the middle of a run ----
slow=${tool/get_weather\"/get_weather?delay_ms=8000\"}
slow=${slow/\"timeout_ms\":5000/\"timeout_ms\":30000}
reply=$(http PUT "$r1/tools/get_weather" "$slow")
[ "$(echo "$reply" | json 's')" = 200 ] || fail "PUT /tools/get_weather (replaced by a slow one) through replica 1: $reply"
reply=$(http POST "$r1/runs" '{"input":"What is the weather in Tokyo?","tools":["get_weather"],"background":true,"metadata":{"smoke":"takeover"}}')
[ "$(echo "$reply" | json 's')" = 202 ] || fail "background run through replica 1: $reply"
run=$(echo "$reply" | json 'j.id')
in_flight() { [ "$(http GET "$r2/runs/$run/events?limit=100" | json 'j.data.some((e) => e.type === "tool_call.started")')" = true ]; }
wait_until "tool call of $run in flight" 30 in_flight
replica1=$(compose ps -q switchboard-1)
docker kill "$replica1" >/dev/null
killed_at=$(date +%s)
pass "replica 1 killed (SIGKILL) while run $run waited on its 8 s tool call"
[ "$(docker inspect -f '{{.State.Running}}' "$replica1")" = false ] || fail "replica 1 still runs"
deadline=$(($(date +%s) + 90))
until [ "$(run_status "$r2" "$run")" = completed ]; do
  [ "$(date +%s)" -lt "$deadline" ] || fail "run $run not completed by replica 2 within 90 s: $(http GET "$r2/runs/$run")"
  sleep 1
done
reply=$(http GET "$r2/runs/$run")
[ "$(echo "$reply" | json 'j.output_text.includes("Tokyo: 19 °C")')" = true ] || fail "run $run after the takeover: $reply"
compose logs --no-color switchboard-2 2>/dev/null | grep 'run taken over' | grep -q "$run" ||
  fail "replica 2's log does not say it took over $run"
started=$(http GET "$r2/runs/$run/events?limit=100" | json 'j.data.filter((e) => e.type === "tool_call.started").length')
pass "replica 2 took run $run over and completed it $(elapsed "$killed_at") s after the kill (tool call started $started times: read_only, so called again)"
[ "$(docker inspect -f '{{.State.Running}}' "$(compose ps -q switchboard-2)")" = true ] || fail "replica 2 is not running"
answers "$r2/readyz" 200 || fail "replica 2 is not ready after the takeover"
pass "replica 2 still running and ready"
