# report-jobs: one image for every mode. `docker run IMAGE api`, `... worker`
# or `... all` (the default). Runs the TypeScript sources with tsx, exactly as
# `npm start` does; only the browser app is built (first stage).
# The browser app (web/) is bundled by esbuild, a devDependency, in a stage of
# its own; only its output (web/dist) goes into the image.
FROM node:20-bookworm-slim AS web
WORKDIR /build
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY gen ./gen
COPY web ./web
COPY scripts/build-web.mjs ./scripts/build-web.mjs
RUN node scripts/build-web.mjs

FROM node:20-bookworm-slim

ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=8080 \
    ARTIFACT_DIR=/data/artifacts

WORKDIR /app

# Dependencies first, so a source change does not reinstall them. Runtime
# dependencies only: tsx (and its esbuild) is one of them.
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund \
 && npm cache clean --force

COPY tsconfig.json ./
COPY gen ./gen
COPY src ./src
COPY --from=web /build/web/dist ./web/dist

# The artifact folder is shared by api (serves downloads) and worker (writes
# reports); a volume mounted here inherits this ownership when first created.
RUN mkdir -p /data/artifacts && chown -R node:node /data

# The official image's unprivileged user (uid 1000).
USER node

EXPOSE 8080

# Liveness of the API (api and all modes). A worker-only container has no
# HTTP port: docker-compose.yml disables this check for it.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD ["node", "-e", "fetch(`http://127.0.0.1:${process.env.PORT || 8080}/healthz`).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]

# tsx forwards SIGTERM to the service, which drains and exits 0.
STOPSIGNAL SIGTERM
# The telemetry preload starts OpenTelemetry before the app is imported.
ENTRYPOINT ["node_modules/.bin/tsx", "--import", "./src/telemetry/preload.ts", "src/main.ts"]
CMD ["all"]
