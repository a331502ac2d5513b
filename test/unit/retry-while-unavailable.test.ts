/**
 * retryWhileUnavailable: a write that must land once Redis is back is run
 * again while (and only while) Redis cannot serve it.
 */
import { describe, expect, it } from "vitest";
import { retryWhileUnavailable } from "../../src/queue/storage-errors.js";

/** An op failing with `errors` in turn, then answering "done"; counts its calls. */
function failing(errors: Error[]) {
  const op = async () => {
    op.calls++;
    const err = errors.shift();
    if (err !== undefined) throw err;
    return "done";
  };
  op.calls = 0;
  return op;
}

describe("retryWhileUnavailable", () => {
  it("runs the op again while Redis is unavailable, and answers its result", async () => {
    const op = failing([
      new Error("Stream isn't writeable and enableOfflineQueue options is false"),
      new Error("Connection is closed."),
    ]);
    await expect(retryWhileUnavailable(op, { deadlineMs: 10_000 })).resolves.toBe("done");
    expect(op.calls).toBe(3);
  });

  it("throws any other error at once", async () => {
    const refused = new Error("ERR wrong number of arguments");
    const op = failing([refused]);
    await expect(retryWhileUnavailable(op, { deadlineMs: 10_000 })).rejects.toBe(refused);
    expect(op.calls).toBe(1);
  });

  it("gives up with the last error once its deadline has passed", async () => {
    const errors = Array.from({ length: 50 }, (_, i) => new Error(`Connection is closed (${i})`));
    const op = failing([...errors]);
    const started = Date.now();
    const err = await retryWhileUnavailable(op, { deadlineMs: 250 }).catch((e: unknown) => e);
    expect(err).toBe(errors[op.calls - 1]);
    expect(op.calls).toBeGreaterThanOrEqual(2);
    expect(op.calls).toBeLessThan(50);
    expect(Date.now() - started).toBeLessThan(5_000);
  });

  it("gives up once stopped", async () => {
    const unavailable = new Error("connect ECONNREFUSED 127.0.0.1:1");
    const op = failing([unavailable, new Error("Connection is closed.")]);
    let stopped = false;
    const result = retryWhileUnavailable(
      async () => {
        stopped = true;
        return op();
      },
      { deadlineMs: 10_000, stopped: () => stopped },
    );
    await expect(result).rejects.toBe(unavailable);
    expect(op.calls).toBe(1);
  });
});
