/**
 * reportctl, the typed client for people: `reportctl --help`.
 * Entry point: the package's `bin` (bin/reportctl.mjs) and `npm run reportctl` run this file.
 */
import { runCli } from "./run-cli.js";

const interrupt = new AbortController();
process.once("SIGINT", () => interrupt.abort());

const code = await runCli(process.argv.slice(2), {
  stdout: process.stdout,
  stderr: process.stderr,
  env: process.env,
  signal: interrupt.signal,
});
process.exitCode = code;
// Open HTTP/2 sessions would keep the process alive for their idle timeout.
process.stdout.write("", () => process.exit(code));
