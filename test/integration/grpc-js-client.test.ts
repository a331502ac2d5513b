/**
 * An independent client: @grpc/grpc-js with @grpc/proto-loader reading the
 * .proto sources directly, so nothing of connect-es or the generated code
 * sits between the test and the server's gRPC wire format.
 */
import { randomUUID } from "node:crypto";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { fromBinary } from "@bufbuild/protobuf";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import { ViolationsSchema } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startTestApp, type TestApp } from "../helpers/test-app.js";
import { waitFor } from "../helpers/wait-for.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const protoDir = path.resolve(here, "../../proto");

/**
 * The folder of the protobufjs that proto-loader uses: it ships the
 * well-known types (google/protobuf/*) that report_service.proto imports.
 */
function wellKnownTypesDir(): string {
  const require = createRequire(import.meta.url);
  const fromLoader = createRequire(require.resolve("@grpc/proto-loader"));
  return path.dirname(fromLoader.resolve("protobufjs/package.json"));
}

/** JSON-ish shapes proto-loader produces with keepCase, longs/enums as String, defaults. */
interface PlainResult {
  download_url: string;
  content_type: string;
  size_bytes: string;
}
interface PlainTimestamp {
  seconds: string;
  nanos: number;
}
interface PlainJob {
  id: string;
  user_id: string;
  report_type: string;
  state: string;
  progress: number;
  attempts_made: number;
  max_attempts: number;
  result: PlainResult | null;
  failure_reason: string;
  created_at: PlainTimestamp | null;
  started_at: PlainTimestamp | null;
  finished_at: PlainTimestamp | null;
  filters: { fields: Record<string, Record<string, unknown>> } | null;
}
interface PlainSubmitResponse {
  job_id: string;
  status_url: string;
  job: PlainJob | null;
  deduplicated: boolean;
}
interface PlainJobEvent {
  id: string;
  type: string;
  state: string;
  progress: number;
  phase: string;
  attempt: number;
  result: PlainResult | null;
}
interface PlainWatchResponse {
  event: PlainJobEvent | null;
  keepalive_time: PlainTimestamp | null;
}

type UnaryMethod = (
  request: object,
  metadata: grpc.Metadata,
  options: grpc.CallOptions,
  callback: (err: grpc.ServiceError | null, response?: unknown) => void,
) => grpc.ClientUnaryCall;
type StreamMethod = (
  request: object,
  metadata: grpc.Metadata,
  options: grpc.CallOptions,
) => grpc.ClientReadableStream<unknown>;

/** A thin promise wrapper over the dynamic grpc-js client. */
class ReportServiceGrpcClient {
  readonly raw: grpc.Client;
  constructor(address: string) {
    const definition = protoLoader.loadSync("reports/v1/report_service.proto", {
      includeDirs: [protoDir, wellKnownTypesDir()],
      keepCase: true,
      longs: String,
      enums: String,
      defaults: true,
      oneofs: true,
    });
    const loaded = grpc.loadPackageDefinition(definition);
    const reports = loaded.reports as grpc.GrpcObject;
    const v1 = reports.v1 as grpc.GrpcObject;
    const Service = v1.ReportService as grpc.ServiceClientConstructor;
    this.raw = new Service(address, grpc.credentials.createInsecure());
  }

  unary<T>(method: string, request: object, metadata = new grpc.Metadata()): Promise<T> {
    const fn = (this.raw as unknown as Record<string, UnaryMethod>)[method];
    if (fn === undefined) throw new Error(`no method ${method}`);
    return new Promise<T>((resolve, reject) => {
      fn.call(this.raw, request, metadata, { deadline: Date.now() + 10_000 }, (err, response) => {
        if (err) reject(err);
        else resolve(response as T);
      });
    });
  }

