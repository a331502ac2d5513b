#!/usr/bin/env node
/**
 * The first step of `npm test`: makes sure the programs the tests run are on
 * this machine, and installs the missing ones from Debian's packages when it
 * can (as root, or through sudo), printing one line saying what and why. When
 * it cannot (no apt-get, no root and no sudo, or the install fails) it exits 1
 * with one line naming what to install. With everything present it prints
 * nothing.
 *
 *   node scripts/test-prereqs.mjs
 *
 * Node.js and npm themselves (and git, for a clone) must be there already.
 */
import { spawnSync } from "node:child_process";
import { accessSync, constants } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

/**
 * What the tests run, and the Debian package that provides it. `path` is an
 * absolute file, `command` a name looked up on the PATH.
 * @type {ReadonlyArray<import("./test-prereqs.d.mts").Prerequisite>}
 */
export const prerequisites = [
  {
    command: "redis-server",
    aptPackage: "redis-server",
    why: "the tests start private Redis servers",
  },
  {
    // playwright-core drives Debian's Chromium; it never downloads a browser.
    path: "/usr/bin/chromium",
    aptPackage: "chromium",
    why: "the browser tests drive it with playwright-core",
  },
  {
    command: "curl",
    aptPackage: "curl",
    why: "the Server-Sent Events test reads a stream with it",
  },
];

/** `path` or `command`: how the line names a prerequisite. */
const label = (p) => p.path ?? p.command;

/**
 * Decides what to do about the prerequisites that are missing. Pure: the
 * facts about the machine come in `machine`.
 * @param {ReadonlyArray<import("./test-prereqs.d.mts").Prerequisite>} missing
 * @param {import("./test-prereqs.d.mts").MachineFacts} machine
 * @returns {import("./test-prereqs.d.mts").Plan}
 */
export function planInstall(missing, machine) {
  if (missing.length === 0) return { action: "none" };
  const packages = missing.map((p) => p.aptPackage);
  const what = missing.map((p) => `${label(p)} (${p.why})`).join("; ");
  const yourself = `apt-get install -y ${packages.join(" ")}`;
  if (!machine.hasAptGet) {
    return {
      action: "fail",
      message: `test-prereqs: missing ${what}, and this machine has no apt-get: install ${packages.join(", ")}, then run npm test again.`,
    };
  }
  let prefix = [];
  if (!machine.isRoot) {
    if (!machine.hasSudo) {
      return {
        action: "fail",
        message: `test-prereqs: missing ${what}, and installing needs root: run \`sudo ${yourself}\` (as root: \`${yourself}\`), then npm test again.`,
      };
    }
    // Without a terminal sudo cannot ask for a password: -n fails at once instead of hanging.
    prefix = machine.interactive ? ["sudo"] : ["sudo", "-n"];
  }
  // Through sudo the environment is reset, so the variable goes in with env(1).
  const apt = [...prefix, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get"];
  return {
    action: "install",
    packages,
    message: `test-prereqs: installing ${packages.join(", ")} with ${prefix.length > 0 ? "sudo " : ""}apt-get, since ${what} ${missing.length === 1 ? "is" : "are"} missing`,
    commands: [
      [...apt, "update", "-qq"],
      [...apt, "install", "-y", "-qq", ...packages],
    ],
    retry: `sudo ${yourself}`,
  };
}

/**
 * Checks, installs when it can, and says what happened.
 * @param {Partial<import("./test-prereqs.d.mts").Machine>} [overrides] the machine's
 *   facts and actions (tests replace them; by default the real ones)
 * @returns {number} the exit code
 */
export function ensurePrerequisites(overrides = {}) {
  const machine = { ...realMachine(), ...overrides };
  const present = (p) =>
    p.path !== undefined ? machine.isExecutable(p.path) : machine.onPath(p.command);
  const missing = machine.prerequisites.filter((p) => !present(p));
  const plan = planInstall(missing, {
    isRoot: machine.isRoot,
    hasSudo: machine.onPath("sudo"),
    hasAptGet: machine.onPath("apt-get"),
    interactive: machine.interactive,
  });
  if (plan.action === "none") return 0;
  if (plan.action === "fail") {
    machine.error(plan.message);
    return 1;
  }
  machine.log(plan.message);
  for (const command of plan.commands) {
    const status = machine.run(command);
    if (status !== 0) {
      machine.error(
        `test-prereqs: \`${command.join(" ")}\` exited ${status}: install ${plan.packages.join(", ")} yourself (\`${plan.retry}\`), then run npm test again.`,
      );
      return 1;
    }
  }
  const still = missing.filter((p) => !present(p));
  if (still.length > 0) {
    machine.error(
      `test-prereqs: ${still.map(label).join(", ")} still missing after installing ${plan.packages.join(", ")}: install ${still.map((p) => p.aptPackage).join(", ")} yourself, then run npm test again.`,
    );
    return 1;
  }
  return 0;
}

/** @returns {import("./test-prereqs.d.mts").Machine} this machine */
function realMachine() {
  const isExecutable = (file) => {
    try {
      accessSync(file, constants.X_OK);
      return true;
    } catch {
      return false;
    }
  };
  return {
    prerequisites,
    isExecutable,
    onPath: (command) =>
      (process.env.PATH ?? "")
        .split(path.delimiter)
        .filter((dir) => dir !== "")
        .some((dir) => isExecutable(path.join(dir, command))),
    isRoot: process.getuid?.() === 0,
    interactive: process.stdin.isTTY === true,
    run: (command) => {
      const [file = "", ...args] = command;
      const r = spawnSync(file, args, { stdio: ["inherit", "inherit", "inherit"] });
      return r.error ? 127 : (r.status ?? 1);
    },
    log: (line) => process.stdout.write(`${line}\n`),
    error: (line) => process.stderr.write(`${line}\n`),
  };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  process.exitCode = ensurePrerequisites();
}
