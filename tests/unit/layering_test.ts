/**
 * The layering of `src/`, checked from the imports of every file (static `import` and
 * `export ... from`, type-only ones included, dynamic `import("...")`, and `new URL("...",
 * import.meta.url)` for workers). Comments are ignored, so JSDoc examples do not count.
 *
 * The rules:
 *
 * 1. The pure core (`src/protocol/`, `src/core/`) imports neither the system layer (`src/sys/`,
 *    `src/ffi.ts`) nor the broker side, the client side, the shadow (`src/shadow/`) or the CLI
 *    (`src/cli/`), and no `node:` module.
 * 2. The broker side (`src/broker.ts`, `src/broker/`) and the client side (`src/client.ts`,
 *    `src/client/`) do not import each other.
 * 3. The system layer (`src/sys/`) imports none of protocol, core, broker side, client side,
 *    shadow or CLI: it wraps libc and knows no protocol.
 * 4. No file but `src/ffi.ts` calls `Deno.dlopen`.
 *
 * Violations that exist today and are being fixed are listed in {@link KNOWN_VIOLATIONS}. The test
 * fails on any violation not in that list, AND on any listed violation that no longer exists, so
 * the list can only shrink (to empty). A self-test runs every rule on a synthetic tree.
 *
 * @module
 */

import { assertEquals, ok } from "../support/assert.ts";

/**
 * Today's violations, as `file -> import (rule N)` or `file calls Deno.dlopen (rule 4)`. Remove
 * an entry when its violation is gone (the test says which).
 */
const KNOWN_VIOLATIONS: readonly string[] = [];

/** A source file: its repository-relative path and its text. */
interface SourceFile {
  readonly path: string;
  readonly text: string;
}

/** The text with comments blanked out (string and template literals kept as they are). */
function stripComments(text: string): string {
  let out = "";
  let i = 0;
  while (i < text.length) {
    const c = text[i] ?? "";
    const next = text[i + 1] ?? "";
    if (c === "/" && next === "/") {
      const end = text.indexOf("\n", i);
      i = end < 0 ? text.length : end;
    } else if (c === "/" && next === "*") {
      const end = text.indexOf("*/", i + 2);
      const stop = end < 0 ? text.length : end + 2;
      out += text.slice(i, stop).replace(/[^\n]/g, " ");
      i = stop;
    } else if (c === '"' || c === "'" || c === "`") {
      let j = i + 1;
      while (j < text.length && text[j] !== c) j += text[j] === "\\" ? 2 : 1;
      out += text.slice(i, j + 1);
      i = j + 1;
    } else {
      out += c;
      i++;
    }
  }
  return out;
}

