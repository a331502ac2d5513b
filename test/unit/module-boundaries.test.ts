/**
 * Which parts of src/ may import which. Data flows one way (shared/STYLE.md);
 * in particular queue/ imports events/ (the event codec and the event-log
 * contract), so events/ must not import queue/: the watch hub gets channel
 * names handed in.
 */
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";

const src = new URL("../../src/", import.meta.url).pathname;

/** Every "part → part" import edge of src/ (a part is a top-level folder), with one file as example. */
function partImports(): Map<string, string> {
  const edges = new Map<string, string>();
  const files = readdirSync(src, { recursive: true, encoding: "utf8" }).filter((f) =>
    f.endsWith(".ts"),
  );
  for (const file of files) {
    const from = file.split(path.sep)[0] as string;
    if (from.endsWith(".ts")) continue; // app.ts, main.ts: the composition roots
    const text = readFileSync(path.join(src, file), "utf8");
    for (const m of text.matchAll(/(?:\bfrom|\bimport)\s*\(?\s*["'](\.{1,2}\/[^"']+)["']/g)) {
      const target = path.relative(src, path.resolve(src, path.dirname(file), m[1] as string));
      if (target.startsWith("..")) continue; // gen/
      const to = target.split(path.sep)[0] as string;
      if (to !== from && !edges.has(`${from}->${to}`)) edges.set(`${from}->${to}`, file);
    }
  }
  return edges;
}

describe("imports between the parts of src/", () => {
  it("never go both ways between two parts", () => {
    const edges = partImports();
    const mutual = [...edges.keys()].filter((e) => {
      const [a, b] = e.split("->");
      return edges.has(`${b}->${a}`);
    });
    expect(mutual.map((e) => `${e} (${edges.get(e)})`)).toEqual([]);
  });

  it("go from queue/ to events/, never back", () => {
    const edges = partImports();
    expect(edges.has("queue->events")).toBe(true);
    expect(edges.get("events->queue")).toBeUndefined();
  });

  it("leave domain/ importing nothing of the service", () => {
    const fromDomain = [...partImports().keys()].filter((e) => e.startsWith("domain->"));
    expect(fromDomain).toEqual([]);
  });
});
