#!/usr/bin/env node
/**
 * `buf breaking` for `npm test` and `npm run lint`: compares the protos in the
 * work tree (uncommitted changes included) with a baseline commit, never with
 * the tree itself. The baseline, the first that applies:
 *
 *   1. BUF_BREAKING_AGAINST=<git revision> (a release tag, say) when set;
 *   2. the merge base with main (`main`, else `origin/main`) when HEAD has
 *      commits that main lacks: everything a branch changed;
 *   3. HEAD~1, the first parent: what the last commit changed (on main, and in
 *      CI's fresh clone of main, where a merge commit's first parent is main
 *      before the merge, so a merged branch is checked whole).
 *
 * The first commit of a repository has nothing before it: that passes, saying
 * so. A shallow clone that lacks the baseline commit fails, saying how to get
 * it (`git fetch --unshallow`) rather than comparing against less.
 *
 * The baseline's tree is taken with `git archive`, so no clone or network is
 * involved and any commit the repository holds works.
 *
 *   node scripts/buf-breaking.mjs          # in the repository to check
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

/** This project's buf: the script may run in another repository (the tests do). */
const buf = path.join(import.meta.dirname, "..", "node_modules", ".bin", "buf");

/**
 * Runs git in `cwd`; its trimmed stdout, or undefined when it fails.
 * @param {string} cwd
 * @param {string[]} args
 */
function git(cwd, args) {
  const r = spawnSync("git", args, { cwd, encoding: "utf8" });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

/**
 * Chooses the commit to compare with.
 * @param {string} cwd
 * @param {Record<string, string | undefined>} env
 * @returns {{ commit: string, why: string } | { none: string } | { error: string }}
 */
export function chooseBaseline(cwd, env = process.env) {
  if (git(cwd, ["rev-parse", "--is-inside-work-tree"]) !== "true") {
    return { error: "not a git work tree: buf breaking needs the history to compare with" };
  }
  const shallow = git(cwd, ["rev-parse", "--is-shallow-repository"]) === "true";
  const missing = (what) => ({
    error: shallow
      ? `${what} is not in this shallow clone: run \`git fetch --unshallow\` (or set BUF_BREAKING_AGAINST to a revision it has)`
      : `${what} does not exist`,
  });
  const explicit = env.BUF_BREAKING_AGAINST;
  if (explicit !== undefined && explicit !== "") {
    const commit = git(cwd, ["rev-parse", "--verify", "--quiet", `${explicit}^{commit}`]);
    return commit
      ? { commit, why: `BUF_BREAKING_AGAINST=${explicit}` }
      : missing(`BUF_BREAKING_AGAINST=${explicit}`);
  }
  const head = git(cwd, ["rev-parse", "--verify", "--quiet", "HEAD"]);
  if (!head) return { none: "no commit yet" };
  for (const main of ["main", "origin/main"]) {
    if (!git(cwd, ["rev-parse", "--verify", "--quiet", `${main}^{commit}`])) continue;
    const base = git(cwd, ["merge-base", "HEAD", main]);
    if (base === undefined) {
      // Unrelated histories, or the shallow end cuts the common ancestor off.
      if (shallow) return missing(`the merge base of HEAD and ${main}`);
      continue;
    }
    if (base !== head) return { commit: base, why: `the merge base with ${main}` };
  }
  const parent = git(cwd, ["rev-parse", "--verify", "--quiet", "HEAD~1^{commit}"]);
  if (parent) return { commit: parent, why: "HEAD~1" };
  // A shallow clone's oldest commit looks parentless too.
  if (shallow) return missing("HEAD~1");
  return { none: "the first commit has no parent" };
}

/**
 * Compares the work tree in `cwd` with the chosen baseline; the exit code.
 * @param {string} cwd
 * @param {Record<string, string | undefined>} env
 */
export function bufBreaking(cwd = process.cwd(), env = process.env) {
  const baseline = chooseBaseline(cwd, env);
  if ("error" in baseline) {
    process.stderr.write(`buf breaking: ${baseline.error}\n`);
    return 1;
  }
  if ("none" in baseline) {
    process.stdout.write(`buf breaking: nothing to compare with (${baseline.none})\n`);
    return 0;
  }
  const short = baseline.commit.slice(0, 12);
  process.stdout.write(`buf breaking: against ${short} (${baseline.why})\n`);
  const dir = mkdtempSync(path.join(tmpdir(), "buf-breaking-"));
  try {
    const archive = spawnSync("git", ["archive", "--format=tar", baseline.commit], {
      cwd,
      maxBuffer: 512 * 1024 * 1024,
    });
    const tar =
      archive.status === 0
        ? spawnSync("tar", ["-x", "-C", dir], { input: archive.stdout })
        : undefined;
    if (tar?.status !== 0) {
      process.stderr.write(
        `buf breaking: could not extract ${short}: ${String(archive.stderr || tar?.stderr || "").trim()}\n`,
      );
      return 1;
    }
    const run = spawnSync(buf, ["breaking", "--against", dir], { cwd, stdio: "inherit" });
    if (run.error) {
      process.stderr.write(`buf breaking: could not run ${buf}: ${run.error.message}\n`);
      return 1;
    }
    return run.status ?? 1;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  process.exitCode = bufBreaking();
}
