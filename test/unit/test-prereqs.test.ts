import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import {
  ensurePrerequisites,
  type Machine,
  type Prerequisite,
  planInstall,
  prerequisites,
} from "../../scripts/test-prereqs.mjs";

const script = fileURLToPath(new URL("../../scripts/test-prereqs.mjs", import.meta.url));

const chromium: Prerequisite = {
  path: "/usr/bin/chromium",
  aptPackage: "chromium",
  why: "browser",
};
const redis: Prerequisite = { command: "redis-server", aptPackage: "redis-server", why: "redis" };

/**
 * A fake machine: `files` and `commands` exist; `run` records each command and
 * answers with the next status, and a zero status "installs" the packages named.
 */
function fakeMachine(options: {
  files?: string[];
  commands?: string[];
  isRoot?: boolean;
  interactive?: boolean;
  statuses?: number[];
  installs?: boolean;
}) {
  const files = new Set(options.files ?? []);
  const commands = new Set(options.commands ?? ["apt-get"]);
  const ran: string[][] = [];
  const out: string[] = [];
  const err: string[] = [];
  const statuses = [...(options.statuses ?? [])];
  const machine: Partial<Machine> = {
    prerequisites: [redis, chromium],
    isExecutable: (file) => files.has(file),
    onPath: (command) => commands.has(command),
    isRoot: options.isRoot ?? true,
    interactive: options.interactive ?? false,
    run: (command) => {
      ran.push(command);
      const status = statuses.shift() ?? 0;
      if (status === 0 && command.includes("install") && options.installs !== false) {
        if (command.includes("chromium")) files.add("/usr/bin/chromium");
        if (command.includes("redis-server")) commands.add("redis-server");
      }
      return status;
    },
    log: (line) => out.push(line),
    error: (line) => err.push(line),
  };
  return { machine, ran, out, err };
}

describe("scripts/test-prereqs.mjs", () => {
  it("does nothing and prints nothing when everything is there", () => {
    const m = fakeMachine({ files: ["/usr/bin/chromium"], commands: ["apt-get", "redis-server"] });
    expect(ensurePrerequisites(m.machine)).toBe(0);
    expect(m.ran).toEqual([]);
    expect([...m.out, ...m.err]).toEqual([]);
  });

  it("as root, installs only what is missing with apt-get and says so in one line", () => {
    const m = fakeMachine({ commands: ["apt-get", "redis-server"] });
    expect(ensurePrerequisites(m.machine)).toBe(0);
    expect(m.out).toEqual([
      "test-prereqs: installing chromium with apt-get, since /usr/bin/chromium (browser) is missing",
    ]);
    expect(m.err).toEqual([]);
    expect(m.ran).toEqual([
      ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "update", "-qq"],
      ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-qq", "chromium"],
    ]);
  });

  it("installs several missing packages in one apt-get call", () => {
    const m = fakeMachine({});
    expect(ensurePrerequisites(m.machine)).toBe(0);
    expect(m.out).toHaveLength(1);
    expect(m.out[0]).toContain("installing redis-server, chromium with apt-get");
    expect(m.ran.at(-1)?.slice(-2)).toEqual(["redis-server", "chromium"]);
  });

  it("goes through sudo when not root (-n without a terminal, so it never hangs)", () => {
    const batch = fakeMachine({ isRoot: false, commands: ["apt-get", "sudo", "redis-server"] });
    expect(ensurePrerequisites(batch.machine)).toBe(0);
    expect(batch.out[0]).toContain("with sudo apt-get");
    for (const command of batch.ran) expect(command.slice(0, 3)).toEqual(["sudo", "-n", "env"]);

    const tty = fakeMachine({
      isRoot: false,
      interactive: true,
      commands: ["apt-get", "sudo", "redis-server"],
    });
    expect(ensurePrerequisites(tty.machine)).toBe(0);
    for (const command of tty.ran) expect(command.slice(0, 2)).toEqual(["sudo", "env"]);
  });

  it("fails with one line naming the install command when it is not root and has no sudo", () => {
    const m = fakeMachine({ isRoot: false, commands: ["apt-get", "redis-server"] });
    expect(ensurePrerequisites(m.machine)).toBe(1);
    expect(m.ran).toEqual([]);
    expect(m.err).toHaveLength(1);
    expect(m.err[0]).toMatch(/missing \/usr\/bin\/chromium \(browser\).*needs root/);
    expect(m.err[0]).toContain("`sudo apt-get install -y chromium`");
  });

  it("fails with one line when the machine has no apt-get", () => {
    const m = fakeMachine({ commands: [] });
    expect(ensurePrerequisites(m.machine)).toBe(1);
    expect(m.ran).toEqual([]);
    expect(m.err).toEqual([
      "test-prereqs: missing redis-server (redis); /usr/bin/chromium (browser), and this machine has no apt-get: install redis-server, chromium, then run npm test again.",
    ]);
  });

  it("fails with one line when apt-get fails, and stops there", () => {
    const m = fakeMachine({ commands: ["apt-get", "redis-server"], statuses: [0, 100] });
    expect(ensurePrerequisites(m.machine)).toBe(1);
    expect(m.ran).toHaveLength(2);
    expect(m.err).toHaveLength(1);
    expect(m.err[0]).toMatch(
      /apt-get install -y -qq chromium` exited 100: install chromium yourself/,
    );

    const update = fakeMachine({ commands: ["apt-get", "redis-server"], statuses: [1] });
    expect(ensurePrerequisites(update.machine)).toBe(1);
    expect(update.ran).toHaveLength(1);
  });

  it("fails when the install 'succeeds' but the program is still missing", () => {
    const m = fakeMachine({ commands: ["apt-get", "redis-server"], installs: false });
    expect(ensurePrerequisites(m.machine)).toBe(1);
    expect(m.err).toEqual([
      "test-prereqs: /usr/bin/chromium still missing after installing chromium: install chromium yourself, then run npm test again.",
    ]);
  });

  it("plans nothing when nothing is missing", () => {
    expect(
      planInstall([], { isRoot: false, hasSudo: false, hasAptGet: false, interactive: false }),
    ).toEqual({ action: "none" });
  });

  it("checks the path the browser tests launch and the programs the tests spawn", () => {
    expect(prerequisites.map((p) => p.path ?? p.command)).toEqual([
      "redis-server",
      "/usr/bin/chromium",
      "curl",
    ]);
  });

  it("passes silently on this machine, where the tests' programs are installed", async () => {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [script]);
    expect(stdout + stderr).toBe("");
  });

  it("run with an empty PATH, finds nothing to install with and says what to install", async () => {
    const run = promisify(execFile)(process.execPath, [script], { env: { PATH: "/nonexistent" } });
    const failure = await run.then(
      () => undefined,
      (err: { code: number; stdout: string; stderr: string }) => err,
    );
    expect(failure?.code).toBe(1);
    expect(failure?.stdout).toBe("");
    expect(failure?.stderr).toMatch(
      /^test-prereqs: missing redis-server \(.*\); curl \(.*\), and this machine has no apt-get: install redis-server, curl, then run npm test again.\n$/,
    );
  });
});
