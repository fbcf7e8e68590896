# syntax=docker/dockerfile:1
# Tether container image.
#
#   docker build -t tether .
#   docker run --rm -p 8080:8080 -v "$PWD/my-proxy.yaml:/etc/tether/proxy.yaml:ro" tether
#
# The default /etc/tether/proxy.yaml is config/proxy.yaml (the demo's: upstreams on
# 127.0.0.1:9001-9003), so mount or bake in a real one; config/examples/kubernetes.yaml
# is a starting point for a cluster.

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
# Files stay owned by root (read-only for the process); run as the image's non-root user.
USER node
# 8080: proxy traffic. 9901: admin listener (binds 127.0.0.1 unless the config says
# otherwise; config/examples/kubernetes.yaml opens it for probes and metrics).
EXPOSE 8080 9901
# No HEALTHCHECK yet: the admin health endpoints arrive in a later issue. Then:
#   HEALTHCHECK CMD node -e "fetch('http://127.0.0.1:9901/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
# Node runs as PID 1, which gets no default signal handlers: the CLI handles SIGTERM
# itself (or run the container with --init).
ENTRYPOINT ["node", "dist/cli.js"]
CMD ["--config", "/etc/tether/proxy.yaml"]
