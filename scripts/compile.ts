/**
 * `deno task compile`: build `dist/memfdbus`, the whole CLI (broker included) as one executable,
 * with `deno compile`, then check that the result really is memfdbus (`--help` prints its usage).
 *
 * ```sh
 * deno task compile                                # dist/memfdbus
 * deno task compile --output /usr/local/bin/memfdbus
 * DENORT_BIN=/opt/denort-2.9.6 deno task compile   # no download: use this runtime
 * ```
 *
 * `deno compile` appends the program to a `denort` runtime of exactly this Deno's version, which
 * it downloads from dl.deno.land unless `DENORT_BIN` names one (the variable is passed through).
 * The deno CLI binary is not a denort: built on it, the executable starts Deno's own command line.
 * Where no runtime can be had the script prints one sentence saying what is missing and how to
 * provide it, and exits with {@link RUNTIME_UNAVAILABLE}; any other failure exits with 1.
 *
 * Options: `--output PATH` (default `dist/memfdbus`), `--timeout-ms N` for `deno compile`
 * (default 600000; a stalled download ends there), `--verbose` to show deno's own output also
 * when the runtime is missing (other failures always show it).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { USAGE } from "../src/cli/usage.ts";

/** The repository root. */
export const ROOT: string = new URL("..", import.meta.url).pathname.replace(/\/$/, "");

/** Where `deno task compile` writes the executable. */
export const DEFAULT_OUTPUT: string = `${ROOT}/dist/memfdbus`;

/** Exit code when the denort runtime cannot be had (download failed, DENORT_BIN unusable). */
export const RUNTIME_UNAVAILABLE = 2;

/**
 * The permissions compiled into the executable, the narrowest the CLI runs with: FFI for libc,
 * read and write for the files `put`, `get` and `--config` name (any path), run for the two
 * processes the broker starts from its own executable (the `--shadow` process and, on SIGHUP,
 * its successor), and only the environment variables it reads: socket activation's LISTEN_*,
 * MEMFDBUS_JOB_ID and the MEMFDBUS_TAKEOVER handover. `exec` and `capture` start their command
 * through libc (execvp, posix_spawnp). Network only for `broker --metrics` (its HTTP server on a
 * TCP address or a Unix socket path); no sys.
 */
export const COMPILE_PERMISSIONS: readonly string[] = [
  "--allow-ffi",
  "--allow-read",
  "--allow-write",
  "--allow-run",
  "--allow-net",
  "--allow-env=LISTEN_PID,LISTEN_FDS,LISTEN_FDNAMES,MEMFDBUS_JOB_ID,MEMFDBUS_TAKEOVER",
];

/**
 * Modules `deno compile` cannot find by itself: the broker's digest Worker is loaded with
 * `new Worker(new URL("./worker.ts", import.meta.url))`, which is not a static import.
 */
export const COMPILE_INCLUDES: readonly string[] = ["src/hash/worker.ts"];

/** The `deno compile` arguments that build the CLI into `output` (run from {@link ROOT}). */
export function compileArgs(output: string): string[] {
  return [
    "compile",
    "--config",
    "deno.json",
    ...COMPILE_PERMISSIONS,
    ...COMPILE_INCLUDES.flatMap((path) => ["--include", path]),
    "--output",
    output,
    "cli.ts",
  ];
}

/** Why the build failed, and whether it is the missing runtime (exit 2) or anything else (1). */
export class CompileFailure extends Error {
  /** The exit code the script ends with. */
  readonly code: number;
  /** deno's own output, shown with --verbose. */
  readonly detail: string;

  /**
   * @param message the one sentence to print
   * @param code exit code: {@link RUNTIME_UNAVAILABLE} or 1
   * @param detail deno's own output
   */
  constructor(message: string, code: number, detail = "") {
    super(message);
    this.name = "CompileFailure";
    this.code = code;
    this.detail = detail;
  }
}

