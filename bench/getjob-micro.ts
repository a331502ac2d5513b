/**
 * µs per call of the pieces of a Connect GET GetJob that changed in the
 * "GetJob's CPU per request" pass, in two checkouts (OLD, NEW) side by side
 * in one process, medians of 7 runs each after a warm-up:
 *
 * - the record: an HGETALL reply (the Buffers ioredis's parser hands over,
 *   sliced from the reply's bytes, of a queued job's record as the submit
 *   writes it) to a JobView, through
 *   each tree's job reader on an ioredis client whose sendCommand answers
 *   at once (what ioredis does with the reply, then decodeRecord);
 * - the request: the GET's query and message to a GetJobRequest
 *   (URLSearchParams and connect's JSON serialization, against
 *   connect-get-query.ts and get-job-json-reader.ts when NEW has them);
 * - traceIdOf of the record's traceparent.
 *
 *   npx tsx bench/getjob-micro.ts OLD NEW     # e.g. /tmp/main-export .
 */
import path from "node:path";
import { createMethodSerializationLookup } from "@connectrpc/connect/protocol";
import { ReportService } from "../gen/reports/v1/report_service_pb.js";
import { queuedJobView } from "../test/helpers/job-fixtures.js";

const [oldDir = "", newDir = ""] = process.argv.slice(2).map((d) => path.resolve(d));
if (oldDir === "" || newDir === "") throw new Error("usage: getjob-micro.ts OLD NEW");

let sink = 0;
async function bench(n: number, f: () => unknown): Promise<number> {
  const once = async () => {
    const v = await f();
    sink += v === undefined ? 0 : 1;
  };
  for (let i = 0; i < n / 2; i++) await once();
  const runs: number[] = [];
  for (let r = 0; r < 7; r++) {
    const t = process.hrtime.bigint();
    for (let i = 0; i < n; i++) await once();
    runs.push(Number(process.hrtime.bigint() - t) / n / 1000);
  }
  return runs.sort((a, b) => a - b)[3] ?? 0;
}

interface Tree {
  reader: { get(id: string): Promise<unknown> };
  parseGet: (search: string) => unknown;
  traceIdOf: (tp: string) => string;
}

const connectJson = createMethodSerializationLookup(
  ReportService.method.getJob,
  undefined,
  undefined,
  { readMaxBytes: 1 << 20, writeMaxBytes: 1 << 20 },
).getI(false);

async function load(dir: string): Promise<Tree> {
  const src = (p: string) => import(path.join(dir, "src", p));
  const { Redis } = (await import(path.join(dir, "node_modules/ioredis/built/index.js"))).default;
  const { createJobReader } = await src("queue/job-reader.ts");
  const { createKeys } = await src("queue/keys.ts");
  const { encodeNewRecord } = await src("queue/job-record.ts");
  const { traceIdOf } = await src("telemetry/trace-context.ts");
  // The reply's bytes in one buffer, its elements sliced from it, as ioredis's parser hands them over.
  const fields = encodeNewRecord(queuedJobView, "f".repeat(64)) as string[];
  const wire = Buffer.from(
    `*${fields.length}\r\n${fields.map((f) => `$${Buffer.byteLength(f)}\r\n${f}\r\n`).join("")}`,
  );
  const reply: Buffer[] = [];
  let at = wire.indexOf("\r\n") + 2;
  for (const f of fields) {
    at = wire.indexOf("\r\n", at) + 2;
    const length = Buffer.byteLength(f);
    reply.push(wire.subarray(at, at + length));
    at += length + 2;
  }
  const redis = new Redis({ lazyConnect: true });
  redis.sendCommand = (command: { resolve(v: unknown): void; promise: Promise<unknown> }) => {
    command.resolve(reply);
    return command.promise;
  };
  const reader = createJobReader({ redis, keys: createKeys("micro") });
  let parseGet: (search: string) => unknown;
  try {
    const { readConnectGetQuery } = await src("api/connect-get-query.ts");
    const { readGetJobJsonText } = await src("api/get-job-json-reader.ts");
    parseGet = (search) => {
      const q = readConnectGetQuery(search);
      return readGetJobJsonText(q.message ?? "");
    };
  } catch {
    parseGet = (search) => {
      const q = new URLSearchParams(search);
      q.get("encoding");
      q.has("compression");
      const message = q.get("message") ?? "";
      q.get("base64");
      return connectJson.parse(Buffer.from(message));
    };
  }
  return { reader, parseGet, traceIdOf };
}

const trees = { old: await load(oldDir), new: await load(newDir) };
const search = `connect=v1&encoding=json&message=${encodeURIComponent(JSON.stringify({ jobId: queuedJobView.id }))}`;
const tp = queuedJobView.traceparent ?? "";
console.log("piece                         OLD µs   NEW µs");
for (const [name, n, f] of [
  ["record (reply to JobView)", 100_000, (t: Tree) => () => t.reader.get(queuedJobView.id)],
  ["request (query + message)", 200_000, (t: Tree) => () => t.parseGet(search)],
  ["traceIdOf", 1_000_000, (t: Tree) => () => t.traceIdOf(tp)],
] as const) {
  const a: number[] = [];
  const b: number[] = [];
  for (let turn = 0; turn < 3; turn++) {
    a.push(await bench(n, f(trees.old)));
    b.push(await bench(n, f(trees.new)));
  }
  const med = (xs: number[]) => xs.sort((x, y) => x - y)[1] ?? 0;
  console.log(
    `${name.padEnd(28)} ${med(a).toFixed(3).padStart(7)}  ${med(b).toFixed(3).padStart(7)}`,
  );
}
if (sink < 0) console.log(sink);
process.exit(0);
