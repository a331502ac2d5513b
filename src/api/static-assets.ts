/**
 * Serves the browser app (web/, built by scripts/build-web.mjs into
 * web/dist/) at `/`: `index.html` (revalidated on every load, so a new build
 * shows at once) and `/assets/<name>-<hash>.<ext>` (content-hashed, cached for
 * a year as immutable). Public: no API key is needed to load the page; the
 * page's own calls carry the key. Only flat file names under assets/ are
 * served, so no path can leave the folder.
 */
import { stat } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { NodeRequest, NodeResponse } from "./node-types.js";
import { sendFile } from "./send-file.js";

/** Where `npm run build:web` (and `npm start`'s prestart) puts the app. */
export const defaultWebDir = fileURLToPath(new URL("../../web/dist/", import.meta.url));

const contentTypes: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".map": "application/json; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".woff2": "font/woff2",
};

const assetName = /^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9]+)+$/;

/**
 * Creates the static handler for the app in `dir`. It returns false for
 * paths that are not the app's (the caller goes on routing), true once it
 * has answered.
 */
export function createStaticAssets(
  dir: string = defaultWebDir,
): (req: NodeRequest, res: NodeResponse, pathname: string) => Promise<boolean> {
  const root = path.resolve(dir);
  return async (req, res, pathname) => {
    const method = req.method ?? "GET";
    let file: string;
    let folder = root;
    let immutable: boolean;
    if (pathname === "/" || pathname === "/index.html") {
      file = path.join(root, "index.html");
      immutable = false;
    } else if (pathname.startsWith("/assets/")) {
      const name = pathname.slice("/assets/".length);
      if (!assetName.test(name)) return notFound(res);
      folder = path.join(root, "assets");
      file = path.join(folder, name);
      immutable = true;
    } else {
      return false;
    }
    if (method !== "GET" && method !== "HEAD") {
      res.writeHead(405, { allow: "GET, HEAD", "content-type": "text/plain; charset=utf-8" });
      res.end("method not allowed\n");
      return true;
    }
    const type = contentTypes[path.extname(file)];
    if (type === undefined || path.dirname(file) !== folder) return notFound(res);
    const info = await stat(file).catch(() => undefined);
    if (info === undefined || !info.isFile()) {
      if (!immutable) {
        res.writeHead(503, {
          "content-type": "text/plain; charset=utf-8",
          "cache-control": "no-store",
        });
        res.end(
          "The browser app is not built. Run `npm run build:web` (npm start does it first), then reload.\n" +
            "The API itself works: see README.md.\n",
        );
        return true;
      }
      return notFound(res);
    }
    const etag = `"${info.size.toString(16)}-${Math.floor(info.mtimeMs).toString(16)}"`;
    const headers: Record<string, string | number> = {
      "content-type": type,
      etag,
      "x-content-type-options": "nosniff",
      "cache-control": immutable ? "public, max-age=31536000, immutable" : "no-cache",
    };
    if (req.headers["if-none-match"] === etag) {
      res.writeHead(304, headers);
      res.end();
      return true;
    }
    res.writeHead(200, { ...headers, "content-length": info.size });
    if (method === "HEAD") {
      res.end();
      return true;
    }
    await sendFile(res, file);
    return true;
  };
}

function notFound(res: NodeResponse): true {
  res.writeHead(404, { "content-type": "text/plain; charset=utf-8" });
  res.end("not found\n");
  return true;
}
