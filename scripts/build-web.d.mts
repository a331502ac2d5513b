/** Types of scripts/build-web.mjs, for the TypeScript tests that import it. */
export declare function buildWeb(options?: {
  outDir?: string;
  minify?: boolean;
}): Promise<{ outDir: string; files: string[] }>;
