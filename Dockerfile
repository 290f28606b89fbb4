# Switchboard's container image.
#
#   docker build -t switchboard .                      the service (the default target, `runtime`)
#   docker build --target demo -t switchboard-demo .   + the demo's tool server and fake Messages API
#
# Stages: `base` (Node and tini), `build` (toolchain, every dependency, TypeScript compiled, then the
# dev dependencies pruned), `app` (production dependencies and the compiled service only, as user
# node), `demo` (app plus the compiled demo, for docker-compose.yml), and `runtime`, the default.
# No secret is baked in: API keys, the Anthropic key and DATABASE_URL come from the environment
# when the container starts (see README, "Running in containers").

FROM node:24-bookworm-slim AS base
# tini as PID 1: it forwards SIGTERM to node, so `docker stop` drains (SPEC §7), and reaps zombies.
RUN apt-get update \
  && apt-get install -y --no-install-recommends tini \
  && rm -rf /var/lib/apt/lists/*
WORKDIR /app

FROM base AS build
# better-sqlite3 is compiled from source when no prebuilt binary can be fetched, against the
# headers of the image's own Node (/usr/local/include/node) rather than a download from nodejs.org.
# The base must not be Node 24.19, 24.20 or 24.21: their headers give node::ObjectWrap (the class
# better-sqlite3 12 builds its statements and databases on) an environment cleanup hook, and their
# Node aborts the process (`Assertion failed: (env) != nullptr`) when the garbage collector frees
# such an object while no JavaScript context is entered: in ordinary code, a collection that
# compiled code or one of V8's own tasks starts (nodejs/node#65446). Node 24.22.0 and later keep the
# hook but remove it without that check; 24.18 and earlier have no hook. So no patched headers: the
# check below stops a build on a stale copy of the tag rather than make an image that aborts.
RUN node -e 'const [major, minor] = process.versions.node.split(".").map(Number); if (major === 24 && minor >= 19 && minor <= 21) { console.error(`Node ${process.version}: better-sqlite3 12 aborts on Node 24.19 to 24.21; pull node:24-bookworm-slim again (24.22 or later)`); process.exit(1) }' \
  && apt-get update \
  && apt-get install -y --no-install-recommends python3 make g++ \
  && rm -rf /var/lib/apt/lists/*
ENV npm_config_nodedir=/usr/local
# The TypeScript client (clients/typescript) is an npm workspace of the root: npm ci needs its
# package.json; the demo's tool server is written with its tool kit, compiled with the demo.
COPY package.json package-lock.json ./
COPY clients/typescript/package.json ./clients/typescript/
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json app.ts server.ts ./
COPY src ./src
COPY plugins ./plugins
COPY routes ./routes
COPY demo ./demo
COPY clients/typescript/src ./clients/typescript/src
COPY test/support/fake-messages-api.ts ./test/support/
# The compiled demo (and the fake Messages API and the client's tool kit it uses) goes aside, to
# the demo target only, and the workspace's link in node_modules with it; so does the MCP server
# SDK of the example MCP server (a development dependency of the service). Of better-sqlite3 only
# the addon itself is kept: its sources and the compiler's objects weigh 25 MB.
RUN npm run build \
  && mkdir -p /demo/dist \
  && mv dist/demo dist/test dist/clients /demo/dist/ \
  && mkdir -p /demo/node_modules/@modelcontextprotocol /demo/node_modules/@hono \
  && cp -r node_modules/@modelcontextprotocol/server node_modules/@modelcontextprotocol/node /demo/node_modules/@modelcontextprotocol/ \
  && cp -r node_modules/hono /demo/node_modules/ \
  && cp -r node_modules/@hono/node-server /demo/node_modules/@hono/ \
  && npm prune --omit=dev --no-audit --no-fund \
  && rm -rf node_modules/@switchboard \
  && cd node_modules/better-sqlite3 \
  && mv build/Release/better_sqlite3.node /tmp/ \
  && rm -rf build deps src \
  && mkdir -p build/Release \
  && mv /tmp/better_sqlite3.node build/Release/

FROM base AS app
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=3000 \
    DATA_DIR=/data
# The embedded SQLite database lives here when DATABASE_URL is unset: mount a volume to keep it.
RUN mkdir -p /data && chown node:node /data
VOLUME ["/data"]
# The code and its dependencies belong to root: the service (user node) can read them, not change them.
COPY package.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
USER node
EXPOSE 3000
# /healthz answers while the process lives (it needs no API key). Node's own fetch: the image has no curl.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch(`http://127.0.0.1:${process.env.PORT || 3000}/healthz`, { signal: AbortSignal.timeout(4000) }).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--"]
# The node settings of `npm start` (README, "Memory and CPU"): a 64 MB young generation, for less
# time in garbage collection under load.
CMD ["node", "--max-semi-space-size=64", "dist/server.js"]

# The demo services of docker-compose.yml: `node dist/demo/tool-server.js` (the example tools) and
# `node dist/demo/model-server.js` (the offline fake of the Messages API) and
# `node dist/demo/mcp-server.js` (the example MCP server). Not for production.
FROM app AS demo
COPY --from=build /demo/dist ./dist
COPY --from=build /demo/node_modules ./node_modules
HEALTHCHECK NONE
CMD ["node", "dist/demo/tool-server.js"]

FROM app AS runtime
