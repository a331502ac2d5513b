/**
 * What package-lock.json must hold for `npm ci` to install exactly what was
 * reviewed. `npm ci` already refuses a lockfile out of sync with package.json's
 * ranges and checks every tarball against the lockfile's hash; these checks
 * close what it lets through:
 *
 * - every package comes from the npm registry by name and version: no git,
 *   tarball-URL or file sources, and a `resolved` URL, when there is one, is
 *   the registry's own tarball of that very name and version (this machine's
 *   npm writes none: `omit-lockfile-registry-resolved`);
 * - every package has a sha512 integrity (not sha1, not missing);
 * - package.json pins exact versions (dependencies and overrides), the
 *   lockfile's root lists the same, and installs those versions.
 *
 * Install scripts need no check here: npm skips every one that package.json's
 * `allowScripts` does not approve.
 */

/** The registry every package must come from. */
export const registry = "https://registry.npmjs.org/";

const exactVersion = /^\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$/;
const dependencyFields = ["dependencies", "devDependencies", "optionalDependencies"];

/**
 * Every installed package of a lockfile: its path, real name and entry.
 * @param {{ packages?: Record<string, Record<string, unknown>> }} lock
 * @returns {Array<{ path: string, name: string, entry: Record<string, unknown> }>}
 */
export function lockPackages(lock) {
  return Object.entries(lock.packages ?? {})
    .filter(([key]) => key !== "")
    .map(([key, entry]) => ({
      path: key,
      // An alias (`"x": "npm:y@1"`) installs y under node_modules/x: `name` says y.
      name:
        typeof entry.name === "string"
          ? entry.name
          : key.slice(key.lastIndexOf("node_modules/") + 13),
      entry,
    }));
}

/** The registry's tarball URL of name@version. */
export function tarballUrl(name, version) {
  const base = name.startsWith("@") ? name.slice(name.indexOf("/") + 1) : name;
  return `${registry}${name}/-/${base}-${version}.tgz`;
}

/** True when `integrity` holds a sha512 hash (64 bytes, base64). */
function hasSha512(integrity) {
  return String(integrity ?? "")
    .split(/\s+/)
    .some((h) => h.startsWith("sha512-") && Buffer.from(h.slice(7), "base64").length === 64);
}

/**
 * Every problem of the lockfile against package.json, one sentence each.
 * @param {{ lockfileVersion?: number, packages?: Record<string, Record<string, unknown>> }} lock
 * @param {Record<string, unknown>} pkg package.json
 * @returns {string[]}
 */
export function lockfileProblems(lock, pkg) {
  if (typeof lock.packages !== "object" || lock.packages === null) {
    return [
      `lockfileVersion ${lock.lockfileVersion ?? "?"} has no "packages": regenerate it with npm 7 or newer`,
    ];
  }
  const problems = [];
  const root = lock.packages[""] ?? {};
  for (const field of dependencyFields) {
    const wanted = pkg[field] ?? {};
    const locked = root[field] ?? {};
    for (const [name, spec] of Object.entries(wanted)) {
      if (!exactVersion.test(String(spec))) {
        problems.push(`package.json ${field}: ${name} is "${spec}", not an exact version`);
        continue;
      }
      if (locked[name] !== spec) {
        problems.push(
          `out of sync with package.json: ${field}.${name} is "${locked[name] ?? "(missing)"}" in the lockfile, "${spec}" in package.json (run npm install)`,
        );
      }
      const installed = lock.packages[`node_modules/${name}`];
      if (installed?.version !== spec) {
        problems.push(
          `node_modules/${name} is locked at ${installed?.version ?? "(nothing)"}, package.json pins ${spec}`,
        );
      }
    }
    for (const name of Object.keys(locked)) {
      if (!(name in wanted)) {
        problems.push(
          `out of sync with package.json: ${field}.${name} is in the lockfile only (run npm install)`,
        );
      }
    }
  }
  for (const [name, spec] of Object.entries(pkg.overrides ?? {})) {
    if (typeof spec !== "string" || !exactVersion.test(spec)) {
      problems.push(
        `package.json overrides: ${name} is ${JSON.stringify(spec)}, not an exact version`,
      );
    }
  }
  for (const { path, name, entry } of lockPackages(lock)) {
    // Bundled packages come inside their parent's tarball, under its hash.
    if (entry.inBundle === true) continue;
    const at = `${path} (${name}@${entry.version ?? "?"})`;
    if (entry.link === true) {
      problems.push(`${at}: a link to ${entry.resolved}, not a package from the registry`);
      continue;
    }
    if (typeof entry.version !== "string" || !exactVersion.test(entry.version)) {
      problems.push(`${at}: no exact version`);
      continue;
    }
    if (entry.resolved !== undefined && entry.resolved !== tarballUrl(name, entry.version)) {
      problems.push(
        `${at}: resolved from ${entry.resolved}, not the registry's ${tarballUrl(name, entry.version)}`,
      );
    }
    if (!hasSha512(entry.integrity)) {
      problems.push(`${at}: no sha512 integrity (${entry.integrity ?? "none"})`);
    }
  }
  return problems;
}
