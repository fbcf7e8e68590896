# syntax=docker/dockerfile:1
# Tether container image. How to run it: README.md, section "Docker".
#
#   docker build -t tether .
#   docker run --rm -v "$PWD/proxy.yaml:/etc/tether/proxy.yaml:ro" tether check /etc/tether/proxy.yaml
#   docker run --rm -p 8080:8080 -v "$PWD/proxy.yaml:/etc/tether/proxy.yaml:ro" tether
#
# The default /etc/tether/proxy.yaml is config/proxy.yaml (the demo's: upstreams on
# 127.0.0.1:9001-9003), so mount or bake in a real one; config/examples/kubernetes.yaml
# is a starting point for a cluster, and deploy/kubernetes/ has the manifests (the config
# comes from a ConfigMap mounted at /etc/tether).
#
# The build runs the same commands as CI (`npm ci`, `npm run build`); the runtime stage
# installs production dependencies only (`npm ci --omit=dev`).

# ---- build: compile TypeScript to dist/ -------------------------------------------
FROM node:24-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci
COPY tsconfig.json ./
COPY src ./src
RUN npm run build

# ---- runtime: production dependencies and dist/ only --------------------------------
FROM node:24-bookworm-slim AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev && npm cache clean --force
COPY --from=build /app/dist ./dist
COPY config ./config
COPY config/proxy.yaml /etc/tether/proxy.yaml
# config/proxy.yaml listens on ${TETHER_HOST:-127.0.0.1}; in a container it must take
# connections from outside.
ENV TETHER_HOST=0.0.0.0
# glibc's malloc in one arena: the threads' freed memory is reused by the main thread instead of
# staying in arenas of their own (two workers holding 1M users: 10-18 MB less in all;
# SERVING_ENV in src/workers/worker-flags.ts, docs/workers.md, Memory). A primary passes it to
# its workers also outside the image. Set it in the container's environment to override.
ENV MALLOC_ARENA_MAX=1
# Files stay owned by root (read-only for the process); run as the image's non-root user.
USER node
# 8080: proxy traffic. 9901: admin listener (binds 127.0.0.1 unless the config says
# otherwise; config/examples/kubernetes.yaml and deploy/kubernetes/ open it on 0.0.0.0
# for kubelet probes; never publish it to the outside world).
EXPOSE 8080 9901
# Container health for `docker run` / Compose / Swarm: GET /healthz on the admin listener,
# with node itself (the slim image has no curl or wget). The port here MUST match
# admin.listen.port of the config in use (9901 is the default and what the shipped configs
# use); 127.0.0.1 reaches it whether admin.listen.host is 127.0.0.1 or 0.0.0.0. Kubernetes
# ignores HEALTHCHECK: the manifests in deploy/kubernetes/ probe /healthz and /readyz instead.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:9901/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# Node runs as PID 1, which gets no default signal handlers: the CLI handles SIGTERM
# itself, from the first statement of dist/cli.js (a SIGTERM before, during node's own start,
# is ignored and lost; or run the container with --init). --min-semi-space-size=4: V8's young generation
# does not shrink below 4 MB while idle, so the first seconds of load after a quiet period do
# not pay for it in full GCs (SERVING_V8_FLAGS in src/workers/worker-flags.ts says why).
ENTRYPOINT ["node", "--min-semi-space-size=4", "dist/cli.js"]
CMD ["--config", "/etc/tether/proxy.yaml"]
