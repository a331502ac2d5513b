/**
 * The container files: docker-compose.yml must be valid against the Compose
 * Specification's JSON schema, with its `${VAR:-default}`s resolved as Compose
 * would with nothing set, and wire Redis, api and worker as documented; the
 * Dockerfile's entrypoint, health check and copies must match the tree. No
 * Docker is needed: the file is read in JS (test/helpers/compose-file.ts), and
 * `docker compose config` (or `docker-compose config`) runs as an extra check
 * only where one is installed. No Docker engine runs here, so the image's
 * command is run directly instead. The `cluster` profile (a Redis Cluster and
 * the service's API and worker replicas on it, issue 13) is checked apart:
 * the default services must stay as they are.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { parse } from "yaml";
import { freePort } from "../../src/queue/private-redis.js";
import {
  type ComposeConfig,
  type ComposeService,
  composeCli,
  type PortMapping,
  readCompose,
} from "../helpers/compose-file.js";
import { testEnv } from "../helpers/test-app.js";
import { waitFor } from "../helpers/wait-for.js";

const root = fileURLToPath(new URL("../../", import.meta.url));

/**
 * docker-compose.yml resolved and normalized, as `docker-compose config` with
 * no variables set would print it; fails listing every problem.
 */
function composeConfig(): ComposeConfig {
  const text = readFileSync(path.join(root, "docker-compose.yml"), "utf8");
  const { config, problems } = readCompose(text, { env: {}, dir: root });
  expect(problems, "docker-compose.yml problems").toEqual([]);
  return config as ComposeConfig;
}

/** One service as written in the file (merge keys applied, nothing interpolated). */
interface RawService {
  profiles?: string[];
  restart?: string;
  deploy?: { replicas?: number };
  networks?: string[] | Record<string, { ipv4_address?: string } | null>;
}

/** The services as written, for the fields readCompose() does not normalize. */
function rawServices(): Record<string, RawService> {
  const text = readFileSync(path.join(root, "docker-compose.yml"), "utf8");
  return (parse(text, { merge: true }) as { services: Record<string, RawService> }).services;
}

