/**
 * Debian's Chromium for the browser tests, driven by playwright-core: never a
 * browser playwright downloads. `npm test` installs it first when it is missing
 * (scripts/test-prereqs.mjs); a test file run alone says what to install.
 */
import { existsSync } from "node:fs";
import { type Browser, chromium } from "playwright-core";
import { prerequisites } from "../../scripts/test-prereqs.mjs";

/** Where Debian's chromium package puts the browser (the path test-prereqs checks). */
export const chromiumPath =
  prerequisites.find((p) => p.aptPackage === "chromium")?.path ?? "/usr/bin/chromium";

/** Headless, without a sandbox (root in CI), GPU or background traffic. */
const baseArgs = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"];

/** Launches Debian's Chromium with the base flags plus `extraArgs`. */
export function launchChromium(extraArgs: readonly string[] = []): Promise<Browser> {
  if (!existsSync(chromiumPath)) {
    throw new Error(
      `${chromiumPath} is missing: \`npm test\` installs it (scripts/test-prereqs.mjs), or run \`apt-get install -y chromium\``,
    );
  }
  return chromium.launch({ executablePath: chromiumPath, args: [...baseArgs, ...extraArgs] });
}
