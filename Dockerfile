# report-jobs: one image for every mode. `docker run IMAGE api`, `... worker`
# or `... all` (the default). Runs the TypeScript sources with tsx, exactly as
# `npm start` does, so there is no separate build step to drift.
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
