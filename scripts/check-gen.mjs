// Fails when gen/ differs from what `buf generate` writes from proto/ now.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

const root = path.resolve(import.meta.dirname, "..");
const tmp = mkdtempSync(path.join(tmpdir(), "gen-check-"));
const bin = path.join(root, "node_modules", ".bin");
try {
  const template = readFileSync(path.join(root, "buf.gen.yaml"), "utf8").replace(
    /out: gen/g,
    `out: ${path.join(tmp, "gen")}`,
  );
  writeFileSync(path.join(tmp, "buf.gen.yaml"), template);
  execFileSync(path.join(bin, "buf"), ["generate", "--template", path.join(tmp, "buf.gen.yaml")], {
    cwd: root,
    stdio: "inherit",
    env: { ...process.env, PATH: `${bin}${path.delimiter}${process.env.PATH}` },
  });
  const list = (dir) =>
    readdirSync(dir, { recursive: true, withFileTypes: true })
      .filter((d) => d.isFile())
      .map((d) => path.relative(dir, path.join(d.parentPath, d.name)))
      .sort();
  const fresh = list(path.join(tmp, "gen"));
  const committed = list(path.join(root, "gen"));
  const stale = [
    ...fresh.filter(
      (f) =>
        !committed.includes(f) ||
        readFileSync(path.join(tmp, "gen", f), "utf8") !==
          readFileSync(path.join(root, "gen", f), "utf8"),
    ),
    ...committed.filter((f) => !fresh.includes(f)),
  ];
  if (stale.length > 0) {
    console.error(
      `gen/ is stale against proto/ (${stale.join(", ")}): run \`npm run generate\` and commit.`,
    );
    process.exit(1);
  }
  console.log("gen/ is up to date with proto/");
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