const VERSION = Deno.version.deno;
const HINT = `set DENORT_BIN to a denort executable matching deno ${VERSION} ` +
  `(${Deno.build.target})`;

function realPath(path: string): string | null {
  try {
    return Deno.realPathSync(path);
  } catch {
    return null;
  }
}

/** Reject a DENORT_BIN that cannot work before spending a compile on it. */
function checkDenortBin(denort: string | undefined): void {
  if (denort === undefined) return;
  const real = realPath(denort);
  let isFile = false;
  try {
    isFile = real !== null && Deno.statSync(real).isFile;
  } catch {
    isFile = false;
  }
  if (!isFile) {
    throw new CompileFailure(
      `DENORT_BIN names "${denort}", which is not a file; ${HINT}`,
      RUNTIME_UNAVAILABLE,
    );
  }
  if (real === realPath(Deno.execPath())) {
    throw new CompileFailure(
      `DENORT_BIN names the deno CLI ("${denort}"), not a denort runtime, and an executable ` +
        `built on it starts Deno's own command line instead of memfdbus; ${HINT}`,
      RUNTIME_UNAVAILABLE,
    );
  }
}

/** The last "N: cause" line of a Rust error chain, or the last non-empty line. */
function rootCause(stderr: string): string {
  const lines = stderr.split("\n").map((l) => l.trim()).filter((l) =>
    l !== "" && !l.startsWith("Stack backtrace") && !/^\d+: <unknown>$/.test(l)
  );
  const causes = lines.filter((l) => /^\d+: /.test(l)).map((l) => l.replace(/^\d+: /, ""));
  return causes.at(-1) ?? lines.at(-1) ?? "no output";
}

/** Turn a failed `deno compile` into the sentence to print. */
export function classifyCompileError(
  stderr: string,
  code: number,
  denort: string | undefined,
): CompileFailure {
  const text = stripAnsi(stderr);
  // Both a failed download and an unusable DENORT_BIN fail while "writing the executable";
  // type errors and module resolution failures come before that.
  const runtime = /Writing deno compile executable|Setting up base binary|denort|dl\.deno\.land/i
    .test(text);
  if (!runtime) {
    return new CompileFailure(
      `deno compile failed with exit code ${code}: ${rootCause(text)}`,
      1,
      text,
    );
  }
  const cause = rootCause(text);
  if (denort !== undefined) {
    return new CompileFailure(
      `deno compile could not use DENORT_BIN "${denort}" as its runtime (${cause}); ${HINT}`,
      RUNTIME_UNAVAILABLE,
      text,
    );
  }
  const url = /https:\/\/dl\.deno\.land\/\S+?\.zip/.exec(text)?.[0] ?? "dl.deno.land";
  return new CompileFailure(
    `deno compile could not obtain the denort runtime (download of ${url} failed: ${cause}); ` +
      HINT,
    RUNTIME_UNAVAILABLE,
    text,
  );
}

function stripAnsi(s: string): string {
  // deno-lint-ignore no-control-regex
  return s.replace(/\x1b\[[0-9;]*m/g, "");
}

interface Ran {
  code: number;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

async function run(
  cmd: string,
  args: readonly string[],
  timeoutMs: number,
  env: Record<string, string> = {},
): Promise<Ran> {
  const child = new Deno.Command(cmd, {
    args: [...args],
    cwd: ROOT,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1", ...env },
  }).spawn();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGKILL");
    } catch {
      // Already gone.
    }
  }, timeoutMs);
  try {
    const out = await child.output();
    const dec = new TextDecoder();
    return {
      code: out.code,
      stdout: dec.decode(out.stdout),
      stderr: dec.decode(out.stderr),
      timedOut,
    };
  } finally {
    clearTimeout(timer);
  }
}

function removeQuietly(path: string): void {
  try {
    Deno.removeSync(path);
  } catch {
    // Not there.
  }
}

/** What a successful build produced. */
export interface Built {
  /** The executable's path. */
  readonly output: string;
  /** Its size in bytes. */
  readonly bytes: number;
}

