#!/usr/bin/env bash
# pg-test-cluster.sh - a throwaway PostgreSQL cluster on 127.0.0.1 for the test suite.
#
#   scripts/pg-test-cluster.sh start   initdb in a new temporary folder, start the server on a free
#                                      loopback port; prints `export TEST_DATABASE_URL=...`
#   scripts/pg-test-cluster.sh stop    stop that server and delete its folder
#   scripts/pg-test-cluster.sh run CMD start a cluster of its own, run CMD with TEST_DATABASE_URL set,
#                                      stop it (always); exits with CMD's status. Several `run`s at
#                                      once each get their own cluster.
#
# Uses the PostgreSQL server binaries on this machine (Debian's postgresql package). initdb refuses
# to run as root, so as root the server runs as the `postgres` user. Nothing outside the temporary
# folder is touched; the cluster trusts local connections, listens on 127.0.0.1 only, and runs with
# fsync off: it exists for tests, never for data.
set -euo pipefail

state_file="${PG_TEST_CLUSTER_STATE:-${TMPDIR:-/tmp}/switchboard-pg-test-cluster.state}"

find_bindir() {
  if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then
    pg_config --bindir; return
  fi
  local dir
  for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$dir/initdb" ]; then echo "$dir"; return; fi
  done
  echo "pg-test-cluster: no PostgreSQL server binaries (initdb) found; install them (apt-get install postgresql)" >&2
  exit 1
}

as_owner() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
  node -e "const s=require('net').createServer();s.listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})"
}

start() {
  if [ -f "$state_file" ]; then
    echo "pg-test-cluster: already started ($state_file); run stop first" >&2
    exit 1
  fi
  local bindir dir port
  bindir=$(find_bindir)
  dir=$(mktemp -d "${TMPDIR:-/tmp}/switchboard-pg.XXXXXX")
  chmod 755 "$dir"
  if [ "$(id -u)" -eq 0 ]; then chown postgres "$dir"; fi
  port=$(free_port)
  as_owner "$bindir/initdb" -D "$dir/data" -U postgres --auth=trust --encoding=UTF8 --no-locale >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; exit 1; }
  as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300" \
    start >/dev/null || { cat "$dir/server.log" >&2; exit 1; }
  printf '%s\n%s\n%s\n' "$bindir" "$dir" "$port" >"$state_file"
  echo "export TEST_DATABASE_URL=postgres://postgres@127.0.0.1:$port/postgres"
}

stop() {
  [ -f "$state_file" ] || return 0
  local bindir dir
  bindir=$(sed -n 1p "$state_file")
  dir=$(sed -n 2p "$state_file")
  as_owner "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$dir" "$state_file"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  run)
    shift
    [ $# -gt 0 ] || { echo "usage: $0 run COMMAND..." >&2; exit 2; }
    # Its own state file: another run (or a started cluster) is never touched.
    state_file=$(mktemp "${TMPDIR:-/tmp}/switchboard-pg-test-cluster.XXXXXX")
    rm -f "$state_file"
    trap stop EXIT
    cluster=$(start) || { echo "pg-test-cluster: could not start a cluster" >&2; exit 1; }
    eval "$cluster"
    export TEST_DATABASE_URL
    status=0
    "$@" || status=$?
    exit "$status"
    ;;
  *) sed -n '2,13p' "$0"; exit 2 ;;
esac
