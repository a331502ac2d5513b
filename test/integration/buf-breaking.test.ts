/**
 * scripts/buf-breaking.mjs in throwaway git repositories holding a copy of
 * proto/ and buf.yaml: a removed field fails whether it was committed last, on
 * a branch under later commits, or not committed at all; an additive change
 * passes; a shallow clone says how to get the history it lacks.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";

const root = fileURLToPath(new URL("../../", import.meta.url));
const script = path.join(root, "scripts", "buf-breaking.mjs");
const protoFile = path.join("proto", "reports", "v1", "job.proto");

const gitEnv = {
  PATH: process.env.PATH ?? "",
  HOME: tmpdir(),
  GIT_CONFIG_NOSYSTEM: "1",
  GIT_AUTHOR_NAME: "test",
  GIT_AUTHOR_EMAIL: "test@example.com",
  GIT_COMMITTER_NAME: "test",
  GIT_COMMITTER_EMAIL: "test@example.com",
};

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function tempDir(): string {
  const dir = mkdtempSync(path.join(tmpdir(), "buf-breaking-test-"));
  dirs.push(dir);
  return dir;
}

const git = (cwd: string, ...args: string[]) =>
  execFileSync("git", args, { cwd, env: gitEnv, encoding: "utf8" }).trim();

/** A repository on main whose first commit is this project's proto/ and buf.yaml. */
function protoRepo(): string {
  const dir = tempDir();
  cpSync(path.join(root, "proto"), path.join(dir, "proto"), { recursive: true });
  cpSync(path.join(root, "buf.yaml"), path.join(dir, "buf.yaml"));
  git(dir, "init", "-q", "-b", "main");
  commitAll(dir, "protos");
  return dir;
}

function commitAll(dir: string, message: string): void {
  git(dir, "add", "-A");
  git(dir, "commit", "-q", "-m", message);
}

/** Edits job.proto in `dir`. */
function editProto(dir: string, edit: (text: string) => string): void {
  const file = path.join(dir, protoFile);
  const before = readFileSync(file, "utf8");
  const after = edit(before);
  expect(after, "the edit changed job.proto").not.toBe(before);
  writeFileSync(file, after);
}

/** Deletes the first `type name = n;` field line (not addField's); the field's name. */
function removeField(dir: string): string {
  let removed = "";
  editProto(dir, (text) =>
    text.replace(/^ {2}[\w.]+ (?!added_by_test\b)(\w+) = \d+;\n/m, (_line, name: string) => {
      removed = name;
      return "";
    }),
  );
  return removed;
}

/** Adds a field to the first message: additive, so not breaking. */
function addField(dir: string): void {
  editProto(dir, (text) =>
    text.replace(
      /^(message \w+ \{\n)/m,
      "$1  // Added by a test.\n  string added_by_test = 9999;\n",
    ),
  );
}

/** Runs the script in `cwd`: exit code and everything it (and buf) printed. */
function check(cwd: string, env: Record<string, string> = {}): { code: number; out: string } {
  const r = spawnSync(process.execPath, [script], {
    cwd,
    env: { ...gitEnv, ...env },
    encoding: "utf8",
  });
  return { code: r.status ?? -1, out: `${r.stdout}${r.stderr}` };
}

describe("scripts/buf-breaking.mjs", () => {
  it("fails when the last commit on main removes a field, and names it", () => {
    const dir = protoRepo();
    const field = removeField(dir);
    commitAll(dir, "remove a field");
    const { code, out } = check(dir);
    expect(out).toContain("(HEAD~1)");
    expect(out).toMatch(new RegExp(`with name "${field}" .* was deleted`));
    expect(code).not.toBe(0);
  });

  it("passes when the last commit only adds a field", () => {
    const dir = protoRepo();
    addField(dir);
    commitAll(dir, "add a field");
    const { code, out } = check(dir);
    expect(out).toContain("(HEAD~1)");
    expect(code, out).toBe(0);
  });

  it("on a branch, fails on a removal made under later commits (the merge base with main)", () => {
    const dir = protoRepo();
    git(dir, "switch", "-q", "-c", "feature");
    removeField(dir);
    commitAll(dir, "remove a field");
    addField(dir);
    commitAll(dir, "add a field");
    const { code, out } = check(dir);
    expect(out).toContain("(the merge base with main)");
    expect(out).toContain("was deleted");
    expect(code).not.toBe(0);
  });

  it("fails on a removal not committed yet", () => {
    const dir = protoRepo();
    addField(dir);
    commitAll(dir, "add a field");
    removeField(dir);
    expect(check(dir).code).not.toBe(0);
  });

  it("compares with BUF_BREAKING_AGAINST when set (a release tag)", () => {
    const dir = protoRepo();
    git(dir, "tag", "v1.0.0");
    removeField(dir);
    commitAll(dir, "remove a field");
    addField(dir);
    commitAll(dir, "add a field");
    // HEAD~1 alone would pass: the removal is two commits back.
    expect(check(dir).code).toBe(0);
    const { code, out } = check(dir, { BUF_BREAKING_AGAINST: "v1.0.0" });
    expect(out).toContain("(BUF_BREAKING_AGAINST=v1.0.0)");
    expect(code).not.toBe(0);
    expect(check(dir, { BUF_BREAKING_AGAINST: "v9" })).toEqual({
      code: 1,
      out: "buf breaking: BUF_BREAKING_AGAINST=v9 does not exist\n",
    });
  });

  it("passes on the first commit, saying there is nothing to compare with", () => {
    expect(check(protoRepo())).toEqual({
      code: 0,
      out: "buf breaking: nothing to compare with (the first commit has no parent)\n",
    });
  });

  it("fails in a shallow clone without the baseline, saying how to fetch it", () => {
    const dir = protoRepo();
    addField(dir);
    commitAll(dir, "add a field");
    const clone = path.join(tempDir(), "clone");
    git(root, "clone", "-q", "--depth", "1", `file://${dir}`, clone);
    const { code, out } = check(clone);
    expect(code).toBe(1);
    expect(out).toBe(
      "buf breaking: HEAD~1 is not in this shallow clone: run `git fetch --unshallow` (or set BUF_BREAKING_AGAINST to a revision it has)\n",
    );
  });
});