/** Names of the services Compose starts without `--profile`: those without profiles. */
function defaultServices(): string[] {
  return Object.entries(rawServices())
    .filter(([, s]) => (s.profiles ?? []).length === 0)
    .map(([name]) => name)
    .sort();
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
  it("is valid against the Compose Specification schema, every reference resolved", () => {
    // composeConfig() fails listing each YAML, interpolation, schema or reference problem.
    expect(Object.keys(composeConfig().services).length).toBeGreaterThan(0);
  });

  const cli = composeCli();
  it.skipIf(cli === undefined)(
    `passes \`${cli?.join(" ") ?? "docker compose"} config -q\` (skipped: no Compose CLI here)`,
    () => {
      const [file = "", ...args] = cli ?? [];
      // Throws (and so fails) on a non-zero exit, with Compose's message.
      execFileSync(file, [...args, "-f", "docker-compose.yml", "config", "-q"], {
        cwd: root,
        env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "" },
        stdio: ["ignore", "pipe", "pipe"],
      });
    },
  );

  it("runs Redis with AOF and noeviction, and api and worker against it", () => {
    const { services } = composeConfig();
    expect(defaultServices()).toEqual(["api", "jaeger", "otel-collector", "redis", "worker"]);
    const redis = services.redis as ComposeService;
    expect(redis.image).toMatch(/^redis:7/);
    expect(redis.command?.join(" ")).toContain("--appendonly yes");
    expect(redis.command?.join(" ")).toContain("--maxmemory-policy noeviction");
    expect(
      redis.volumes.some((v) => v.type === "volume" && v.target === "/data" && !v.read_only),
    ).toBe(true);
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
        s.volumes.some((v) => v.source === "artifacts" && v.target === "/data/artifacts"),
        name,
      ).toBe(true);
    }
    const api = services.api as ComposeService;
    expect(api.environment?.HOST).toBe("0.0.0.0");
    // Published on the host's loopback only: without API_KEYS the API runs open (ALLOW_UNAUTHENTICATED).
    expect(api.ports).toEqual([
      { host_ip: "127.0.0.1", published: "8080", target: "8080", protocol: "tcp" },
    ]);
    expect(api.environment?.ALLOW_UNAUTHENTICATED).toBe("true");
    const named = defaultServices().flatMap((name) =>
      (services[name] as ComposeService).volumes.flatMap((v) =>
        v.type === "volume" && v.source !== undefined ? [v.source] : [],
      ),
    );
    expect([...new Set(named)].sort()).toEqual(["artifacts", "redis-data"]);
    for (const name of defaultServices()) {
      expect((services[name] as ComposeService).networks, name).toEqual([]);
    }
  });

  it("sends api and worker telemetry to a collector that forwards traces to Jaeger", () => {
    const { services } = composeConfig();
    const names = new Set<string>();
    for (const name of ["api", "worker"]) {
      const env = (services[name] as ComposeService).environment;
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
    const target = (p: PortMapping) => Number(p.target);
    expect(jaeger.ports?.some((p) => target(p) === 16686)).toBe(true);
    expect(collector.ports?.some((p) => target(p) === 4318)).toBe(true);

    // The collector reads the config file from this repository.
    const mount = collector.volumes.find((v) => v.target === "/etc/otelcol-contrib/config.yaml");
    expect(mount?.type, "the collector mounts its config file").toBe("bind");
    const hostPath = mount?.source ?? "";
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
    const config = parse(readFileSync(file, "utf8")) as CollectorConfig;
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

describe("docker-compose.yml cluster profile", () => {
  const nodeNames = [1, 2, 3, 4, 5, 6].map((i) => `redis-cluster-${i}`);
  const appNames = ["api-cluster-1", "api-cluster-2", "worker-cluster"];

  /** A node's fixed address on the redis-cluster network. */
  function addressOf(name: string): string | undefined {
    const networks = rawServices()[name]?.networks;
    return Array.isArray(networks)
      ? undefined
      : (networks?.["redis-cluster"]?.ipv4_address ?? undefined);
  }

  it("puts every cluster service, and only those, in the cluster profile", () => {
    const raw = rawServices();
    const inProfile = Object.keys(raw)
      .filter((name) => (raw[name]?.profiles ?? []).length > 0)
      .sort();
    expect(inProfile).toEqual([...appNames, ...nodeNames, "redis-cluster-create"].sort());
    for (const name of inProfile) expect(raw[name]?.profiles, name).toEqual(["cluster"]);
  });

  it("runs six Redis nodes in cluster mode with AOF (fsync always), noeviction, a volume each and fixed addresses", () => {
    const { services, volumes, networks } = composeConfig();
    const addresses = new Set<string>();
    for (const name of nodeNames) {
      const node = services[name] as ComposeService;
      expect(node.image, name).toMatch(/^redis:7/);
      const command = node.command?.join(" ") ?? "";
      expect(command, name).toContain("--cluster-enabled yes");
      expect(command, name).toContain("--appendonly yes");
      expect(command, name).toContain("--appendfsync always");
      expect(command, name).toContain("--maxmemory-policy noeviction");
      expect(command, name).toMatch(/--cluster-node-timeout \d+/);
      expect(node.healthcheck?.test, name).toContain("ping");
      const data = node.volumes.find((v) => v.target === "/data");
      expect(data, name).toMatchObject({ type: "volume", source: name, read_only: false });
      expect(Object.keys(volumes), name).toContain(name);
      expect(node.networks, name).toEqual(["redis-cluster"]);
      const address = addressOf(name);
      expect(address, name).toMatch(/^172\.28\.13\.\d+$/);
      addresses.add(address as string);
    }
    expect(addresses.size).toBe(nodeNames.length);
    expect(JSON.stringify(networks["redis-cluster"])).toContain("172.28.13.0/24");
  });

  it("creates the cluster in a one-shot job once every node is healthy, and only when not yet created", () => {
    const { services } = composeConfig();
    const create = services["redis-cluster-create"] as ComposeService;
    expect(rawServices()["redis-cluster-create"]?.restart).toBe("no");
    expect(create.image).toMatch(/^redis:7/);
    expect(create.networks).toEqual(["redis-cluster"]);
    expect(Object.keys(create.depends_on).sort()).toEqual([...nodeNames].sort());
    for (const name of nodeNames) {
      expect(create.depends_on[name]?.condition, name).toBe("service_healthy");
    }
    const script = create.command?.join(" ") ?? "";
    // Compose turned each $$ into the $ the shell sees.
    expect(script).not.toContain("$$");
    expect(script).toContain("--cluster create $nodes --cluster-replicas 1 --cluster-yes");
    const listed = /nodes="([^"]+)"/.exec(script)?.[1]?.split(" ") ?? [];
    expect(listed).toEqual(nodeNames.map((n) => `${addressOf(n)}:6379`));
    // Idempotent: a cluster kept in the volumes is not created again; it exits 0 once serving.
    expect(script).toContain("cluster_known_nodes");
    expect(script).toContain("cluster_state:ok");
  });

  it("runs two API and two worker replicas on the cluster, after the create job, with health checks", () => {
    const { services, volumes } = composeConfig();
    const seeds = nodeNames.map((n) => `${n}:6379`).join(",");
    for (const name of appNames) {
      const s = services[name] as ComposeService;
      const mode = name.startsWith("api") ? "api" : "worker";
      expect(s.build, name).toBeDefined();
      expect(s.command, name).toEqual([mode]);
      expect(s.environment.REDIS_CLUSTER_NODES, name).toBe(seeds);
      expect(Number(s.environment.QUEUE_SHARDS), name).toBeGreaterThanOrEqual(2);
      expect(s.environment.REDIS_URL, name).toBeUndefined();
      expect(s.environment.ARTIFACT_DIR, name).toBe("/data/artifacts");
      expect(s.environment.OTEL_EXPORTER_OTLP_ENDPOINT, name).toBe("http://otel-collector:4318");
      expect(s.depends_on, name).toEqual({
        "redis-cluster-create": { condition: "service_completed_successfully" },
        "otel-collector": { condition: "service_started" },
      });
      expect(s.networks.sort(), name).toEqual(["default", "redis-cluster"]);
      // Their own artifact volume: the worker writes, the APIs serve, apart from the single-Redis stack.
      expect(s.volumes, name).toEqual([
        {
          type: "volume",
          source: "cluster-artifacts",
          target: "/data/artifacts",
          read_only: false,
        },
      ]);
      // The image's check (API) or the readiness route on the metrics port (worker).
      expect(s.healthcheck?.disable, name).toBeFalsy();
    }
    expect(Object.keys(volumes)).toContain("cluster-artifacts");
    const worker = services["worker-cluster"] as ComposeService;
    expect(worker.healthcheck?.test?.join(" ")).toContain("http://127.0.0.1:9464/readyz");
    expect(rawServices()["worker-cluster"]?.deploy?.replicas).toBeGreaterThanOrEqual(2);
    // Two API replicas, each on its own loopback port, neither the single-Redis API's.
    const ports = ["api-cluster-1", "api-cluster-2"].map(
      (n) => (services[n] as ComposeService).ports,
    );
    expect(ports).toEqual([
      [{ host_ip: "127.0.0.1", published: "8081", target: "8080", protocol: "tcp" }],
      [{ host_ip: "127.0.0.1", published: "8082", target: "8080", protocol: "tcp" }],
    ]);
    const envs = ["api-cluster-1", "api-cluster-2"].map(
      (n) => (services[n] as ComposeService).environment,
    );
    expect(envs.map((e) => e.OTEL_SERVICE_NAME)).toEqual(["report-jobs-api", "report-jobs-api"]);
    expect(envs.map((e) => e.PUBLIC_URL)).toEqual([
      "http://localhost:8081",
      "http://localhost:8082",
    ]);
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
    const worker = composeConfig().services.worker as ComposeService;
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
