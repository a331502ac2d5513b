/**
 * Bundles the browser example (main.ts and what it imports: the generated
 * stubs, @connectrpc/connect-web, @bufbuild/protobuf) into dist/main.js.
 *
 *   node examples/browser/build.mjs
 *
 * Tests import buildExample() and bundle into a folder of their own.
 */
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import * as esbuild from "esbuild";

const here = path.dirname(fileURLToPath(import.meta.url));

/**
 * Builds the bundle.
 * @param {{ outDir?: string, minify?: boolean }} [options] - outDir defaults to examples/browser/dist.
 * @returns {Promise<{ outFile: string }>}
 */
export async function buildExample(options = {}) {
  const outFile = path.join(options.outDir ?? path.join(here, "dist"), "main.js");
  await esbuild.build({
    entryPoints: [path.join(here, "main.ts")],
    outfile: outFile,
    bundle: true,
    format: "esm",
    target: "es2022",
    platform: "browser",
    sourcemap: true,
    minify: options.minify ?? false,
    logLevel: "warning",
  });
  return { outFile };
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { outFile } = await buildExample();
  console.log(`built ${path.relative(process.cwd(), outFile)}`);
}
