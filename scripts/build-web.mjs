/**
 * Builds the browser app (web/: index.html, main.ts, style.css) with esbuild
 * into web/dist/: index.html plus content-hashed assets under assets/, which
 * the API serves at / (src/api/static-assets.ts). `npm start` runs it first
 * (prestart); tests call buildWeb().
 *
 *   node scripts/build-web.mjs [--out DIR]
 */
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import * as esbuild from "esbuild";

const webDir = fileURLToPath(new URL("../web/", import.meta.url));

/**
 * Builds the app.
 * @param {{ outDir?: string, minify?: boolean }} [options] - outDir defaults to web/dist.
 * @returns {Promise<{ outDir: string, files: string[] }>} files relative to outDir
 */
export async function buildWeb(options = {}) {
  const outDir = options.outDir ?? path.join(webDir, "dist");
  const assetsDir = path.join(outDir, "assets");
  await rm(outDir, { recursive: true, force: true });
  await mkdir(assetsDir, { recursive: true });
  const result = await esbuild.build({
    entryPoints: { app: path.join(webDir, "main.ts") },
    outdir: assetsDir,
    entryNames: "[name]-[hash]",
    bundle: true,
    format: "esm",
    target: "es2022",
    platform: "browser",
    sourcemap: "linked",
    minify: options.minify ?? true,
    metafile: true,
    logLevel: "warning",
  });
  const outputs = Object.keys(result.metafile.outputs).map((f) => path.resolve(f));
  const js = outputs.find((f) => f.endsWith(".js"));
  const css = outputs.find((f) => f.endsWith(".css"));
  if (js === undefined || css === undefined) throw new Error("esbuild wrote no .js or .css");
  const template = await readFile(path.join(webDir, "index.html"), "utf8");
  const html = template
    .replace("%JS%", `/assets/${path.basename(js)}`)
    .replace("%CSS%", `/assets/${path.basename(css)}`);
  await writeFile(path.join(outDir, "index.html"), html);
  return {
    outDir,
    files: ["index.html", ...outputs.map((f) => path.relative(outDir, f))],
  };
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const at = process.argv.indexOf("--out");
  const outDir = at > 0 ? path.resolve(process.argv[at + 1] ?? "") : undefined;
  const { outDir: dir, files } = await buildWeb({ outDir });
  console.log(
    `built the browser app into ${path.relative(process.cwd(), dir) || "."}: ${files.join(", ")}`,
  );
}