/**
 * Build the CLI into `output` and check that `output --help` prints memfdbus's usage. Throws a
 * {@link CompileFailure} carrying the sentence to print and the exit code.
 *
 * @param output where to write the executable
 * @param timeoutMs how long `deno compile` may take (a stalled runtime download ends there)
 */
export async function compile(output: string, timeoutMs: number): Promise<Built> {
  const denort = Deno.env.get("DENORT_BIN");
  checkDenortBin(denort);
  const dir = output.slice(0, output.lastIndexOf("/")) || ".";
  Deno.mkdirSync(dir, { recursive: true });
  const tmp = `${output}.tmp-${Deno.pid}`;
  removeQuietly(tmp);
  try {
    const built = await run(Deno.execPath(), compileArgs(tmp), timeoutMs);
    if (built.timedOut) {
      const downloading = /Download/.test(built.stderr) && denort === undefined;
      throw new CompileFailure(
        downloading
          ? `deno compile could not obtain the denort runtime (the download from dl.deno.land ` +
            `did not finish within ${timeoutMs / 1000} s); ${HINT}`
          : `deno compile did not finish within ${timeoutMs / 1000} s`,
        downloading ? RUNTIME_UNAVAILABLE : 1,
        built.stderr,
      );
    }
    if (built.code !== 0) throw classifyCompileError(built.stderr, built.code, denort);
    // Prove the result is memfdbus: a deno CLI used as the runtime prints Deno's help instead
    // (and with no arguments would start a REPL, hence no stdin and a time limit).
    const help = await run(tmp, ["--help"], 20_000);
    if (help.code !== 0 || help.stdout !== USAGE) {
      const seen = `${help.stdout}\n${help.stderr}`;
      const isDenoCli = /A modern JavaScript and TypeScript runtime|Usage: deno |^Deno \d/m.test(
        seen,
      );
      const runtime = denort === undefined ? "the downloaded runtime" : `DENORT_BIN "${denort}"`;
      if (isDenoCli) {
        throw new CompileFailure(
          `${runtime} is the deno CLI, not a denort runtime: the compiled executable starts ` +
            `Deno's own command line instead of memfdbus; ${HINT}`,
          RUNTIME_UNAVAILABLE,
          seen,
        );
      }
      const first = seen.trim().split("\n")[0] ?? "";
      throw new CompileFailure(
        help.timedOut
          ? `the compiled executable did not answer --help within 20 s`
          : `the compiled executable did not print the memfdbus usage for --help ` +
            `(exit code ${help.code}, first line "${first}")`,
        1,
        seen,
      );
    }
    Deno.renameSync(tmp, output);
    return { output, bytes: Deno.statSync(output).size };
  } finally {
    removeQuietly(tmp);
  }
}

async function main(args: readonly string[]): Promise<number> {
  const { values } = parseArgs({
    args: [...args],
    options: {
      output: { type: "string", short: "o" },
      "timeout-ms": { type: "string" },
      verbose: { type: "boolean" },
    },
  });
  const output = values.output ?? DEFAULT_OUTPUT;
  const timeoutMs = Number(values["timeout-ms"] ?? "600000");
  if (!Number.isSafeInteger(timeoutMs) || timeoutMs <= 0) {
    console.error(`invalid --timeout-ms: ${values["timeout-ms"]}`);
    return 1;
  }
  try {
    const built = await compile(output, timeoutMs);
    const mb = (built.bytes / (1 << 20)).toFixed(1);
    console.log(`compiled ${built.output} (${mb} MiB, deno ${VERSION}); --help checked`);
    return 0;
  } catch (e) {
    if (!(e instanceof CompileFailure)) throw e;
    const show = values.verbose === true || e.code !== RUNTIME_UNAVAILABLE;
    if (show && e.detail.trim() !== "") console.error(e.detail.trimEnd());
    console.error(e.message);
    return e.code;
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
