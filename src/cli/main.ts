/**
 * reportctl: the typed client for people.
 *
 *   reportctl submit <user-id> <weekly|monthly|custom> [--filters JSON] [--key K] [--priority low|normal|high]
 *   reportctl get <job-id>
 *   reportctl watch <job-id> [--after EVENT_ID]
 *   reportctl cancel <job-id> [--reason TEXT]
 *   reportctl retry <job-id>
 *   reportctl list [--user U] [--state queued,failed] [--page-size N] [--page-token T]
 *
 * Talks gRPC to REPORTS_URL (default http://127.0.0.1:8080); prints JSON.
 */
import { parseArgs } from "node:util";
import { toJson } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import {
  JobEventSchema,
  JobPriority,
  JobSchema,
  JobState,
  ReportType,
} from "../../gen/reports/v1/job_pb.js";
import { ReportService } from "../../gen/reports/v1/report_service_pb.js";

const usage = `usage: reportctl <command> [args]
  submit <user-id> <weekly|monthly|custom> [--filters JSON] [--key K] [--priority low|normal|high]
  get <job-id>
  watch <job-id> [--after EVENT_ID]      (resumes by itself when the server restarts)
  cancel <job-id> [--reason TEXT]
  retry <job-id>
  list [--user U] [--state queued,running,retrying,succeeded,failed,cancelled] [--page-size N] [--page-token T]
env: REPORTS_URL (default http://127.0.0.1:8080)`;

const types: Record<string, ReportType> = {
  weekly: ReportType.WEEKLY,
  monthly: ReportType.MONTHLY,
  custom: ReportType.CUSTOM,
};
const priorities: Record<string, JobPriority> = {
  low: JobPriority.LOW,
  normal: JobPriority.NORMAL,
  high: JobPriority.HIGH,
};

async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      filters: { type: "string" },
      key: { type: "string" },
      priority: { type: "string" },
      after: { type: "string" },
      reason: { type: "string" },
      user: { type: "string" },
      state: { type: "string" },
      "page-size": { type: "string" },
      "page-token": { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  const [command, ...args] = positionals;
  if (values.help || command === undefined) {
    process.stdout.write(`${usage}\n`);
    return command === undefined && !values.help ? 2 : 0;
  }
  const client = createClient(
    ReportService,
    createGrpcTransport({ baseUrl: process.env.REPORTS_URL ?? "http://127.0.0.1:8080" }),
  );
  const print = (v: unknown) => process.stdout.write(`${JSON.stringify(v, null, 2)}\n`);
  const need = (n: number) => {
    if (args.length < n)
      throw new ConnectError(`${command} needs ${n} argument(s)\n${usage}`, Code.InvalidArgument);
  };

  switch (command) {
    case "submit": {
      need(2);
      const reportType = types[args[1] ?? ""];
      if (reportType === undefined)
        throw new ConnectError(`unknown report type ${args[1]}`, Code.InvalidArgument);
      const res = await client.submitReport({
        userId: args[0],
        reportType,
        idempotencyKey: values.key ?? "",
        filters: values.filters ? JSON.parse(values.filters) : undefined,
        priority: priorities[values.priority ?? "normal"] ?? JobPriority.NORMAL,
      });
      print({ jobId: res.jobId, statusUrl: res.statusUrl, deduplicated: res.deduplicated });
      return 0;
    }
    case "get": {
      need(1);
      const res = await client.getJob({ jobId: args[0] });
      if (res.job) print(toJson(JobSchema, res.job));
      return 0;
    }
    case "watch": {
      need(1);
      let after = values.after ?? "";
      for (let tries = 0; ; tries++) {
        try {
          for await (const res of client.watchJob({ jobId: args[0], afterEventId: after })) {
            if (!res.event) continue;
            after = res.event.id;
            process.stdout.write(`${JSON.stringify(toJson(JobEventSchema, res.event))}\n`);
          }
          return 0;
        } catch (err) {
          // The server is restarting or went away: resume from the last event seen.
          if (err instanceof ConnectError && err.code === Code.Unavailable && tries < 30) {
            await new Promise((r) => setTimeout(r, Math.min(5000, 250 * 2 ** tries)));
            continue;
          }
          throw err;
        }
      }
    }
    case "cancel": {
      need(1);
      const res = await client.cancelJob({ jobId: args[0], reason: values.reason ?? "" });
      if (res.job) print(toJson(JobSchema, res.job));
      return 0;
    }
    case "retry": {
      need(1);
      const res = await client.retryJob({ jobId: args[0] });
      if (res.job) print(toJson(JobSchema, res.job));
      return 0;
    }
    case "list": {
      const states = (values.state ?? "")
        .split(",")
        .filter((s) => s !== "")
        .map((s) => {
          const v = JobState[s.toUpperCase() as keyof typeof JobState];
          if (v === undefined) throw new ConnectError(`unknown state ${s}`, Code.InvalidArgument);
          return v;
        });
      const res = await client.listJobs({
        userId: values.user ?? "",
        states,
        pageSize: Number(values["page-size"] ?? 0),
        pageToken: values["page-token"] ?? "",
      });
      print({ jobs: res.jobs.map((j) => toJson(JobSchema, j)), nextPageToken: res.nextPageToken });
      return 0;
    }
    default:
      process.stderr.write(`unknown command ${command}\n${usage}\n`);
      return 2;
  }
}

run(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    const e = ConnectError.from(err);
    process.stderr.write(`reportctl: ${Code[e.code]}: ${e.rawMessage}\n`);
    process.exitCode = 1;
  },
);
