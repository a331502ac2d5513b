/**
 * The baseline's entry: `tsx bench/baselines/express-bullmq/main.ts api|worker`.
 * Reads its settings from the environment (see config.ts), runs until
 * SIGTERM or SIGINT, then closes and exits 0.
 */
import { createBaselineApi } from "./api.js";
import { readBaselineConfig } from "./config.js";
import { createBaselineWorker } from "./worker.js";

const role = process.argv[2];
if (role !== "api" && role !== "worker") {
  process.stderr.write("usage: main.ts api|worker\n");
  process.exit(2);
}
const config = readBaselineConfig(process.env);
const part =
  role === "api"
    ? (() => {
        const api = createBaselineApi(config);
        return {
          start: () =>
            api
              .listen()
              .then((port) =>
                process.stdout.write(`baseline api listening on http://${config.host}:${port}\n`),
              ),
          close: () => api.close(),
        };
      })()
    : (() => {
        const worker = createBaselineWorker(config);
        return {
          start: () => worker.ready().then(() => process.stdout.write("baseline worker started\n")),
          close: () => worker.close(),
        };
      })();

let stopping = false;
const stop = () => {
  if (stopping) process.exit(1);
  stopping = true;
  part.close().then(
    () => process.exit(0),
    () => process.exit(1),
  );
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
part.start().catch((err: unknown) => {
  process.stderr.write(`baseline ${role}: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
