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

/**
 * How many example blocks `deno check --doc-only` reports checking: its `Check
 * file:///.../x.ts$12-20.ts` lines (`#` in older versions), colour codes removed first.
 */
export function countChecked(output: string): number {
  // deno-lint-ignore no-control-regex
  const plain = output.replace(/\x1b\[[0-9;]*m/g, "");
  return plain.split("\n").filter((l) => /^\s*Check \S+[#$]\d+-\d+\.ts\s*$/.test(l)).length;
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
      // Plain text: the count below reads the "Check" lines, which colour would split.
      env: { NO_COLOR: "1" },
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
    const blocks = countChecked(text);
    if (blocks === 0) {
      console.error(text.trimEnd());
      console.error("no JSDoc example was checked: the output did not list any (format changed?)");
      return 1;
    }
    console.log(`${blocks} JSDoc examples type-check`);
    return 0;
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

if (import.meta.main) {
  Deno.exit(await main());
}
