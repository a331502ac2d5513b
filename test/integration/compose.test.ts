/**
 * The container files: docker-compose.yml must pass `docker-compose config`
 * (installed by .ci/run) and wire Redis, api and worker as documented; the
 * Dockerfile's entrypoint, health check and copies must match the tree. No
 * Docker engine runs here, so the image's command is run directly instead.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { existsSync, readFileSync, realpathSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { freePort } from "../../src/queue/private-redis.js";
import { testEnv } from "../helpers/test-app.js";
import { waitFor } from "../helpers/wait-for.js";

const root = fileURLToPath(new URL("../../", import.meta.url));

interface ComposeService {
  image?: string;
  build?: unknown;
  command?: string[];
  environment?: Record<string, string>;
  depends_on?: Record<string, { condition?: string }>;
  volumes?: string[];
  ports?: Array<{ published?: number | string; target?: number } | string>;
  healthcheck?: { test?: string[] };
}

/** `docker-compose config` (resolved and normalized) as JSON. */
function composeConfig(): { services: Record<string, ComposeService>; volumes: object } {
  const yaml = execFileSync("docker-compose", ["-f", "docker-compose.yml", "config"], {
    cwd: root,
    encoding: "utf8",
    env: { PATH: process.env.PATH ?? "" },
  });
  return yamlToJson(yaml) as { services: Record<string, ComposeService>; volumes: object };
}

/** Parses YAML with the YAML module docker-compose itself runs on (no new dependency). */
function yamlToJson(yaml: string): unknown {
  // Debian's docker-compose is a Python program that depends on python3-yaml;
  // its own interpreter is the one guaranteed to have it.
  const bin = execFileSync("sh", ["-c", "command -v docker-compose"], { encoding: "utf8" }).trim();
  const shebang = readFileSync(realpathSync(bin), "utf8").split("\n")[0] ?? "";
  const python = shebang.startsWith("#!") ? shebang.slice(2).trim().split(/\s+/) : ["python3"];
  const json = execFileSync(
    python[0] as string,
    [
      ...python.slice(1),
      "-c",
      "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)",
    ],
    { input: yaml, encoding: "utf8" },
  );
  return JSON.parse(json);
}

/** Dockerfile instructions in order, continuation lines joined, comments dropped. */
function dockerfile(): { op: string; args: string }[] {
  const text = readFileSync(path.join(root, "Dockerfile"), "utf8").replace(/\\\n/g, " ");
  return text
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "" && !l.startsWith("#"))
    .map((l) => {
      const [op = "", ...rest] = l.split(/\s+/);
      return { op: op.toUpperCase(), args: rest.join(" ") };
    });
}

