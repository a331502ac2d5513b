/** Types of scripts/lockfile.mjs, for the tests. */

/** package-lock.json (lockfileVersion 2 or 3), as far as the checks read it. */
export interface Lockfile {
  lockfileVersion?: number;
  packages?: Record<string, Record<string, unknown>>;
}
/** The registry every package must come from. */
export declare const registry: string;
/** Every installed package of a lockfile: its path, real name and entry. */
export declare function lockPackages(
  lock: Lockfile,
): Array<{ path: string; name: string; entry: Record<string, unknown> }>;
/** The registry's tarball URL of name@version. */
export declare function tarballUrl(name: string, version: string): string;
/** Every problem of the lockfile against package.json, one sentence each. */
export declare function lockfileProblems(lock: Lockfile, pkg: Record<string, unknown>): string[];
