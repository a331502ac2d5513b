// biome-ignore-all lint/suspicious/noTemplateCurlyInString: these strings are Compose's ${VAR} syntax, not templates
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { interpolate, parsePort, readCompose } from "../helpers/compose-file.js";

describe("interpolate()", () => {
  const env = { SET: "v", EMPTY: "" };

  it("resolves each of Compose's forms", () => {
    const cases: Array<[string, string]> = [
      ["plain", "plain"],
      ["$SET-$UNSET.", "v-."],
      ["${SET}${UNSET}", "v"],
      ["${UNSET:-d} ${EMPTY:-d} ${SET:-d}", "d d v"],
      ["${UNSET-d} ${EMPTY-d} ${SET-d}", "d  v"],
      ["${UNSET:+a}|${EMPTY:+a}|${SET:+a}", "||a"],
      ["${UNSET+a}|${EMPTY+a}|${SET+a}", "|a|a"],
      ["${UNSET:-${SET}/x}", "v/x"],
      ["${UNSET:-http://h:1/p?q=1}", "http://h:1/p?q=1"],
      ["cost $$5, $${SET}", "cost $5, ${SET}"],
    ];
    for (const [input, output] of cases) {
      expect(interpolate(input, env), input).toBe(output);
    }
    expect(interpolate("${SET:?needed}", env)).toBe("v");
    expect(interpolate("${EMPTY?needed}", env)).toBe("");
  });

  it("fails on required variables that are missing, naming where", () => {
    expect(() => interpolate("${UNSET:?set it}", env, "services.api.x")).toThrow(
      "services.api.x: required variable UNSET is missing a value: set it",
    );
    expect(() => interpolate("${EMPTY:?}", env)).toThrow("required variable EMPTY");
    expect(() => interpolate("${UNSET?}", env)).toThrow("required variable UNSET");
  });

  it("fails on malformed references", () => {
    for (const bad of ["${", "${SET", "${1X}", "${SET:x}", "a $ b", "$", "${}"]) {
      expect(() => interpolate(bad, env), bad).toThrow(/interpolation|unclosed/);
    }
  });
});

describe("parsePort()", () => {
  it("reads the short syntax into its parts", () => {
    expect(parsePort("127.0.0.1:8080:8080")).toEqual({
      host_ip: "127.0.0.1",
      published: "8080",
      target: "8080",
      protocol: "tcp",
    });
    expect(parsePort("4318:4318")).toEqual({ published: "4318", target: "4318", protocol: "tcp" });
    expect(parsePort(9000)).toEqual({ target: "9000", protocol: "tcp" });
    expect(parsePort("53:53/udp")).toMatchObject({ protocol: "udp" });
    expect(parsePort("127.0.0.1::80")).toEqual({
      host_ip: "127.0.0.1",
      target: "80",
      protocol: "tcp",
    });
    expect(parsePort("[::1]:8000-8001:80-81")).toEqual({
      host_ip: "::1",
      published: "8000-8001",
      target: "80-81",
      protocol: "tcp",
    });
  });

  it("rejects what is not a port", () => {
    for (const bad of ["", "http", "80800", "8080:80800", "1.2.3:80:80", "80/icmp", "a:b:c:d"]) {
      expect(parsePort(bad), bad).toBeUndefined();
    }
  });
});

describe("readCompose()", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "compose-file-"));
  writeFileSync(path.join(dir, "Dockerfile"), "FROM scratch\n");
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const good = `
x-env: &env
  A: \${A:-one}
services:
  db:
    image: redis:7
    healthcheck: { test: "redis-cli ping", interval: 5s }
    volumes: [data:/data, ./conf:/etc/conf:ro]
  app:
    build: .
    command: node "server one.js" --x
    environment:
      <<: *env
      B: 2
    depends_on: [db]
    ports: ["127.0.0.1:80:8080", { target: 9000, published: 9001 }]
volumes:
  data:
`;

  it("normalizes a valid file: merge keys, interpolation and the short syntaxes", () => {
    const { config, problems } = readCompose(good, { dir, env: { A: "set" } });
    expect(problems).toEqual([]);
    const app = config?.services.app;
    expect(app?.environment).toEqual({ A: "set", B: "2" });
    expect(app?.command).toEqual(["node", "server one.js", "--x"]);
    expect(app?.depends_on).toEqual({ db: { condition: "service_started" } });
    expect(app?.ports).toEqual([
      { host_ip: "127.0.0.1", published: "80", target: "8080", protocol: "tcp" },
      { published: "9001", target: "9000", protocol: "tcp" },
    ]);
    const db = config?.services.db;
    expect(db?.healthcheck?.test).toEqual(["CMD-SHELL", "redis-cli ping"]);
    expect(db?.volumes).toEqual([
      { type: "volume", source: "data", target: "/data", read_only: false },
      { type: "bind", source: "./conf", target: "/etc/conf", read_only: true },
    ]);
    expect(readCompose(good, { dir }).config?.services.app?.environment.A).toBe("one");
  });

  /** The problems of `good` with `from` replaced by `to`. */
  const problemsWith = (from: string, to: string) => {
    expect(good).toContain(from);
    return readCompose(good.replace(from, to), { dir }).problems;
  };

  it("reports YAML errors, schema violations and broken references, each once", () => {
    expect(problemsWith("  app:\n", "  app:\n  app:\n")[0]).toMatch(/^yaml: .*unique/i);
    expect(problemsWith("healthcheck: { test:", "healthcheck: { tset:")).toEqual([
      'schema: /services/db/healthcheck must NOT have additional properties ("tset")',
    ]);
    expect(problemsWith("interval: 5s", "interval: 5 s")).toEqual([
      'schema: /services/db/healthcheck/interval must match format "duration"',
    ]);
    expect(problemsWith('"127.0.0.1:80:8080"', '"127.0.0.1:80:80800"')).toEqual([
      'schema: /services/app/ports/0 must match format "ports"',
    ]);
    expect(problemsWith("depends_on: [db]", "depends_on: { db: { condition: ready } }")).toEqual([
      "schema: /services/app/depends_on/db/condition must be equal to one of the allowed values (service_started, service_healthy, service_completed_successfully)",
    ]);
    expect(problemsWith("services:", "servces:")).toContain(
      'schema: (top level) must NOT have additional properties ("servces")',
    );
    expect(problemsWith("depends_on: [db]", "depends_on: [dbx]")).toEqual([
      'services.app.depends_on: no service "dbx"',
    ]);
    expect(problemsWith("volumes:\n  data:\n", "")).toEqual([
      'services.db.volumes: named volume "data" is not declared under volumes',
    ]);
    expect(problemsWith("build: .", "build: ./nowhere")[0]).toMatch(
      /^services\.app\.build: no folder/,
    );
    expect(problemsWith("image: redis:7", "platform: linux")).toEqual([
      "services.db: has neither image nor build",
    ]);
    expect(problemsWith("${A:-one}", "${A:?A is required}")).toEqual([
      "compose.x-env.A: required variable A is missing a value: A is required",
      "compose.services.app.environment.A: required variable A is missing a value: A is required",
    ]);
  });
});