  /** Reads a server stream to its end; resolves with every message and the final status. */
  stream<T>(
    method: string,
    request: object,
  ): Promise<{ messages: T[]; status: grpc.StatusObject }> {
    const fn = (this.raw as unknown as Record<string, StreamMethod>)[method];
    if (fn === undefined) throw new Error(`no method ${method}`);
    const call = fn.call(this.raw, request, new grpc.Metadata(), {
      deadline: Date.now() + 15_000,
    });
    const messages: T[] = [];
    return new Promise((resolve, reject) => {
      let failed: grpc.ServiceError | undefined;
      call.on("data", (m: unknown) => messages.push(m as T));
      call.on("error", (err: grpc.ServiceError) => {
        failed = err;
      });
      call.on("status", (status: grpc.StatusObject) => {
        if (failed) reject(failed);
        else resolve({ messages, status });
      });
    });
  }
}

/** Awaits `promise` and returns the gRPC error it rejects with. */
async function grpcErrorOf(promise: Promise<unknown>): Promise<grpc.ServiceError> {
  try {
    await promise;
  } catch (err) {
    return err as grpc.ServiceError;
  }
  throw new Error("expected the call to fail");
}

/** google.rpc.Status, decoded by hand from its wire format (no .proto for it ships here). */
interface RpcStatus {
  code: number;
  message: string;
  details: { typeUrl: string; value: Uint8Array }[];
}

function decodeRpcStatus(bytes: Uint8Array): RpcStatus {
  const status: RpcStatus = { code: 0, message: "", details: [] };
  const reader = new BinaryReader(bytes);
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag();
    if (field === 1 && wireType === WireType.Varint) status.code = reader.int32();
    else if (field === 2 && wireType === WireType.LengthDelimited) status.message = reader.string();
    else if (field === 3 && wireType === WireType.LengthDelimited) {
      const any = new BinaryReader(reader.bytes());
      let typeUrl = "";
      let value: Uint8Array = new Uint8Array();
      while (any.pos < any.len) {
        const [f, w] = any.tag();
        if (f === 1) typeUrl = any.string();
        else if (f === 2) value = any.bytes();
        else any.skip(w);
      }
      status.details.push({ typeUrl, value });
    } else reader.skip(wireType);
  }
  return status;
}

// protobufjs's bundled google/protobuf/struct.proto names Value's fields in
// camelCase (stringValue), whatever keepCase says.
const filters = {
  fields: { region: { stringValue: "eu" }, end_date: { stringValue: "2026-01-31" } },
};