describe("docker-compose.yml", () => {
  it("passes docker-compose config -q", () => {
    // Throws (and so fails) on a non-zero exit, with docker-compose's message.
    execFileSync("docker-compose", ["-f", "docker-compose.yml", "config", "-q"], {
      cwd: root,
      stdio: ["ignore", "pipe", "pipe"],
    });
  });

  it("runs Redis with AOF and noeviction, and api and worker against it", () => {
    const { services, volumes } = composeConfig();
    expect(Object.keys(services).sort()).toEqual([
      "api",
      "jaeger",
      "otel-collector",
      "redis",
      "worker",
    ]);
    const redis = services.redis as ComposeService;
    expect(redis.image).toMatch(/^redis:7/);
    expect(redis.command?.join(" ")).toContain("--appendonly yes");
    expect(redis.command?.join(" ")).toContain("--maxmemory-policy noeviction");
    expect(redis.volumes?.some((v) => v.endsWith(":/data:rw") || v.endsWith(":/data"))).toBe(true);
    expect(redis.healthcheck?.test).toContain("ping");

    for (const name of ["api", "worker"]) {
      const s = services[name] as ComposeService;
      expect(s.build, name).toBeDefined();
      expect(s.command, name).toEqual([name]);
      expect(s.environment?.REDIS_URL, name).toBe("redis://redis:6379");
      expect(s.depends_on?.redis?.condition, name).toBe("service_healthy");
      // Both see the same artifact folder: the worker writes, the API serves.
      expect(s.environment?.ARTIFACT_DIR, name).toBe("/data/artifacts");
      expect(
        s.volumes?.some((v) => v.startsWith("artifacts:/data/artifacts")),
        name,
      ).toBe(true);
    }
    const api = services.api as ComposeService;
    expect(api.environment?.HOST).toBe("0.0.0.0");
    // Published on the host's loopback only: without API_KEYS the API runs open (ALLOW_UNAUTHENTICATED).
    expect(api.ports).toEqual(["127.0.0.1:8080:8080/tcp"]);
    expect(api.environment?.ALLOW_UNAUTHENTICATED).toBe("true");
    expect(Object.keys(volumes).sort()).toEqual(["artifacts", "redis-data"]);
  });

  it("sends api and worker telemetry to a collector that forwards traces to Jaeger", () => {
    const { services } = composeConfig();
    const names = new Set<string>();
    for (const name of ["api", "worker"]) {
      const env = (services[name] as ComposeService).environment ?? {};
      expect(env.OTEL_EXPORTER_OTLP_ENDPOINT, name).toBe("http://otel-collector:4318");
      expect(env.OTEL_SERVICE_NAME, name).toMatch(/^report-jobs-/);
      names.add(env.OTEL_SERVICE_NAME as string);
    }
    expect(names.size, "api and worker report under different service names").toBe(2);

    const collector = services["otel-collector"] as ComposeService;
    const jaeger = services.jaeger as ComposeService;
    // Pinned images: a tag, and not "latest".
    expect(collector.image).toMatch(/^otel\/opentelemetry-collector-contrib:\d+\.\d+\.\d+$/);
    expect(jaeger.image).toMatch(/^jaegertracing\/all-in-one:\d+\.\d+\.\d+$/);
    const target = (p: NonNullable<ComposeService["ports"]>[number]) =>
      Number(typeof p === "string" ? p.split(":").pop() : p.target);
    expect(jaeger.ports?.some((p) => target(p) === 16686)).toBe(true);
    expect(collector.ports?.some((p) => target(p) === 4318)).toBe(true);

    // The collector reads the config file from this repository.
    const mount = collector.volumes?.find((v) => v.includes(":/etc/otelcol-contrib/config.yaml"));
    expect(mount, "the collector mounts its config file").toBeDefined();
    const hostPath = (mount as string).split(":")[0] as string;
    expect(collector.command?.join(" ")).toContain("--config=/etc/otelcol-contrib/config.yaml");
    const file = path.resolve(root, hostPath);
    expect(existsSync(file), file).toBe(true);

    interface CollectorConfig {
      receivers?: Record<string, { protocols?: Record<string, { endpoint?: string }> } | null>;
      exporters?: Record<string, { endpoint?: string } | null>;
      service?: {
        pipelines?: Record<string, { receivers?: string[]; exporters?: string[] }>;
      };
    }
    const config = yamlToJson(readFileSync(file, "utf8")) as CollectorConfig;
    // OTLP over gRPC and HTTP, on addresses other containers can reach.
    const otlp = config.receivers?.otlp?.protocols ?? {};
    expect(otlp.http?.endpoint).toBe("0.0.0.0:4318");
    expect(otlp.grpc?.endpoint).toBe("0.0.0.0:4317");
    // An OTLP exporter aimed at the jaeger service...
    const toJaeger = Object.entries(config.exporters ?? {}).find(
      ([name, e]) =>
        /^otlp(http)?(\/|$)/.test(name) &&
        /^(https?:\/\/)?jaeger:43(17|18)/.test(e?.endpoint ?? ""),
    )?.[0];
    expect(toJaeger, "an OTLP exporter to jaeger").toBeDefined();
    // ...fed by the OTLP receiver in a traces pipeline.
    const pipelines = Object.entries(config.service?.pipelines ?? {});
    expect(
      pipelines.some(
        ([name, p]) =>
          /^traces(\/|$)/.test(name) &&
          (p.receivers ?? []).includes("otlp") &&
          (p.exporters ?? []).includes(toJaeger as string),
      ),
      "a traces pipeline from the otlp receiver to the Jaeger exporter",
    ).toBe(true);
  });
});