/** Every module specifier a file refers to. */
export function specifiers(text: string): string[] {
  const code = stripComments(text);
  const out: string[] = [];
  const patterns = [
    // import x from "m"; import type { X } from "m"; export { x } from "m"; export * from "m"
    /\b(?:import|export)\b(?:\s+type\b)?[^;"'`]*?\bfrom\s*(["'])([^"']+)\1/g,
    // import "m" (side effects)
    /\bimport\s*(["'])([^"']+)\1/g,
    // import("m")
    /\bimport\s*\(\s*(["'])([^"']+)\1\s*\)/g,
    // new URL("m", import.meta.url)
    /\bnew\s+URL\s*\(\s*(["'])([^"']+)\1\s*,\s*import\.meta\.url\s*\)/g,
  ];
  for (const re of patterns) for (const m of code.matchAll(re)) out.push(m[2] ?? "");
  return [...new Set(out)];
}

/** A relative specifier resolved against the importing file; other specifiers as they are. */
function resolve(from: string, spec: string): string {
  if (!spec.startsWith(".")) return spec;
  const parts = from.split("/").slice(0, -1);
  for (const p of spec.split("/")) {
    if (p === "..") parts.pop();
    else if (p !== ".") parts.push(p);
  }
  return parts.join("/");
}

const under = (p: string, ...dirs: string[]): boolean => dirs.some((d) => p.startsWith(d));
const pure = (p: string): boolean => under(p, "src/protocol/", "src/core/");
const sys = (p: string): boolean => under(p, "src/sys/");
const ffi = (p: string): boolean => p === "src/ffi.ts";
const brokerSide = (p: string): boolean => p === "src/broker.ts" || under(p, "src/broker/");
const clientSide = (p: string): boolean => p === "src/client.ts" || under(p, "src/client/");
const shadow = (p: string): boolean => under(p, "src/shadow/");
const cliLayer = (p: string): boolean => under(p, "src/cli/");

/** The rule an import from `from` to `to` breaks, or null. */
function brokenRule(from: string, to: string): number | null {
  if (
    pure(from) &&
    (sys(to) || ffi(to) || brokerSide(to) || clientSide(to) || shadow(to) || cliLayer(to) ||
      to.startsWith("node:"))
  ) return 1;
  if ((brokerSide(from) && clientSide(to)) || (clientSide(from) && brokerSide(to))) return 2;
  if (
    sys(from) &&
    (pure(to) || brokerSide(to) || clientSide(to) || shadow(to) || cliLayer(to))
  ) return 3;
  return null;
}

/** Every violation of the rules in a set of files, sorted. */
export function violations(files: readonly SourceFile[]): string[] {
  const out: string[] = [];
  for (const f of files) {
    for (const spec of specifiers(f.text)) {
      const to = resolve(f.path, spec);
      const rule = brokenRule(f.path, to);
      if (rule !== null) out.push(`${f.path} -> ${to} (rule ${rule})`);
    }
    if (f.path !== "src/ffi.ts" && /\bDeno\s*\.\s*dlopen\b/.test(stripComments(f.text))) {
      out.push(`${f.path} calls Deno.dlopen (rule 4)`);
    }
  }
  return out.sort();
}

/** Every .ts file under `dir` (repository-relative paths). */
function sourceFiles(root: string, dir: string): SourceFile[] {
  const out: SourceFile[] = [];
  for (const e of Deno.readDirSync(`${root}/${dir}`)) {
    const path = `${dir}/${e.name}`;
    if (e.isDirectory) out.push(...sourceFiles(root, path));
    else if (e.name.endsWith(".ts")) {
      out.push({ path, text: Deno.readTextFileSync(`${root}/${path}`) });
    }
  }
  return out;
}

const ROOT = new URL("../..", import.meta.url).pathname.replace(/\/$/, "");

Deno.test("src/ keeps its layers: no violation beyond the known ones, and every known one still exists", () => {
  const files = sourceFiles(ROOT, "src");
  ok(files.length > 20, `only ${files.length} files found under src/`);
  const found = violations(files);
  assertEquals(
    found.filter((v) => !KNOWN_VIOLATIONS.includes(v)),
    [],
    "new layering violations (see the rules in tests/unit/layering_test.ts)",
  );
  assertEquals(
    KNOWN_VIOLATIONS.filter((v) => !found.includes(v)),
    [],
    "these violations are fixed: remove them from KNOWN_VIOLATIONS",
  );
});

Deno.test("the import reader sees every form of import and ignores comments", () => {
  const text = `
    import { a } from "./a.ts";
    import type { B } from "../b.ts";
    import {
      c,
      type D,
    } from './c.ts';
    export { e } from "./e.ts";
    export type { F } from "./f.ts";
    export * from "./g.ts";
    import "./side.ts";
    const h = await import("./h.ts");
    new Worker(new URL("./worker.ts", import.meta.url), { type: "module" });
    // import { no } from "./line_comment.ts";
    /** import { no } from "./block_comment.ts"; Deno.dlopen */
    const s = "// not a comment";
    import { i } from "node:fs";
  `;
  assertEquals(specifiers(text).sort(), [
    "../b.ts",
    "./a.ts",
    "./c.ts",
    "./e.ts",
    "./f.ts",
    "./g.ts",
    "./h.ts",
    "./side.ts",
    "./worker.ts",
    "node:fs",
  ]);
});

Deno.test("every rule fails on a synthetic tree that breaks it, and a clean tree passes", () => {
  const file = (path: string, ...imports: string[]): SourceFile => ({
    path,
    text: imports.map((i) => `import type { X } from "${i}";\n`).join(""),
  });
  const clean = [
    file("src/core/store.ts", "../protocol/wire.ts", "../errors.ts", "jsonc-parser"),
    file("src/protocol/wire.ts", "./bytes.ts"),
    file("src/sys/fd.ts", "../ffi.ts", "./linux.ts", "../errors.ts"),
    file("src/broker.ts", "./broker/session.ts", "./core/store.ts", "./sys/fd.ts"),
    file("src/broker/session.ts", "../protocol/wire.ts"),
    file("src/client.ts", "./client/connection.ts", "./sys/fd.ts"),
    file("src/cli/main.ts", "../client.ts", "../broker.ts"),
    { path: "src/ffi.ts", text: 'const lib = Deno.dlopen("libc.so.6", {});' },
    { path: "src/core/doc.ts", text: '/** Deno.dlopen("x") in a comment */\nexport {};' },
  ];
  assertEquals(violations(clean), []);
  const cases: [SourceFile, string][] = [
    [file("src/core/h.ts", "../sys/fd.ts"), "src/core/h.ts -> src/sys/fd.ts (rule 1)"],
    [file("src/core/a.ts", "../ffi.ts"), "src/core/a.ts -> src/ffi.ts (rule 1)"],
    [file("src/protocol/w.ts", "../broker.ts"), "src/protocol/w.ts -> src/broker.ts (rule 1)"],
    [
      file("src/protocol/w.ts", "../client/connection.ts"),
      "src/protocol/w.ts -> src/client/connection.ts (rule 1)",
    ],
    [file("src/core/c.ts", "../cli/args.ts"), "src/core/c.ts -> src/cli/args.ts (rule 1)"],
    [file("src/core/s.ts", "../shadow/link.ts"), "src/core/s.ts -> src/shadow/link.ts (rule 1)"],
    [file("src/core/n.ts", "node:fs"), "src/core/n.ts -> node:fs (rule 1)"],
    [file("src/broker.ts", "./client.ts"), "src/broker.ts -> src/client.ts (rule 2)"],
    [
      file("src/broker/session.ts", "../client/connection.ts"),
      "src/broker/session.ts -> src/client/connection.ts (rule 2)",
    ],
    [file("src/client.ts", "./broker.ts"), "src/client.ts -> src/broker.ts (rule 2)"],
    [
      file("src/client/connection.ts", "../broker/session.ts"),
      "src/client/connection.ts -> src/broker/session.ts (rule 2)",
    ],
    [
      file("src/sys/memfd.ts", "../protocol/wire.ts"),
      "src/sys/memfd.ts -> src/protocol/wire.ts (rule 3)",
    ],
    [file("src/sys/fd.ts", "../core/store.ts"), "src/sys/fd.ts -> src/core/store.ts (rule 3)"],
    [file("src/sys/fd.ts", "../broker.ts"), "src/sys/fd.ts -> src/broker.ts (rule 3)"],
    [file("src/sys/fd.ts", "../client.ts"), "src/sys/fd.ts -> src/client.ts (rule 3)"],
    [file("src/sys/fd.ts", "../cli/main.ts"), "src/sys/fd.ts -> src/cli/main.ts (rule 3)"],
    [
      { path: "src/shadow/link.ts", text: 'const l = Deno.dlopen("libc.so.6", {});' },
      "src/shadow/link.ts calls Deno.dlopen (rule 4)",
    ],
  ];
  for (const [bad, expected] of cases) {
    assertEquals(violations([...clean, bad]), [expected], expected);
  }
});
