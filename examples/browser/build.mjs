/**
 * The browser example is the app the API serves at `/` (web/). This builds
 * it, as `npm run build:web` does, into web/dist/ (or `outDir`).
 *
 *   node examples/browser/build.mjs
 */
import path from "node:path";
import { pathToFileURL } from "node:url";
import { buildWeb } from "../../scripts/build-web.mjs";

/**
 * Builds the app.
 * @param {{ outDir?: string }} [options] - outDir defaults to web/dist.
 * @returns {Promise<{ outDir: string }>}
 */
export async function buildExample(options = {}) {
  const { outDir } = await buildWeb(options);
  return { outDir };
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { outDir } = await buildExample();
  console.log(`built ${path.relative(process.cwd(), outDir)}`);
}