describe("ReportService over @grpc/grpc-js", () => {
  let t: TestApp;
  let client: ReportServiceGrpcClient;
  beforeAll(async () => {
    t = await startTestApp();
    client = new ReportServiceGrpcClient(new URL(t.url).host);
  });
  afterAll(async () => {
    client?.raw.close();
    await t?.close();
  });

  const submit = (request: object, metadata?: grpc.Metadata) =>
    client.unary<PlainSubmitResponse>("SubmitReport", request, metadata);

  it("submits a report and gets it back QUEUED with its fields", async () => {
    const res = await submit({ user_id: "grpc-u1", report_type: "REPORT_TYPE_WEEKLY", filters });
    expect(res.job_id).toMatch(/^[A-Za-z0-9_-]{1,64}$/);
    expect(res.deduplicated).toBe(false);
    expect(res.status_url).toBe(`${t.url}/v1/jobs/${res.job_id}`);
    expect(res.job?.id).toBe(res.job_id);
    expect(res.job?.user_id).toBe("grpc-u1");
    expect(res.job?.report_type).toBe("REPORT_TYPE_WEEKLY");
    expect(res.job?.state).toBe("JOB_STATE_QUEUED");
    expect(res.job?.filters?.fields.region).toMatchObject({ stringValue: "eu" });
    expect(res.job?.filters?.fields.end_date).toMatchObject({ stringValue: "2026-01-31" });
  });

  it("deduplicates by idempotency key, from the field or the metadata header", async () => {
    const key = `grpc-${randomUUID()}`;
    const request = { user_id: "grpc-u2", report_type: "REPORT_TYPE_WEEKLY", filters };
    const first = await submit({ ...request, idempotency_key: key });
    const md = new grpc.Metadata();
    md.set("idempotency-key", key);
    const second = await submit(request, md);
    expect(first.deduplicated).toBe(false);
    expect(second.deduplicated).toBe(true);
    expect(second.job_id).toBe(first.job_id);
  });

  it("returns ALREADY_EXISTS for a reused key with a different request", async () => {
    const key = `grpc-${randomUUID()}`;
    await submit({ idempotency_key: key, user_id: "grpc-u3", report_type: "REPORT_TYPE_WEEKLY" });
    const err = await grpcErrorOf(
      submit({ idempotency_key: key, user_id: "grpc-u3", report_type: "REPORT_TYPE_MONTHLY" }),
    );
    expect(err.code).toBe(grpc.status.ALREADY_EXISTS);
  });

  it("reads a job with GetJob until it succeeds, with result and timestamps", async () => {
    const { job_id } = await submit({
      user_id: "grpc-u4",
      report_type: "REPORT_TYPE_WEEKLY",
      filters,
    });
    const job = await waitFor(
      async () => {
        const { job } = await client.unary<{ job: PlainJob }>("GetJob", { job_id });
        return job.state === "JOB_STATE_SUCCEEDED" ? job : undefined;
      },
      { timeoutMs: 15_000, what: "the job to succeed" },
    );
    expect(job.progress).toBe(100);
    expect(job.attempts_made).toBe(1);
    expect(job.result?.content_type).toBe("text/csv");
    expect(job.result?.download_url).toMatch(new RegExp(`^${t.url}/`));
    // longs: String — int64 arrives as a decimal string.
    expect(job.result?.size_bytes).toMatch(/^[1-9]\d*$/);
    expect(job.created_at?.seconds).toMatch(/^[1-9]\d*$/);
    expect(job.started_at).not.toBeNull();
    expect(job.finished_at).not.toBeNull();
  });

  it("streams WatchJob events to the end with status OK", async () => {
    const { job_id } = await submit({
      user_id: "grpc-u5",
      report_type: "REPORT_TYPE_WEEKLY",
      filters,
    });
    const { messages, status } = await client.stream<PlainWatchResponse>("WatchJob", { job_id });
    expect(status.code).toBe(grpc.status.OK);
    const events = messages.flatMap((m) => (m.event ? [m.event] : []));
    expect(events.map((e) => [e.type, e.progress, e.phase])).toEqual([
      ["JOB_EVENT_TYPE_QUEUED", 0, ""],
      ["JOB_EVENT_TYPE_STARTED", 5, "started"],
      ["JOB_EVENT_TYPE_PROGRESS", 40, "fetch-data"],
      ["JOB_EVENT_TYPE_PROGRESS", 80, "render"],
      ["JOB_EVENT_TYPE_SUCCEEDED", 100, "completed"],
    ]);
    expect(events.at(-1)?.state).toBe("JOB_STATE_SUCCEEDED");
    expect(events.at(-1)?.result?.content_type).toBe("text/csv");
    // Resuming after the third event replays only the last two.
    const cursor = events[2]?.id as string;
    const resumed = await client.stream<PlainWatchResponse>("WatchJob", {
      job_id,
      after_event_id: cursor,
    });
    expect(resumed.messages.flatMap((m) => (m.event ? [m.event.id] : []))).toEqual(
      events.slice(3).map((e) => e.id),
    );
  });

  it("returns NOT_FOUND for an unknown job from GetJob and WatchJob", async () => {
    const get = await grpcErrorOf(client.unary("GetJob", { job_id: "noSuchJob42" }));
    expect(get.code).toBe(grpc.status.NOT_FOUND);
    expect(get.details).toContain("noSuchJob42");
    const watch = await grpcErrorOf(client.stream("WatchJob", { job_id: "noSuchJob42" }));
    expect(watch.code).toBe(grpc.status.NOT_FOUND);
  });

  it("returns INVALID_ARGUMENT with the violations in grpc-status-details-bin", async () => {
    const err = await grpcErrorOf(
      submit({ user_id: "", report_type: "REPORT_TYPE_UNSPECIFIED", idempotency_key: "é" }),
    );
    expect(err.code).toBe(grpc.status.INVALID_ARGUMENT);
    for (const field of ["user_id", "report_type", "idempotency_key"])
      expect(err.details).toContain(field);
    const [bin] = err.metadata.get("grpc-status-details-bin");
    expect(Buffer.isBuffer(bin)).toBe(true);
    const status = decodeRpcStatus(bin as Buffer);
    expect(status.code).toBe(grpc.status.INVALID_ARGUMENT);
    // The details carry the raw message. grpc-message is percent-encoded with
    // encodeURIComponent by connect-es, and grpc-js decodes it with decodeURI,
    // which leaves reserved characters such as ":" as "%3A" in err.details.
    expect(status.message).toMatch(/^invalid request: /);
    expect(decodeURIComponent(err.details)).toBe(status.message);
    expect(status.details.map((d) => d.typeUrl)).toEqual([
      "type.googleapis.com/buf.validate.Violations",
    ]);
    const violations = fromBinary(ViolationsSchema, status.details[0]?.value as Uint8Array);
    expect(
      violations.violations.map((v) => v.field?.elements.map((e) => e.fieldName).join(".")).sort(),
    ).toEqual(["idempotency_key", "report_type", "user_id"]);
    for (const v of violations.violations) expect(v.message).not.toBe("");
  });

  it("returns INVALID_ARGUMENT for a malformed job id and cursor", async () => {
    const get = await grpcErrorOf(client.unary("GetJob", { job_id: "../etc/passwd" }));
    expect(get.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(get.details).toContain("job_id");
    const watch = await grpcErrorOf(
      client.stream("WatchJob", { job_id: "someJob", after_event_id: "not-a-cursor" }),
    );
    expect(watch.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(watch.details).toContain("after_event_id");
    expect(watch.metadata.get("grpc-status-details-bin")).toHaveLength(1);
  });
});

describe("@grpc/grpc-js with API keys", () => {
  const key = "grpcjs-key-0123456789abcdef";
  let t: TestApp;
  let client: ReportServiceGrpcClient;
  const metadata = (authorization?: string) => {
    const m = new grpc.Metadata();
    if (authorization !== undefined) m.set("authorization", authorization);
    return m;
  };

  beforeAll(async () => {
    t = await startTestApp({ API_KEYS: `acme:${key}` }, { mode: "api" });
    client = new ReportServiceGrpcClient(new URL(t.url).host);
  });
  afterAll(async () => {
    client?.raw.close();
    await t?.close();
  });

  it("is UNAUTHENTICATED without a key or with a wrong one, alike, and works with the key", async () => {
    const request = { user_id: "grpcjs", report_type: "REPORT_TYPE_WEEKLY" };
    const none = await grpcErrorOf(client.unary("SubmitReport", request));
    const wrong = await grpcErrorOf(
      client.unary("SubmitReport", request, metadata("Bearer wrong-key-0123456789abcdef")),
    );
    for (const err of [none, wrong]) expect(err.code).toBe(grpc.status.UNAUTHENTICATED);
    expect(decodeURIComponent(wrong.details)).toBe(decodeURIComponent(none.details));
    const ok = await client.unary<PlainSubmitResponse>(
      "SubmitReport",
      request,
      metadata(`Bearer ${key}`),
    );
    expect(ok.job_id).toMatch(/^[A-Za-z0-9_-]{22}$/);
  });
});
