/**
 * The Lua scripts of src/queue/scripts: each resolves (includes, field
 * names) and documents its KEYS, ARGV and reply; record field names come
 * only from the record's field table.
 */
import { readdirSync, readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { recordField } from "../../src/queue/job-record.js";
import {
  loadScriptSource,
  resolveScript,
  ScriptLoadError,
  scriptNames,
} from "../../src/queue/scripts/load.js";

const folder = new URL("../../src/queue/scripts/", import.meta.url);

/** Every .lua file of the folder, includes too, by path relative to it. */
function luaFiles(): string[] {
  return readdirSync(folder, { recursive: true, encoding: "utf8" })
    .filter((f) => f.endsWith(".lua"))
    .sort();
}

/** A resolver over in-memory files. */
function fromFiles(files: Record<string, string>) {
  return (path: string) => {
    const text = files[path];
    if (text === undefined) throw new Error(`ENOENT ${path}`);
    return text;
  };
}

describe("the Lua scripts", () => {
  it("are the ones the service runs, each resolved", () => {
    expect(scriptNames()).toEqual([
      "apply-attempt",
      "apply-transition",
      "correct-tenant-backlog",
      "drop-live-entry",
      "list-jobs",
      "remove-finished-job",
      "replay-events",
      "request-cancel",
      "submit",
      "transition-with-queue",
    ]);
    for (const name of scriptNames()) {
      const source = loadScriptSource(name);
      expect(source, name).not.toMatch(/\b(RECORD|EVENT)\.\w/);
      expect(source, name).not.toMatch(/^---\s*@include/m);
    }
  });

  it("open with a header naming their input and output", () => {
    for (const file of luaFiles()) {
      const text = readFileSync(new URL(file, folder), "utf8");
      expect(text.startsWith("--[["), file).toBe(true);
      const header = text.slice(0, text.indexOf("]]"));
      expect(header, file).toMatch(/\n\s*Input:\n/);
      expect(header, file).toMatch(/\n\s*Output:\n/);
      if (!file.startsWith("includes/")) expect(header, file).toMatch(/KEYS\[1\]/);
    }
  });

  it("name record fields only through RECORD.<key>", () => {
    const names = new Set<string>(Object.values(recordField));
    // The idempotency record's own field (hash {job, fp}), not the job record's;
    // the event types PROGRESS and STARTED, not the record's fields.
    const allowed: Record<string, string[]> = {
      "submit.lua": ["fp"],
      "apply-attempt.lua": ["progress", "started"],
    };
    for (const file of luaFiles()) {
      const text = readFileSync(new URL(file, folder), "utf8");
      const code = text.slice(text.indexOf("]]") + 2).replace(/--.*$/gm, "");
      const literals = [...code.matchAll(/'([^']*)'|"([^"]*)"/g)].map((m) => m[1] ?? m[2] ?? "");
      const raw = literals.filter((l) => names.has(l) && !allowed[file]?.includes(l));
      expect(raw, file).toEqual([]);
    }
  });

  it("append events through the one append body, which trims by XDEL", () => {
    for (const name of ["apply-transition", "apply-attempt", "submit"]) {
      const source = loadScriptSource(name);
      expect(source, name).toContain("local function appendEvent(");
      expect(source.match(/'XADD'/g), name).toHaveLength(1);
      expect(source, name).not.toMatch(/'MAXLEN'|'MINID'/i);
    }
  });
});

describe("resolveScript()", () => {
  it("turns RECORD.<key> and EVENT.<key> into the quoted field names", () => {
    const source = resolveScript(
      "s",
      fromFiles({ "s.lua": "return {RECORD.state, RECORD.traceparent, EVENT.traceId}" }),
    );
    expect(source).toBe(`return {'${recordField.state}', '${recordField.traceparent}', 'tr'}`);
  });

  it("refuses a field name the tables do not have", () => {
    const load = (text: string) => () => resolveScript("s", fromFiles({ "s.lua": text }));
    expect(load("return RECORD.stat")).toThrow(ScriptLoadError);
    expect(load("return RECORD.stat")).toThrow(/RECORD\.stat names no field/);
    expect(load("return EVENT.state_")).toThrow(/EVENT\.state_ names no field/);
    expect(load("return RECORD.toString")).toThrow(ScriptLoadError);
  });

  it("inlines each include once, includes of includes first", () => {
    const source = resolveScript(
      "s",
      fromFiles({
        "s.lua": '--- @include "includes/a"\n--- @include "includes/b"\nreturn a() + b()',
        "includes/a.lua": '--- @include "includes/b"\nlocal function a() return b() end',
        "includes/b.lua": "local function b() return 1 end",
      }),
    );
    expect(source).toBe(
      "local function b() return 1 end\nlocal function a() return b() end\n\nreturn a() + b()",
    );
  });

  it("refuses a missing include and an include cycle", () => {
    expect(() =>
      resolveScript("s", fromFiles({ "s.lua": '--- @include "includes/none"' })),
    ).toThrow(/cannot read includes\/none\.lua/);
    expect(() =>
      resolveScript(
        "s",
        fromFiles({
          "s.lua": '--- @include "includes/a"',
          "includes/a.lua": '--- @include "includes/b"',
          "includes/b.lua": '--- @include "includes/a"',
        }),
      ),
    ).toThrow(/circular include/);
  });
});
