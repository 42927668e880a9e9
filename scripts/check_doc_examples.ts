/**
 * `deno task check:docs`: type-check every example in the JSDoc of the published modules,
 * including those marked ```` ```ts ignore ```` (they need a running broker, so `deno test --doc`
 * skips them entirely, type-checking included).
 *
 * The package (deno.json, the lock file, mod.ts, cli.ts and src/) is copied to a temporary
 * directory with `ignore` dropped from the JSDoc fences, line for line, and `deno check
 * --doc-only` runs there; its messages name the same files and lines as the originals.
 *
 * ```sh
 * deno run --allow-read --allow-write --allow-run --allow-env scripts/check_doc_examples.ts
 * ```
 *
 * @module
 */

/** The repository root. */
const ROOT: string = new URL("..", import.meta.url).pathname.replace(/\/$/, "");

/** A JSDoc fence line marked ignore, e.g. `  * ```ts ignore`. */
const IGNORED_FENCE = /^(\s*\*\s*```(?:ts|typescript))\s+ignore\s*$/;

/** The text of a module with every ignored JSDoc fence turned into a checked one. */
export function unignore(text: string): string {
  return text.split("\n").map((line) => line.replace(IGNORED_FENCE, "$1")).join("\n");
}

function copyTree(from: string, to: string, paths: string[]): void {
  Deno.mkdirSync(to, { recursive: true });
  for (const entry of Deno.readDirSync(from)) {
    const src = `${from}/${entry.name}`;
    const dst = `${to}/${entry.name}`;
    if (entry.isDirectory) {
      copyTree(src, dst, paths);
    } else if (entry.name.endsWith(".ts")) {
      Deno.writeTextFileSync(dst, unignore(Deno.readTextFileSync(src)));
      paths.push(dst);
    }
  }
}

async function main(): Promise<number> {
  const dir = Deno.makeTempDirSync({ prefix: "memfdbus-doc-examples-" });
  try {
    const modules: string[] = [];
    for (const file of ["deno.json", "deno.lock"]) {
      Deno.copyFileSync(`${ROOT}/${file}`, `${dir}/${file}`);
    }
    for (const file of ["mod.ts", "cli.ts"]) {
      Deno.writeTextFileSync(`${dir}/${file}`, unignore(Deno.readTextFileSync(`${ROOT}/${file}`)));
      modules.push(`${dir}/${file}`);
    }
    copyTree(`${ROOT}/src`, `${dir}/src`, modules);
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["check", "--doc-only", ...modules.map((m) => m.slice(dir.length + 1)).sort()],
      cwd: dir,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stderr) + new TextDecoder().decode(out.stdout);
    if (out.code !== 0) {
      // Point at the repository's files rather than the temporary copies.
      console.error(text.replaceAll(`file://${dir}/`, `file://${ROOT}/`).trimEnd());
      console.error("JSDoc examples do not type-check");
      return 1;
    }
    const blocks = text.split("\n").filter((l) => /Check .*#\d+-\d+\.ts/.test(l)).length;
    console.log(`${blocks} JSDoc examples type-check`);
    return 0;
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

if (import.meta.main) {
  Deno.exit(await main());
}
