/**
 * The load process: runs each LoadTask its parent sends over IPC and answers
 * with the result (or the error's message). Callers in a process of their
 * own, so the service's event loop only serves, as with remote callers.
 */
import { type LoadTask, runLoad } from "./load.js";

/** A reply to one task. */
export type LoadReply = { ok: true; result: unknown } | { ok: false; error: string };

const send = process.send?.bind(process);
if (send === undefined) throw new Error("load-process.ts runs as a child with an IPC channel");
process.on("message", (task: LoadTask) => {
  runLoad(task).then(
    (result) => send({ ok: true, result } satisfies LoadReply),
    (err: unknown) =>
      send({
        ok: false,
        error: err instanceof Error ? err.message : String(err),
      } satisfies LoadReply),
  );
});
// The parent going away ends the IPC channel: end with it.
process.on("disconnect", () => process.exit(0));
