/** Types of scripts/test-prereqs.mjs, for the tests. */

/** A program the tests run: a file at `path`, or a `command` on the PATH. */
export interface Prerequisite {
  path?: string;
  command?: string;
  /** The Debian package that provides it. */
  aptPackage: string;
  /** Which tests need it, for the line that says it is missing. */
  why: string;
}

/** What the decision depends on. */
export interface MachineFacts {
  isRoot: boolean;
  hasSudo: boolean;
  hasAptGet: boolean;
  /** Standard input is a terminal (sudo may ask for a password). */
  interactive: boolean;
}

/** What to do about the missing prerequisites. */
export type Plan =
  | { action: "none" }
  | { action: "fail"; message: string }
  | {
      action: "install";
      packages: string[];
      message: string;
      /** Run in order; any non-zero exit stops. */
      commands: string[][];
      /** The command to suggest when installing fails. */
      retry: string;
    };

/** The machine as ensurePrerequisites() sees it; tests pass fakes. */
export interface Machine {
  prerequisites: ReadonlyArray<Prerequisite>;
  isExecutable(file: string): boolean;
  onPath(command: string): boolean;
  isRoot: boolean;
  interactive: boolean;
  /** Runs a command with inherited output; its exit status. */
  run(command: string[]): number;
  log(line: string): void;
  error(line: string): void;
}

/** What the tests run, and the Debian package of each. */
export declare const prerequisites: ReadonlyArray<Prerequisite>;
/** Decides what to do about the missing prerequisites (pure). */
export declare function planInstall(
  missing: ReadonlyArray<Prerequisite>,
  machine: MachineFacts,
): Plan;
/** Checks, installs what it can, says what happened; the exit code. */
export declare function ensurePrerequisites(overrides?: Partial<Machine>): number;
