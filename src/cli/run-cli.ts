/**
 * reportctl's command line: global flags, one command, its flags; errors
 * become an exit code (exit-codes.ts) and one line on stderr.
 */
import { parseArgs } from "node:util";
import { ConnectError } from "@connectrpc/connect";
import { codeToString } from "@connectrpc/connect/protocol-connect";
import { createReportsClient, type ReportsProtocol } from "../client/reports-client.js";
import type { CliContext, CliIo } from "./cli-context.js";
import { commands } from "./commands.js";
import { ExitCode, exitCodeFor, UsageError } from "./exit-codes.js";
import { commandHelp, mainHelp } from "./help.js";

type OptionSpec = { type: "string" | "boolean"; short?: string; multiple?: boolean };

const globalOptions: Record<string, OptionSpec> = {
  url: { type: "string" },
  "api-key": { type: "string" },
  protocol: { type: "string" },
  json: { type: "boolean" },
  help: { type: "boolean", short: "h" },
};

const commandOptions: Record<string, Record<string, OptionSpec>> = {
  submit: {
    type: { type: "string" },
    user: { type: "string" },
    "idempotency-key": { type: "string" },
    key: { type: "string" },
    filters: { type: "string" },
    filter: { type: "string", multiple: true },
    priority: { type: "string" },
    "run-at": { type: "string" },
    deadline: { type: "string" },
    watch: { type: "boolean" },
  },
  get: {},
  watch: { after: { type: "string" } },
  cancel: { reason: { type: "string" } },
  retry: {},
  list: {
    user: { type: "string" },
    state: { type: "string" },
    "page-size": { type: "string" },
    "page-token": { type: "string" },
    all: { type: "boolean" },
  },
};

const protocols: readonly ReportsProtocol[] = ["grpc", "connect", "grpc-web"];

/** Runs reportctl with `argv` (without node and the script); resolves with the exit code. */
export async function runCli(argv: string[], io: CliIo): Promise<number> {
  let json = argv.includes("--json");
  try {
    // First pass, lenient, knowing every flag: find the command.
    const allOptions = Object.assign({}, globalOptions, ...Object.values(commandOptions));
    const first = parseArgs({
      args: argv,
      options: allOptions,
      strict: false,
      allowPositionals: true,
    });
    const name = first.positionals[0];
    if (name === undefined) {
      if (first.values.help === true) {
        io.stdout.write(mainHelp);
        return ExitCode.ok;
      }
      throw new UsageError("no command given");
    }
    const own = commandOptions[name];
    if (own === undefined) throw new UsageError(`unknown command "${name}"`);
    let parsed: ReturnType<typeof parseArgs>;
    try {
      parsed = parseArgs({
        args: argv,
        options: { ...globalOptions, ...own },
        strict: true,
        allowPositionals: true,
      });
    } catch (err) {
      throw new UsageError(err instanceof Error ? err.message : String(err));
    }
    const values = parsed.values as Record<string, string | boolean | string[] | undefined>;
    json = values.json === true;
    if (values.help === true) {
      io.stdout.write(commandHelp[name] ?? mainHelp);
      return ExitCode.ok;
    }
    const protocol = (values.protocol as string | undefined) ?? io.env.REPORTS_PROTOCOL ?? "grpc";
    if (!protocols.includes(protocol as ReportsProtocol)) {
      throw new UsageError(`--protocol must be one of ${protocols.join(", ")} (got "${protocol}")`);
    }
    const baseUrl =
      (values.url as string | undefined) ?? io.env.REPORTS_URL ?? "http://127.0.0.1:8080";
    if (!/^https?:\/\/[^/]/.test(baseUrl)) {
      throw new UsageError(`--url must be an http:// or https:// URL (got "${baseUrl}")`);
    }
    const apiKey = (values["api-key"] as string | undefined) ?? io.env.REPORTS_API_KEY;
    const ctx: CliContext = {
      client: createReportsClient({ baseUrl, protocol: protocol as ReportsProtocol, apiKey }),
      args: parsed.positionals.slice(1),
      values,
      json,
      io,
    };
    const command = commands[name];
    if (command === undefined) throw new UsageError(`unknown command "${name}"`);
    return await command(ctx);
  } catch (err) {
    const code = io.signal.aborted ? ExitCode.interrupted : exitCodeFor(err);
    if (err instanceof UsageError) {
      io.stderr.write(`reportctl: ${err.message}\n(see reportctl --help)\n`);
    } else if (code === ExitCode.interrupted) {
      io.stderr.write("reportctl: interrupted\n");
    } else {
      const ce = ConnectError.from(err);
      // As on the wire: "not_found".
      const codeName = codeToString(ce.code);
      if (json) {
        io.stderr.write(
          `${JSON.stringify({ error: { code: codeName, message: ce.rawMessage } })}\n`,
        );
      } else {
        io.stderr.write(`reportctl: ${codeName}: ${ce.rawMessage}\n`);
      }
    }
    return code;
  }
}
