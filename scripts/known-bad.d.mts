/** Types of scripts/known-bad.mjs, for the tests. */
import type { Lockfile } from "./lockfile.mjs";

/** security/known-bad.json. */
export interface KnownBadList {
  packages: Array<{ name: string; versions: string[]; reason: string }>;
}
/** Problems of the list itself. */
export declare function knownBadListProblems(list: unknown): string[];
/** The lockfile's packages that the list names, with the list's reason. */
export declare function knownBadFindings(
  lock: Lockfile,
  list: KnownBadList,
): Array<{ path: string; name: string; version: string; reason: string }>;
