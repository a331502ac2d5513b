/**
 * What the artifact folder holds, for tests that check which report files
 * exist after attempts ran, lost their lock or were swept.
 */
import { readdir } from "node:fs/promises";
import path from "node:path";

/** Every file under `dir` (recursively), as sorted paths relative to it; [] when `dir` is missing. */
export async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries
    .filter((e) => e.isFile())
    .map((e) => path.relative(dir, path.join(e.parentPath, e.name)))
    .sort();
}
