import { getEventListeners } from "node:events";
import { isMessage } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { createContextValues, type HandlerContext } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import {
  GetJobRequestSchema,
  GetJobResponseSchema,
  ReportService,
  type WatchJobRequest,
  WatchJobResponseSchema,
} from "../../gen/reports/v1/report_service_pb.js";
import { kTenant } from "../../src/api/context-keys.js";
import { type BridgedCall, createRpcBridge } from "../../src/api/rpc-bridge.js";

const call = (signal?: AbortSignal): BridgedCall => ({
  requestMethod: "GET",
  url: "/v1/jobs/j1",
  requestHeader: new Headers({ "idempotency-key": "k1" }),
  values: createContextValues().set(kTenant, "acme"),
  signal,
});

describe("createRpcBridge()", () => {
  it("calls a unary handler with a real context and returns a message of the output schema", async () => {
    const shutdown = new AbortController();
    const bridge = createRpcBridge({ shutdownSignal: shutdown.signal });
    let seen: HandlerContext | undefined;
    const getJob = bridge.unary(ReportService.method.getJob, (req, ctx) => {
      seen = ctx;
      expect(isMessage(req, GetJobRequestSchema)).toBe(true);
      // A plain init object, as handlers may return.
      return { job: { id: req.jobId, userId: "u1" } };
    });
    const out = await getJob({ jobId: "j1" }, call());
    expect(isMessage(out, GetJobResponseSchema)).toBe(true);
    expect(out.job?.id).toBe("j1");
    expect(seen?.method).toBe(ReportService.method.getJob);
    expect(seen?.service).toBe(ReportService);
    expect(seen?.protocolName).toBe("http");
    expect(seen?.requestMethod).toBe("GET");
    expect(seen?.requestHeader.get("idempotency-key")).toBe("k1");
    expect(seen?.values.get(kTenant)).toBe("acme");
    // The call is over: its context is ended and unlinked from the shutdown signal.
    expect(seen?.signal.aborted).toBe(true);
    expect(getEventListeners(shutdown.signal, "abort")).toHaveLength(0);
  });

  it("ends the context of a unary call that fails, and passes the error on", async () => {
    const shutdown = new AbortController();
    const bridge = createRpcBridge({ shutdownSignal: shutdown.signal });
    const failure = new Error("no such job");
    const getJob = bridge.unary(ReportService.method.getJob, () => {
      throw failure;
    });
    await expect(getJob({ jobId: "j1" }, call())).rejects.toBe(failure);
    expect(getEventListeners(shutdown.signal, "abort")).toHaveLength(0);
  });

  it("aborts a unary handler's context when the server shuts down", async () => {
    const shutdown = new AbortController();
    const bridge = createRpcBridge({ shutdownSignal: shutdown.signal });
    const getJob = bridge.unary(
      ReportService.method.getJob,
      (_req, ctx) =>
        new Promise((resolve) => {
          ctx.signal.addEventListener("abort", () => resolve({}));
        }),
    );
    const pending = getJob({ jobId: "j1" }, call());
    shutdown.abort();
    expect(isMessage(await pending, GetJobResponseSchema)).toBe(true);
  });

  it("streams messages of the output schema; stopping early ends the handler and its context", async () => {
    const shutdown = new AbortController();
    const bridge = createRpcBridge({ shutdownSignal: shutdown.signal });
    let handlerEnded = false;
    let ctxSignal: AbortSignal | undefined;
    const watchJob = bridge.serverStream(
      ReportService.method.watchJob,
      async function* (_req: WatchJobRequest, ctx: HandlerContext) {
        ctxSignal = ctx.signal;
        try {
          for (;;) yield { keepaliveTime: timestampNow() };
        } finally {
          handlerEnded = true;
        }
      },
    );
    const stream = watchJob({ jobId: "j1" }, call());
    const first = await stream.next();
    expect(first.done).toBe(false);
    expect(isMessage(first.value, WatchJobResponseSchema)).toBe(true);
    await stream.return();
    expect(handlerEnded).toBe(true);
    expect(ctxSignal?.aborted).toBe(true);
    expect(getEventListeners(shutdown.signal, "abort")).toHaveLength(0);
  });

  it("aborts a stream's context when the call's signal aborts (the client left)", async () => {
    const bridge = createRpcBridge({ shutdownSignal: new AbortController().signal });
    const left = new AbortController();
    const watchJob = bridge.serverStream(
      ReportService.method.watchJob,
      async function* (_req: WatchJobRequest, ctx: HandlerContext) {
        await new Promise((resolve) => ctx.signal.addEventListener("abort", resolve));
        yield { keepaliveTime: timestampNow() };
      },
    );
    const next = watchJob({ jobId: "j1" }, call(left.signal)).next();
    left.abort();
    expect((await next).done).toBe(false);
  });
});
