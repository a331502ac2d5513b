/**
 * Which context manager startTelemetry installs: AsyncLocalStorage (contexts
 * follow awaits), except in a worker that records no span, where a
 * synchronous one spares every promise Node 20's async hooks. Each case runs
 * in a process of its own (the SDK's globals are set once per process).
 */
import { spawnSync } from "node:child_process";
import { describe, expect, it } from "vitest";

/** Starts telemetry in a new process with `env` and `mode`; reports whether a context follows an await. */
function followsAwaits(mode: string, env: Record<string, string>): boolean {
  const script = `
    const { loadTelemetrySettings } = await import("./src/config/config.ts");
    const { startTelemetry } = await import("./src/telemetry/telemetry.ts");
    const { context, createContextKey } = await import("@opentelemetry/api");
    const t = startTelemetry({ settings: loadTelemetrySettings(${JSON.stringify(env)}, ${JSON.stringify(mode)}) });
    const key = createContextKey("probe");
    const seen = await context.with(context.active().setValue(key, 1), async () => {
      await null;
      return context.active().getValue(key);
    });
    await t.shutdown();
    console.log(JSON.stringify({ follows: seen === 1 }));
  `;
  const r = spawnSync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], {
    encoding: "utf8",
    // The SDK reads some variables itself (OTEL_NODE_EXPERIMENTAL_SDK_METRICS).
    env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "", ...env },
    timeout: 60_000,
  });
  expect(r.status, r.stderr).toBe(0);
  const last = r.stdout.trim().split("\n").at(-1) ?? "";
  return (JSON.parse(last) as { follows: boolean }).follows;
}

describe("startTelemetry()'s context manager", () => {
  it("does not follow awaits in a worker that records no span", () => {
    expect(followsAwaits("worker", {})).toBe(false);
  });

  it("follows awaits in the API, in mode all, and in a worker that exports spans", () => {
    expect(followsAwaits("api", {})).toBe(true);
    expect(followsAwaits("all", {})).toBe(true);
    expect(followsAwaits("worker", { OTEL_TRACES_EXPORTER: "console" })).toBe(true);
    expect(followsAwaits("worker", { OTEL_NODE_EXPERIMENTAL_SDK_METRICS: "true" })).toBe(true);
  });
});
