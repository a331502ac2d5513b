/**
 * One log line per RPC when it ends (for a stream: when the stream ends):
 * method, protocol, Connect code, duration and tenant, plus the job id a
 * response names. Never the request or response messages (filters are report
 * payloads) or headers (credentials). Place it after the tracing interceptor,
 * so the line carries the call's trace_id and span_id.
 */
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { codeToString } from "@connectrpc/connect/protocol-connect";
import type { Logger } from "pino";
import { kTenant } from "./context-keys.js";
import { probeServices, protocolOf } from "./telemetry-interceptor.js";

/** Codes that mean the server failed (logged as warnings); the rest are the caller's. */
export const serverFaults: ReadonlySet<Code> = new Set<Code>([
  Code.Unknown,
  Code.Internal,
  Code.Unavailable,
  Code.DataLoss,
  Code.Unimplemented,
  Code.DeadlineExceeded,
]);

/** Creates the request-log interceptor. */
export function createRequestLogInterceptor(root: Logger): Interceptor {
  // Its fields are fixed and safe (no messages, no headers), so the root
  // logger's redaction, a safety net for mistakes that costs about 7 us a
  // line (three times the rest of the line), is left out.
  const logger = root.child({}, { redact: [] });
  return (next) => async (req) => {
    const started = performance.now();
    const line = (err: unknown, jobId?: string) => {
      const code = err === undefined ? undefined : ConnectError.from(err).code;
      const level =
        code !== undefined && serverFaults.has(code)
          ? "warn"
          : // Health probes come every few seconds: visible at debug only.
            probeServices.has(req.service.typeName)
            ? "debug"
            : "info";
      // A line below the logger's level costs nothing to build.
      if (!logger.isLevelEnabled(level)) return;
      const fields = {
        rpc: `${req.service.typeName}/${req.method.name}`,
        method: req.method.name,
        protocol: protocolOf(req.header.get("content-type")),
        // Connect's snake_case name of the code ("not_found"); "ok" for success.
        code: code === undefined ? "ok" : codeToString(code),
        duration_ms: Math.round((performance.now() - started) * 1000) / 1000,
        tenant: req.contextValues.get(kTenant),
        ...(jobId ? { job_id: jobId } : {}),
      };
      logger[level](fields, level === "warn" ? "rpc failed" : "rpc");
    };
    let res: Awaited<ReturnType<typeof next>>;
    try {
      res = await next(req);
    } catch (err) {
      line(err);
      throw err;
    }
    if (!res.stream) {
      const jobId = (res.message as { jobId?: unknown }).jobId;
      line(undefined, typeof jobId === "string" ? jobId : undefined);
      return res;
    }
    return { ...res, message: logged(res.message, (err) => line(err)) };
  };
}

/** Passes a response stream through, calling `done` once when it ends (with its error, if any). */
async function* logged<T>(
  stream: AsyncIterable<T>,
  done: (err: unknown) => void,
): AsyncGenerator<T> {
  let error: unknown;
  try {
    yield* stream;
  } catch (err) {
    error = err;
    throw err;
  } finally {
    done(error);
  }
}
