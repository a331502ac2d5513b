import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { Code, ConnectError, createContextValues } from "@connectrpc/connect";
import { pino } from "pino";
import { afterAll, describe, expect, it } from "vitest";
import { ReportService } from "../../gen/reports/v1/report_service_pb.js";
import {
  callerTenant,
  createAuthenticator,
  createAuthInterceptor,
  logAuthMode,
  unauthenticatedMessage,
} from "../../src/api/auth.js";
import { kTenant } from "../../src/api/context-keys.js";
import { toConnectError } from "../../src/api/error-map.js";
import { hashApiKey, isLoopbackHost } from "../../src/config/api-keys.js";
import { ConfigError, loadConfig } from "../../src/config/config.js";

const key1 = "k1-0123456789abcdef";
const key2 = "k2-0123456789abcdef";

function problems(env: Record<string, string>): string[] {
  try {
    loadConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  return [];
}

describe("API key configuration", () => {
  const dir = mkdtempSync(path.join(tmpdir(), "api-keys-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("reads API_KEYS as tenant:key pairs, keeping only digests, several keys per tenant", () => {
    const c = loadConfig({ API_KEYS: `acme:${key1}, acme:${key2} ,globex:${key1}x` });
    expect(c.auth.apiKeys).toEqual([
      { tenant: "acme", sha256: hashApiKey(key1) },
      { tenant: "acme", sha256: hashApiKey(key2) },
      { tenant: "globex", sha256: hashApiKey(`${key1}x`) },
    ]);
    expect(JSON.stringify(c)).not.toContain(key1);
  });

  it("reads API_KEYS_FILE (tenant sha256hex per line, comments and blank lines allowed)", () => {
    const file = path.join(dir, "keys");
    writeFileSync(
      file,
      `# keys\n\nacme ${hashApiKey(key1)}\n  globex   ${hashApiKey(key2).toUpperCase()}  \n`,
    );
    const c = loadConfig({ API_KEYS_FILE: file });
    expect(c.auth.apiKeys).toEqual([
      { tenant: "acme", sha256: hashApiKey(key1) },
      { tenant: "globex", sha256: hashApiKey(key2) },
    ]);
  });

  it("reports every bad line once, never echoing a key", () => {
    const file = path.join(dir, "bad");
    writeFileSync(file, `acme ${hashApiKey(key1)}\nacme short\nno:colon ${hashApiKey(key1)}\nok\n`);
    const p = problems({
      API_KEYS_FILE: file,
      API_KEYS: `acme:${key1},nocolon,b d:${key2},t:short`,
    });
    expect(p).toEqual([
      "API_KEYS: entry 2 must be tenant:key with a tenant of 1-64 characters of A-Z a-z 0-9 _ . -",
      "API_KEYS: entry 3 must be tenant:key with a tenant of 1-64 characters of A-Z a-z 0-9 _ . -",
      "API_KEYS: the key of entry 4 (tenant t) must be 16-512 printable ASCII characters without spaces or commas",
      `API_KEYS_FILE: ${file} line 2 must be "<tenant> <sha256 hex of the key>" (tenant: 1-64 of A-Z a-z 0-9 _ . -; digest: 64 hex digits)`,
      `API_KEYS_FILE: ${file} line 3 must be "<tenant> <sha256 hex of the key>" (tenant: 1-64 of A-Z a-z 0-9 _ . -; digest: 64 hex digits)`,
      `API_KEYS_FILE: ${file} line 4 must be "<tenant> <sha256 hex of the key>" (tenant: 1-64 of A-Z a-z 0-9 _ . -; digest: 64 hex digits)`,
    ]);
    expect(p.join("\n")).not.toContain(key2);
    expect(problems({ API_KEYS_FILE: path.join(dir, "missing") })).toEqual([
      `API_KEYS_FILE: cannot read ${path.join(dir, "missing")} (ENOENT)`,
    ]);
    writeFileSync(path.join(dir, "empty"), "# nothing\n");
    expect(problems({ API_KEYS_FILE: path.join(dir, "empty") })).toEqual([
      `API_KEYS_FILE: ${path.join(dir, "empty")} lists no keys`,
    ]);
  });

  it("refuses to serve without keys on a non-loopback HOST unless ALLOW_UNAUTHENTICATED=true", () => {
    expect(problems({ HOST: "0.0.0.0" })).toEqual([
      "API_KEYS: no API keys configured and HOST=0.0.0.0 is not a loopback address; set API_KEYS or API_KEYS_FILE (or ALLOW_UNAUTHENTICATED=true to serve without authentication)",
    ]);
    expect(problems({ HOST: "0.0.0.0", ALLOW_UNAUTHENTICATED: "true" })).toEqual([]);
    expect(problems({ HOST: "0.0.0.0", API_KEYS: `a:${key1}` })).toEqual([]);
    // A worker serves nothing.
    expect(() => loadConfig({ HOST: "0.0.0.0" }, "worker")).not.toThrow();
    for (const host of ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost"]) {
      expect(isLoopbackHost(host), host).toBe(true);
      expect(problems({ HOST: host })).toEqual([]);
    }
    for (const host of ["0.0.0.0", "::", "10.0.0.1", "example.com", "128.0.0.1"])
      expect(isLoopbackHost(host), host).toBe(false);
  });

  it("defaults the auth exemptions to health and reflection, and reads AUTH_EXEMPT_SERVICES", () => {
    expect(loadConfig({}).auth.exemptServices).toEqual([
      "grpc.health.v1.Health",
      "grpc.reflection.v1.ServerReflection",
      "grpc.reflection.v1alpha.ServerReflection",
    ]);
    expect(loadConfig({ AUTH_EXEMPT_SERVICES: "a.B" }).auth.exemptServices).toEqual(["a.B"]);
    expect(loadConfig({ AUTH_EXEMPT_SERVICES: "" }).auth.exemptServices).toEqual([]);
    expect(problems({ AUTH_EXEMPT_SERVICES: "nodots" })).toHaveLength(1);
  });
});

describe("createAuthenticator()", () => {
  const auth = createAuthenticator([
    { tenant: "acme", sha256: hashApiKey(key1) },
    { tenant: "acme", sha256: hashApiKey(key2) },
    { tenant: "globex", sha256: hashApiKey(`${key1}x`) },
  ]);
  /** The ConnectError a refused header becomes (auth throws the domain error; error-map maps it). */
  const failure = (header: string | null) => {
    try {
      auth.tenantOf(header);
    } catch (err) {
      return toConnectError(err, pino({ enabled: false }));
    }
    throw new Error("expected a failure");
  };

  it("maps each key to its tenant", () => {
    expect(auth.tenantOf(`Bearer ${key1}`)).toBe("acme");
    expect(auth.tenantOf(`bearer ${key2}`)).toBe("acme");
    expect(auth.tenantOf(`Bearer ${key1}x`)).toBe("globex");
  });

  it("answers missing, malformed and wrong keys identically", () => {
    const answers = [
      null,
      "",
      "Bearer",
      `Basic ${key1}`,
      `Bearer ${key1}y`,
      `Bearer  ${key1.slice(1)}`,
      key1,
    ].map(failure);
    for (const e of answers) {
      expect(e.code).toBe(Code.Unauthenticated);
      expect(e.rawMessage).toBe(unauthenticatedMessage);
      expect(e.metadata.get("www-authenticate")).toMatch(/^Bearer /);
    }
  });

  it("is open (tenant default) with no keys, whatever the header", () => {
    const open = createAuthenticator([]);
    expect(open.enabled).toBe(false);
    expect(open.tenantOf(null)).toBe("default");
    expect(open.tenantOf(`Bearer ${key1}`)).toBe("default");
  });
});

describe("createAuthInterceptor()", () => {
  const auth = createAuthenticator([{ tenant: "acme", sha256: hashApiKey(key1) }]);
  const interceptor = createAuthInterceptor(
    auth,
    ["grpc.health.v1.Health"],
    pino({ enabled: false }),
  );
  const call = (typeName: string, authorization?: string) => {
    const contextValues = createContextValues();
    const header = new Headers(authorization ? { authorization } : {});
    const req = { service: { typeName }, header, contextValues } as unknown as Parameters<
      ReturnType<typeof interceptor>
    >[0];
    return interceptor(async () => {
      return { tenant: contextValues.get(kTenant) } as never;
    })(req) as Promise<unknown>;
  };

  it("sets the tenant of the key", async () => {
    await expect(call(ReportService.typeName, `Bearer ${key1}`)).resolves.toEqual({
      tenant: "acme",
    });
  });

  it("refuses RPCs without a key, except those of exempt services", async () => {
    const refused = await call(ReportService.typeName).then(
      () => undefined,
      (err: unknown) => err,
    );
    // A ConnectError already, with its header: the interceptors before this one see only those.
    expect(refused).toBeInstanceOf(ConnectError);
    expect(refused).toMatchObject({
      code: Code.Unauthenticated,
      rawMessage: unauthenticatedMessage,
    });
    expect((refused as ConnectError).metadata.get("www-authenticate")).toMatch(/^Bearer /);
    await expect(call("grpc.health.v1.Health")).resolves.toEqual({ tenant: "default" });
    await expect(call("grpc.reflection.v1.ServerReflection")).rejects.toMatchObject({
      code: Code.Unauthenticated,
    });
  });
});

describe("callerTenant()", () => {
  it("fails closed when authentication did not run, even with a tenant set", () => {
    const values = createContextValues().set(kTenant, "default");
    expect(() => callerTenant(values)).toThrow(unauthenticatedMessage);
  });

  it("returns the tenant the interceptor set", async () => {
    const auth = createAuthenticator([{ tenant: "acme", sha256: hashApiKey(key1) }]);
    const contextValues = createContextValues();
    const req = {
      service: { typeName: ReportService.typeName },
      header: new Headers({ authorization: `Bearer ${key1}` }),
      contextValues,
    } as unknown as Parameters<ReturnType<ReturnType<typeof createAuthInterceptor>>>[0];
    await createAuthInterceptor(auth, [], pino({ enabled: false }))(async () => ({}) as never)(req);
    expect(callerTenant(contextValues)).toBe("acme");
  });
});

describe("limits and download settings", () => {
  it("has secure defaults and reads overrides", () => {
    const d = loadConfig({});
    expect(d).toMatchObject({
      auth: { apiKeys: [], allowUnauthenticated: false },
      api: { downloadUrlTtlMs: 3600_000 },
      limits: { tenantSubmitRate: 0, tenantSubmitBurst: 1, tenantMaxWatches: 10_000 },
    });
    expect(d.auth.downloadUrlSecret).toBeUndefined();
    const c = loadConfig({
      DOWNLOAD_URL_SECRET: "s".repeat(32),
      DOWNLOAD_URL_TTL_SECONDS: "60",
      TENANT_SUBMIT_RATE: "2.5",
      TENANT_MAX_WATCHES: "0",
    });
    expect(c).toMatchObject({
      auth: { downloadUrlSecret: "s".repeat(32) },
      api: { downloadUrlTtlMs: 60_000 },
      limits: { tenantSubmitRate: 2.5, tenantSubmitBurst: 3, tenantMaxWatches: 0 },
    });
    expect(
      loadConfig({ TENANT_SUBMIT_RATE: "1", TENANT_SUBMIT_BURST: "20" }).limits.tenantSubmitBurst,
    ).toBe(20);
  });

  it("reports bad values one line each, never echoing the secret", () => {
    const p = problems({
      DOWNLOAD_URL_SECRET: "short-secret",
      TENANT_SUBMIT_RATE: "-1",
      TENANT_SUBMIT_BURST: "0",
      ALLOW_UNAUTHENTICATED: "maybe",
    });
    expect(p).toEqual([
      'ALLOW_UNAUTHENTICATED: must be true or false (got "maybe")',
      "DOWNLOAD_URL_SECRET: must be at least 32 characters",
      'TENANT_SUBMIT_RATE: must be a number from 0 to 1000000 (got "-1")',
      'TENANT_SUBMIT_BURST: must be an integer from 1 to 1000000 (got "0")',
    ]);
    expect(p.join("\n")).not.toContain("short-secret");
  });
});

describe("logAuthMode()", () => {
  const lines = (env: Record<string, string>) => {
    const out: Array<{ level: number; msg: string }> = [];
    const logger = pino({ level: "info" }, { write: (s: string) => out.push(JSON.parse(s)) });
    logAuthMode(loadConfig(env), logger);
    return out.map((l) => [l.level, l.msg] as const);
  };

  it("says once how callers are authenticated", () => {
    expect(lines({})).toEqual([
      [
        30,
        'no API keys configured: serving without authentication on loopback (127.0.0.1); every caller is tenant "default"',
      ],
    ]);
    const open = lines({ HOST: "0.0.0.0", ALLOW_UNAUTHENTICATED: "true" });
    expect(open).toHaveLength(1);
    expect(open[0]?.[0]).toBe(40);
    expect(open[0]?.[1]).toMatch(
      /^ALLOW_UNAUTHENTICATED=true: serving WITHOUT AUTHENTICATION on 0\.0\.0\.0/,
    );
  });

  it("warns about a per-process download secret only when keys are configured", () => {
    const keyed = lines({ API_KEYS: `a:${key1}` });
    expect(keyed.map(([level]) => level)).toEqual([30, 40]);
    expect(keyed[1]?.[1]).toMatch(/^DOWNLOAD_URL_SECRET is not set/);
    expect(lines({ API_KEYS: `a:${key1}`, DOWNLOAD_URL_SECRET: "s".repeat(32) })).toHaveLength(1);
  });
});
