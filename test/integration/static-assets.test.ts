/**
 * createStaticAssets(): the browser app's files with their content types and
 * caching, conditional GETs, no way out of the folder, and a clear answer
 * when the app is not built. Then the real app serving the real build at `/`.
 */
import { execFile } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readlinkSync, rmSync, writeFileSync } from "node:fs";
import http from "node:http";
import net, { type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildWeb } from "../../scripts/build-web.mjs";
import { createStaticAssets } from "../../src/api/static-assets.js";
import { startTestApp, type TestApp } from "../helpers/test-app.js";
import { waitFor } from "../helpers/wait-for.js";

const run = promisify(execFile);

/** Serves `dir` with createStaticAssets on a free port; 418 for paths it declines. */
async function serve(dir: string): Promise<{ url: string; close(): Promise<void> }> {
  const assets = createStaticAssets(dir);
  const server = http.createServer((req, res) => {
    // The raw path, not URL-normalized: the handler must hold on its own.
    const pathname = (req.url ?? "/").split("?")[0] ?? "/";
    void assets(req, res, pathname).then((handled) => {
      if (!handled) {
        res.writeHead(418);
        res.end();
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** curl with --path-as-is (no ../ squashing): status, headers (lower-case) and body. */
async function curl(args: string[]) {
  const { stdout } = await run("curl", ["-sS", "--path-as-is", "-i", ...args]);
  const [head = "", ...rest] = stdout.split("\r\n\r\n");
  const lines = head.split("\r\n");
  const headers: Record<string, string> = {};
  for (const line of lines.slice(1)) {
    const at = line.indexOf(":");
    headers[line.slice(0, at).toLowerCase()] = line.slice(at + 1).trim();
  }
  return { status: Number(lines[0]?.split(" ")[1]), headers, body: rest.join("\r\n\r\n") };
}

describe("createStaticAssets()", () => {
  let dir: string;
  let site: { url: string; close(): Promise<void> };
  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), "static-assets-"));
    mkdirSync(path.join(dir, "assets"));
    writeFileSync(path.join(dir, "index.html"), "<!doctype html><title>t</title>");
    writeFileSync(path.join(dir, "assets", "app-ABC123.js"), "console.log(1)");
    writeFileSync(path.join(dir, "assets", "app-ABC123.css"), "body{}");
    // Outside assets/: never served under /assets/.
    writeFileSync(path.join(dir, "secret.js"), "top-secret");
    site = await serve(dir);
  });
  afterAll(async () => {
    await site.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("serves index.html at / (revalidated) and hashed assets (immutable)", async () => {
    const index = await curl([`${site.url}/`]);
    expect(index.status).toBe(200);
    expect(index.headers["content-type"]).toBe("text/html; charset=utf-8");
    expect(index.headers["cache-control"]).toBe("no-cache");
    expect(index.body).toContain("<title>t</title>");
    const js = await curl([`${site.url}/assets/app-ABC123.js`]);
    expect(js.headers["content-type"]).toBe("text/javascript; charset=utf-8");
    expect(js.headers["cache-control"]).toBe("public, max-age=31536000, immutable");
    expect(js.headers["x-content-type-options"]).toBe("nosniff");
    const css = await curl([`${site.url}/assets/app-ABC123.css`]);
    expect(css.headers["content-type"]).toBe("text/css; charset=utf-8");
    // A conditional GET with the ETag: 304, no body.
    const again = await curl(["-H", `If-None-Match: ${index.headers.etag}`, `${site.url}/`]);
    expect(again.status).toBe(304);
    expect(again.body).toBe("");
  });

  it("never leaves the folder", async () => {
    for (const p of [
      "/assets/../secret.js",
      "/assets/..%2fsecret.js",
      "/assets/%2e%2e/secret.js",
      "/assets/.hidden.js",
      "/assets/sub/app.js",
      "/assets/../../etc/passwd",
    ]) {
      const res = await curl([`${site.url}${p}`]);
      expect(res.body).not.toContain("top-secret");
      expect(res.body).not.toContain("root:");
      expect([404, 418]).toContain(res.status);
    }
    const post = await curl(["-X", "POST", `${site.url}/`]);
    expect(post.status).toBe(405);
  });

  it("closes the file when the client leaves mid-download", async () => {
    // Larger than the socket and stream buffers, so the file is still being read when the client goes.
    const big = path.join(dir, "assets", "big-ABC123.js");
    writeFileSync(big, "x".repeat(4 * 1024 * 1024));
    const openFds = () =>
      readdirSync("/proc/self/fd").filter((fd) => {
        try {
          return readlinkSync(`/proc/self/fd/${fd}`) === big;
        } catch {
          return false;
        }
      }).length;
    const { port, hostname } = new URL(site.url);
    for (let i = 0; i < 5; i++) {
      await new Promise<void>((resolve, reject) => {
        const socket = net.connect(Number(port), hostname, () =>
          socket.write("GET /assets/big-ABC123.js HTTP/1.1\r\nhost: x\r\n\r\n"),
        );
        socket.on("error", reject);
        // The first bytes of the answer: the file is open and being sent. Then leave.
        socket.once("data", () => {
          socket.destroy();
          resolve();
        });
      });
    }
    await waitFor(() => openFds() === 0, { timeoutMs: 5000 });
  });

  it("answers 503 with what to run when the app is not built", async () => {
    const missing = await serve(path.join(dir, "does-not-exist"));
    try {
      const res = await curl([`${missing.url}/`]);
      expect(res.status).toBe(503);
      expect(res.body).toContain("npm run build:web");
      expect((await curl([`${missing.url}/assets/app-X.js`])).status).toBe(404);
    } finally {
      await missing.close();
    }
  });
});

describe("the API serving the built app", () => {
  let t: TestApp;
  beforeAll(async () => {
    await buildWeb();
    t = await startTestApp();
  }, 60_000);
  afterAll(async () => {
    await t?.close();
  });

  it("serves / and its assets without Connect in the way", async () => {
    const index = await curl([`${t.url}/`]);
    expect(index.status).toBe(200);
    expect(index.body).toContain("<h1>Report jobs</h1>");
    const script = /src="(\/assets\/app-[\w]+\.js)"/.exec(index.body)?.[1];
    const style = /href="(\/assets\/app-[\w]+\.css)"/.exec(index.body)?.[1];
    expect(script).toBeDefined();
    expect(style).toBeDefined();
    const js = await curl([`${t.url}${script}`]);
    expect(js.status).toBe(200);
    expect(js.headers["content-type"]).toBe("text/javascript; charset=utf-8");
    const css = await curl([`${t.url}${style}`]);
    expect(css.headers["content-type"]).toBe("text/css; charset=utf-8");
  });
});