describe("Dockerfile", () => {
  const ops = dockerfile();
  const one = (op: string) => ops.filter((o) => o.op === op).at(-1)?.args ?? "";

  it("builds on node:20-bookworm-slim, copies what exists and runs as a non-root user", () => {
    expect(one("FROM")).toBe("node:20-bookworm-slim");
    expect(one("EXPOSE")).toBe("8080");
    expect(one("USER")).not.toMatch(/^(root|0)?$/);
    const ignored = readFileSync(path.join(root, ".dockerignore"), "utf8")
      .split("\n")
      .map((l) => l.trim())
      .filter((l) => l !== "" && !l.startsWith("#"));
    // COPY --from takes files from the build stage, not from this folder.
    for (const copy of ops.filter((o) => o.op === "COPY" && !o.args.startsWith("--from="))) {
      const sources = copy.args.split(/\s+/).slice(0, -1);
      for (const src of sources) {
        expect(existsSync(path.join(root, src)), `COPY ${src}`).toBe(true);
        expect(ignored, `COPY ${src} is excluded by .dockerignore`).not.toContain(src);
      }
    }
    const entry = JSON.parse(one("ENTRYPOINT")) as string[];
    expect(entry[0]).toBe("node_modules/.bin/tsx");
    // Every file the entrypoint names (the telemetry preload, src/main.ts) is in the image.
    for (const file of entry.slice(1).filter((a) => a.endsWith(".ts"))) {
      expect(existsSync(path.join(root, file)), file).toBe(true);
    }
    expect(entry.at(-1)).toBe("src/main.ts");
  });

  it("builds the browser app in a stage of its own and ships only its output", () => {
    const stage = ops.findIndex((o) => o.op === "FROM" && /\bAS web$/i.test(o.args));
    expect(stage, "a FROM ... AS web stage").toBeGreaterThanOrEqual(0);
    const runtime = ops.findLastIndex((o) => o.op === "FROM");
    const webOps = ops.slice(stage, runtime);
    expect(webOps.some((o) => o.op === "RUN" && o.args.includes("scripts/build-web.mjs"))).toBe(
      true,
    );
    const shipped = ops
      .slice(runtime)
      .find((o) => o.op === "COPY" && o.args.startsWith("--from=web"));
    expect(shipped?.args).toMatch(/\/web\/dist \.\/web\/dist$/);
  });

  it("checks the worker's readiness on its metrics port", () => {
    const worker = composeConfig().services.worker as ComposeService & {
      healthcheck?: { test?: string[]; disable?: boolean };
    };
    expect(worker.healthcheck?.disable).toBeFalsy();
    expect(worker.healthcheck?.test?.join(" ")).toContain("http://127.0.0.1:9464/readyz");
  });

  describe("its entrypoint and health check", () => {
    let child: ChildProcess | undefined;
    afterEach(() => {
      if (child && child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    });

    it("serves /healthz in api mode, passes the health check, and exits 0 on SIGTERM", async () => {
      const health = JSON.parse(one("HEALTHCHECK").replace(/^.*?CMD\s+/, "")) as string[];
      expect(health.slice(0, 2)).toEqual(["node", "-e"]);
      const probe = (port: number) => {
        try {
          execFileSync("node", ["-e", health[2] as string], {
            env: { PATH: process.env.PATH ?? "", PORT: String(port) },
            stdio: "ignore",
            timeout: 10_000,
          });
          return true;
        } catch {
          return false;
        }
      };
      const port = await freePort();
      // Nothing listens yet: the check must fail, or it could never see a dead API.
      expect(probe(port)).toBe(false);

      const entry = JSON.parse(one("ENTRYPOINT")) as string[];
      const c = spawn(entry[0] as string, [...entry.slice(1), "api"], {
        cwd: root,
        env: { PATH: process.env.PATH ?? "", ...testEnv({ PORT: String(port) }) },
        stdio: ["ignore", "ignore", "pipe"],
      });
      child = c;
      let stderr = "";
      c.stderr?.on("data", (d: Buffer) => {
        stderr += d.toString();
      });
      const exited = new Promise<number | null>((resolve) =>
        c.once("exit", (code) => resolve(code)),
      );
      const outcome = await waitFor(
        () => (c.exitCode !== null || c.signalCode !== null ? "exited" : probe(port) && "healthy"),
        { timeoutMs: 20_000, what: "the health check to pass" },
      );
      expect(outcome, `service stderr: ${stderr}`).toBe("healthy");
      c.kill("SIGTERM");
      expect(await exited).toBe(0);
    });
  });
});
