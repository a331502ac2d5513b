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
  ports?: { published?: number | string; target?: number }[];
  healthcheck?: { test?: string[] };
}

/** `docker-compose config` (resolved and normalized) as JSON, via the YAML module docker-compose itself runs on. */
function composeConfig(): { services: Record<string, ComposeService>; volumes: object } {
  const yaml = execFileSync("docker-compose", ["-f", "docker-compose.yml", "config"], {
    cwd: root,
    encoding: "utf8",
    env: { PATH: process.env.PATH ?? "" },
  });
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
    expect(Object.keys(services).sort()).toEqual(["api", "redis", "worker"]);
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
    expect(api.ports?.some((p) => Number(p.target) === 8080)).toBe(true);
    expect(Object.keys(volumes).sort()).toEqual(["artifacts", "redis-data"]);
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
    for (const copy of ops.filter((o) => o.op === "COPY")) {
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
