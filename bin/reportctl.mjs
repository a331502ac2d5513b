#!/usr/bin/env node
// The `reportctl` command (package.json "bin"): runs src/cli/main.ts through
// tsx, the same way `npm start` runs the service, so no build step is needed.
import { register } from "tsx/esm/api";

register();
await import("../src/cli/main.ts");
