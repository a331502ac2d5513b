/**
 * Loaded with `--import` before the app (`tsx --import ./src/telemetry/preload.ts
 * src/main.ts all`): hooks ESM imports so the HTTP and ioredis
 * instrumentations can patch modules imported later, then starts the SDK
 * with the mode's service name. main.ts flushes it on shutdown.
 */
import { register } from "node:module";
import { loadTelemetrySettings } from "../config/config.js";
import { startTelemetry } from "./telemetry.js";

const settings = loadTelemetrySettings(process.env, process.argv[2]);
if (!settings.disabled) {
  // import-in-the-middle rewrites only the modules named here, so the rest of
  // the app loads untouched.
  register("@opentelemetry/instrumentation/hook.mjs", import.meta.url, {
    // ioredis is instrumented only when spans are exported (telemetry.ts).
    data: { include: settings.exportTraces ? ["http", "https", "ioredis"] : ["http", "https"] },
  });
}
startTelemetry({ settings });
