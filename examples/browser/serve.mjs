/**
 * A tiny static server for the browser example: index.html at /, the bundle
 * under /dist/. Nothing else is served.
 *
 *   EXAMPLE_PORT=5173 node examples/browser/serve.mjs
 *
 * Tests import startExampleServer() with port 0 and their own dist folder.
 */
import { readFile } from "node:fs/promises";
import http from "node:http";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const types = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".map": "application/json; charset=utf-8",
};

/**
 * Starts serving the example.
 * @param {{ port?: number, host?: string, distDir?: string }} [options] - port 0 picks a free one.
 * @returns {Promise<{ url: string, close(): Promise<void> }>} url is the page's origin, like http://127.0.0.1:5173
 */
export async function startExampleServer(options = {}) {
  const distDir = options.distDir ?? path.join(here, "dist");
  const server = http.createServer(async (req, res) => {
    const { pathname } = new URL(req.url ?? "/", "http://local");
    let file;
    if (pathname === "/" || pathname === "/index.html") file = path.join(here, "index.html");
    else if (/^\/dist\/[\w.-]+$/.test(pathname)) file = path.join(distDir, pathname.slice(6));
    const type = file === undefined ? undefined : types[path.extname(file)];
    const body =
      file === undefined || type === undefined
        ? undefined
        : await readFile(file).catch(() => undefined);
    if (
      body === undefined ||
      type === undefined ||
      (req.method !== "GET" && req.method !== "HEAD")
    ) {
      res.writeHead(404, { "content-type": "text/plain" });
      res.end(
        pathname.startsWith("/dist/")
          ? "not found (run node examples/browser/build.mjs)\n"
          : "not found\n",
      );
      return;
    }
    res.writeHead(200, {
      "content-type": type,
      "content-length": body.length,
      "cache-control": "no-store",
    });
    res.end(req.method === "HEAD" ? undefined : body);
  });
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port ?? 5173, options.host ?? "127.0.0.1", () => {
      server.off("error", reject);
      resolve(undefined);
    });
  });
  const address = /** @type {import("node:net").AddressInfo} */ (server.address());
  return {
    url: `http://${address.address}:${address.port}`,
    close() {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { url } = await startExampleServer({ port: Number(process.env.EXAMPLE_PORT ?? 5173) });
  console.log(`browser example at ${url}/ (API: add ?api=http://127.0.0.1:8080 to change it)`);
}
