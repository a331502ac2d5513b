/**
 * Serves the built browser app (web/dist) from another origin than the API,
 * the way a separate web host would: the page then calls the API through
 * CORS. `/` without `?api=` redirects to `/?api=<EXAMPLE_API>` (default
 * http://127.0.0.1:8080), so the page knows where the API is.
 *
 *   EXAMPLE_PORT=5173 EXAMPLE_API=http://127.0.0.1:8080 node examples/browser/serve.mjs
 *
 * Tests import startExampleServer() with port 0.
 */
import { readFile } from "node:fs/promises";
import http from "node:http";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const defaultDist = fileURLToPath(new URL("../../web/dist/", import.meta.url));
const types = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".map": "application/json; charset=utf-8",
};

/**
 * Starts serving the app.
 * @param {{ port?: number, host?: string, distDir?: string, api?: string }} [options] - port 0 picks a free one.
 * @returns {Promise<{ url: string, close(): Promise<void> }>} url is the page's origin, like http://127.0.0.1:5173
 */
export async function startExampleServer(options = {}) {
  const distDir = options.distDir ?? defaultDist;
  const api = options.api ?? process.env.EXAMPLE_API ?? "http://127.0.0.1:8080";
  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url ?? "/", "http://local");
    const { pathname } = url;
    if (pathname === "/" && !url.searchParams.has("api")) {
      res.writeHead(302, { location: `/?api=${encodeURIComponent(api)}` });
      res.end();
      return;
    }
    let file;
    if (pathname === "/" || pathname === "/index.html") file = path.join(distDir, "index.html");
    else if (/^\/assets\/[\w-]+(\.[\w]+)+$/.test(pathname)) file = path.join(distDir, pathname);
    const type = file === undefined ? undefined : types[path.extname(file)];
    const body =
      file === undefined || type === undefined
        ? undefined
        : await readFile(file).catch(() => undefined);
    if (body === undefined || type === undefined) {
      res.writeHead(404, { "content-type": "text/plain" });
      res.end("not found (build the app first: npm run build:web)\n");
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
  console.log(
    `browser app at ${url}/ (API: ${process.env.EXAMPLE_API ?? "http://127.0.0.1:8080"})`,
  );
}
