/**
 * The service's Lua scripts: one `<name>.lua` file per script in this folder,
 * each opening with a `--[[ ]]` header that says what it does, its KEYS, ARGV
 * and reply (BullMQ's `src/commands/*.lua` is the model). A script is read and
 * resolved once, when the module that runs it is imported, so a script naming
 * an unknown field fails the process at start rather than a call later.
 *
 * Resolving a script expands three notations:
 * - `--- @include "includes/<name>"` inlines `includes/<name>.lua`: each file
 *   once per script however often it is included, includes of includes first;
 *   a cycle or a missing file is an error.
 * - `RECORD.<key>` becomes the quoted hash field of the job record,
 *   `recordField.<key>` of job-record.ts, so scripts and the record codec
 *   cannot disagree on a name.
 * - `EVENT.<key>` becomes the quoted field of an event stream entry,
 *   `eventField.<key>` of event-codec.ts.
 * An unknown key is an error. Both notations are valid Lua syntax, so the
 * files stay readable by Lua tooling.
 *
 * A script may also run other whole scripts inside itself (BullMQ's add
 * script, apply-transition.lua): a line `--- @compose <slot>`, placed as the
 * body of a `local function f(KEYS, ARGV) ... end`, is replaced with the
 * script given for the slot (composeScript), which then reads the function's
 * KEYS and ARGV and returns its reply to the caller.
 */
import { readdirSync, readFileSync } from "node:fs";
import { eventField } from "../../events/event-codec.js";
import { recordField } from "../job-record.js";
import { createLuaScript, type LuaScript } from "../lua-script.js";

/** This folder: the .lua files sit beside this module wherever src/ is deployed. */
const folder = new URL("./", import.meta.url);

const includePattern = /^---[ \t]*@include[ \t]+(["'])(.+?)\1[ \t]*$/gm;
const fieldPattern = /\b(RECORD|EVENT)\.([A-Za-z_][A-Za-z0-9_]*)\b/g;

const tables: Record<"RECORD" | "EVENT", Readonly<Record<string, string>>> = {
  RECORD: recordField,
  EVENT: eventField,
};

/** A script that cannot be resolved: an unknown field, a missing include, a cycle. */
export class ScriptLoadError extends Error {
  override readonly name = "ScriptLoadError";
}

/**
 * Resolves a script's includes and field names. `read(path)` returns the
 * text of a file of the scripts folder (a path like "includes/append-event.lua").
 */
export function resolveScript(name: string, read: (path: string) => string): string {
  const emitted = new Set<string>();
  const expand = (path: string, stack: readonly string[]): string => {
    if (stack.includes(path)) {
      throw new ScriptLoadError(`${name}: circular include ${[...stack, path].join(" -> ")}`);
    }
    let text: string;
    try {
      text = read(path);
    } catch (err) {
      throw new ScriptLoadError(`${name}: cannot read ${path}`, { cause: err });
    }
    return text.replace(includePattern, (_line, _quote, target: string) => {
      const file = target.endsWith(".lua") ? target : `${target}.lua`;
      if (emitted.has(file)) return "";
      const body = expand(file, [...stack, path]);
      emitted.add(file);
      return body;
    });
  };
  return expand(`${name}.lua`, []).replace(fieldPattern, (_m, table: "RECORD" | "EVENT", key) => {
    const value = Object.hasOwn(tables[table], key) ? tables[table][key] : undefined;
    if (value === undefined) {
      throw new ScriptLoadError(
        `${name}: ${table}.${key} names no field (see ${table === "RECORD" ? "recordField" : "eventField"})`,
      );
    }
    return `'${value}'`;
  });
}

const sources = new Map<string, string>();

/** The resolved source of script `name` (`<name>.lua` of this folder), read once. */
export function loadScriptSource(name: string): string {
  let source = sources.get(name);
  if (source === undefined) {
    source = resolveScript(name, (path) => readFileSync(new URL(path, folder), "utf8"));
    sources.set(name, source);
  }
  return source;
}

const composePattern = /^---[ \t]*@compose[ \t]+([A-Za-z0-9_-]+)[ \t]*$/gm;

/**
 * The resolved source of script `name` with each `--- @compose <slot>` line
 * replaced by `slots[slot]` (a whole script's source, resolved already).
 * Every slot of the script must be given, and every slot given must be used.
 */
export function composeScript(name: string, slots: Readonly<Record<string, string>>): string {
  const used = new Set<string>();
  const source = loadScriptSource(name).replace(composePattern, (_line, slot: string) => {
    const body = Object.hasOwn(slots, slot) ? slots[slot] : undefined;
    if (body === undefined) throw new ScriptLoadError(`${name}: no script for slot ${slot}`);
    used.add(slot);
    return body;
  });
  for (const slot of Object.keys(slots)) {
    if (!used.has(slot)) throw new ScriptLoadError(`${name}: has no slot ${slot}`);
  }
  return source;
}

/** Script `name` as a LuaScript (EVALSHA, with the EVAL fallback on NOSCRIPT). */
export function loadLuaScript(name: string): LuaScript {
  return createLuaScript(loadScriptSource(name));
}

/** The names of every script of this folder (not the includes), for tests and tools. */
export function scriptNames(): string[] {
  return readdirSync(folder)
    .filter((f) => f.endsWith(".lua"))
    .map((f) => f.slice(0, -".lua".length))
    .sort();
}
