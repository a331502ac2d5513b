/**
 * What reportctl's commands run with: where they write and read (CliIo),
 * and the parsed command line with its client (CliContext). Its own module,
 * so run-cli.ts (which parses) and commands.ts (which run) both depend on
 * it and not on each other.
 */
import type { ReportsClient } from "../client/reports-client.js";

/** Where reportctl writes and what it reads. */
export interface CliIo {
  stdout: { write(text: string): unknown; readonly isTTY?: boolean; readonly columns?: number };
  stderr: { write(text: string): unknown };
  env: Record<string, string | undefined>;
  /** Aborted on Ctrl-C. */
  signal: AbortSignal;
}

/** What a command gets. */
export interface CliContext {
  client: ReportsClient;
  /** Positionals after the command name. */
  args: string[];
  values: Record<string, string | boolean | string[] | undefined>;
  json: boolean;
  io: CliIo;
}
