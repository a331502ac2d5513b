/**
 * The submitter's own CPU per submit, Redis left out: each checkout's
 * createSubmitter over an ioredis client whose sendCommand encodes the
 * command (as it would be written) and answers the submit script's "new" at
 * once. Deterministic enough to compare small changes of the submit path
 * (preparation, msgpack, hashing, the command's encoding) that the
 * end-to-end A/B (submit-ab.ts) cannot resolve on a shared machine.
 *
 *   npx tsx bench/submitter-micro.ts /tmp/ab-base .      # checkouts, medians of 7 turns each
 *
 * It first prints what encoding a submit-sized EVALSHA (35 arguments, three
 * of them Buffers) costs: ioredis's buffer mode against resp-command.ts.
 */
import path from "node:path";
import { pathToFileURL } from "node:url";
import { Command, Redis } from "ioredis";
import { pino } from "pino";
import { encodeCommand } from "../src/queue/resp-command.js";

{
  const keys = Array.from({ length: 30 }, (_, i) => `micro:{q}:report-weekly:key-${i}:0123456789`);
  const args: (string | number | Buffer)[] = [
    "6f1ed002ab5595859014ebf0951522d9",
    30,
    ...keys,
    JSON.stringify({ p: "x".repeat(600) }),
  ];
  args.push(Buffer.alloc(200, 1), Buffer.alloc(300, 2), Buffer.alloc(10, 3));
  const n = 100_000;
  for (const [name, encode] of [
    ["ioredis", () => new Command("evalsha", args).toWritable({})],
    ["resp-command.ts", () => encodeCommand("evalsha", args)],
  ] as const) {
    const t = process.cpuUsage();
    for (let i = 0; i < n; i++) encode();
    const c = process.cpuUsage(t);
    console.log(
      `encoding a submit-sized EVALSHA, ${name}: ${((c.user + c.system) / n).toFixed(2)} µs`,
    );
  }
}

const dirs = process.argv.slice(2);
if (dirs.length === 0) dirs.push(".");
const logger = pino({ level: "silent" });
const perTurn = 30_000;
const inFlight = 50;

type Sent = {
  toWritable(s: object): unknown;
  resolve(v: unknown): void;
  promise: Promise<unknown>;
};
const variants: { dir: string; submit: (key: string) => Promise<unknown>; us: number[] }[] = [];
for (const dir of dirs) {
  const at = (p: string) => pathToFileURL(path.join(path.resolve(dir), p)).href;
  const { loadConfig } = await import(at("src/config/config.ts"));
  const { createKeys } = await import(at("src/queue/keys.ts"));
  const { createReportQueues } = await import(at("src/queue/report-queues.ts"));
  const { createSubmitter } = await import(at("src/queue/submitter.ts"));
  const config = loadConfig({ MAX_BACKLOG: "100000000" });
  const redis = new Redis({ lazyConnect: true });
  const stub = redis as unknown as { sendCommand: unknown; evalsha: unknown };
  stub.sendCommand = (command: Sent) => {
    command.toWritable({});
    command.resolve([Buffer.from("new"), Buffer.from("1-0")]);
    return command.promise;
  };
  // Older checkouts send through ioredis's evalsha.
  stub.evalsha = (...args: unknown[]) =>
    (stub.sendCommand as (c: unknown) => Promise<unknown>)(
      new Command("evalsha", args as string[], { replyEncoding: "utf8" }),
    );
  const keys = createKeys("micro");
  const queues = createReportQueues({ connection: redis, keys, logger });
  const submitter = createSubmitter({
    redis,
    queues: queues.byType,
    keys,
    settings: {
      worker: config.worker,
      retention: config.retention,
      limits: config.limits,
      redis: { submitWaitAof: 0 },
    },
  });
  variants.push({
    dir,
    us: [],
    submit: (key) =>
      submitter.submit({
        tenant: "bench",
        userId: "user-1",
        reportType: "weekly",
        filters: { region: "eu", format: "csv" },
        priority: "normal",
        idempotencyKey: key,
      }),
  });
}
for (let turn = 0; turn <= 7; turn++) {
  for (const v of turn % 2 ? [...variants].reverse() : variants) {
    const t = process.cpuUsage();
    for (let i = 0; i < perTurn; i += inFlight) {
      await Promise.all(Array.from({ length: inFlight }, (_, j) => v.submit(`k-${turn}-${i + j}`)));
    }
    const c = process.cpuUsage(t);
    // Turn 0 warms up (JIT).
    if (turn > 0) v.us.push((c.user + c.system) / perTurn);
  }
}
for (const v of variants) {
  const sorted = [...v.us].sort((a, b) => a - b);
  console.log(
    `${v.dir}: ${sorted[Math.floor(sorted.length / 2)]?.toFixed(1)} µs per submit (median; ${sorted.map((x) => x.toFixed(1)).join(" ")})`,
  );
}
process.exit(0);
