/**
 * Support for the CLI tests: a broker shared by the tests of one file, the exact C usage texts,
 * helpers to run the CLI through `sh`, in the background or on a pseudo-terminal, timing a run,
 * and small file utilities.
 *
 * @module
 */

import { assertEquals } from "./assert.ts";
import { BrokerProcess, CLI, CLI_PERMS, type CliResult, dec } from "./harness.ts";

// The tests decide the job id of every call themselves.
Deno.env.delete("MEMFDBUS_JOB_ID");

/** The usage block of the C memfdbus, byte for byte (14 lines). */
export const C_USAGE = `usage:
  memfdbus broker [--socket PATH] [--max-name-bytes N] [--max-objects N]
                  [--max-request-bytes N] [--max-list-bytes N]
                  [--max-total-bytes N] [--listen-backlog N]
                  [--max-clients N]
  memfdbus put FILE [--name NAME | --content-addressed]
               [--job-id JOB] [--allow-job JOB] [--socket PATH]
  memfdbus get OBJECT_ID OUT [--job-id JOB] [--socket PATH]
  memfdbus get --name NAME OUT [--job-id JOB] [--socket PATH]
  memfdbus exec OBJECT_ID [--job-id JOB] [--socket PATH] -- COMMAND [ARG...]
  memfdbus exec --name NAME [--job-id JOB] [--socket PATH] -- COMMAND [ARG...]
  memfdbus drop OBJECT_ID [--job-id JOB] [--socket PATH]
  memfdbus drop --name NAME [--job-id JOB] [--socket PATH]
  memfdbus list [--job-id JOB] [--socket PATH]
`;

/** The C two-line usage of `put`, with its newline. */
export const C_PUT_USAGE = `usage: memfdbus put FILE [--name NAME | --content-addressed]
   [--job-id JOB] [--allow-job JOB] [--socket PATH]
`;

/** The C two-line usage of `get`, with its newline. */
export const C_GET_USAGE = `usage: memfdbus get OBJECT_ID OUT [--job-id JOB] [--socket PATH]
   or: memfdbus get --name NAME OUT [--job-id JOB] [--socket PATH]
`;

/** The C two-line usage of `exec`, with its newline. */
export const C_EXEC_USAGE =
  `usage: memfdbus exec OBJECT_ID [--job-id JOB] [--socket PATH] -- COMMAND [ARG...]
   or: memfdbus exec --name NAME [--job-id JOB] [--socket PATH] -- COMMAND [ARG...]
`;

/** The C two-line usage of `drop`, with its newline. */
export const C_DROP_USAGE = `usage: memfdbus drop OBJECT_ID [--job-id JOB] [--socket PATH]
   or: memfdbus drop --name NAME [--job-id JOB] [--socket PATH]
`;

/** The full argv that runs the CLI with `args`. */
export function cliArgv(args: readonly string[]): string[] {
  return [Deno.execPath(), "run", ...CLI_PERMS, CLI, ...args];
}

/**
 * Run the CLI with a kill timer, for calls that would hang if they wrongly succeeded (a broker
 * that starts although its options are bad). A killed run reports code 128+signal.
 */
export async function cliWithTimeout(
  args: readonly string[],
  timeoutMs = 10_000,
): Promise<CliResult> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", ...CLI_PERMS, CLI, ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(timeoutMs),
  }).output();
  return {
    code: out.signal === null ? out.code : 128 + 15,
    stdoutBytes: out.stdout,
    stdout: dec(out.stdout),
    stderr: dec(out.stderr),
  };
}

/** Run `sh -c SCRIPT sh ARGS...`; returns code, stdout bytes and stderr text. */
export async function sh(
  script: string,
  args: readonly string[] = [],
  env: Record<string, string> = {},
): Promise<CliResult> {
  const out = await new Deno.Command("sh", {
    args: ["-c", script, "sh", ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env,
  }).output();
  return {
    code: out.code,
    stdoutBytes: out.stdout,
    stdout: dec(out.stdout),
    stderr: dec(out.stderr),
  };
}

/** Run a program directly (no CLI) with the same stdio as `cli()`: a baseline. */
export async function plain(
  program: string,
  args: readonly string[],
  env: Record<string, string> = {},
): Promise<CliResult> {
  const out = await new Deno.Command(program, {
    args: [...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env,
  }).output();
  return {
    code: out.code,
    stdoutBytes: out.stdout,
    stdout: dec(out.stdout),
    stderr: dec(out.stderr),
  };
}

/** Deterministic pseudo-random bytes (xorshift), so failures are reproducible. */
export function bytes(n: number, seed = 1): Uint8Array<ArrayBuffer> {
  const b = new Uint8Array(n);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    b[i] = x & 0xff;
  }
  return b;
}

/** Lowercase hex SHA-256 digest string (`sha256:<hex>`), computed independently of src/. */
export async function sha256(data: Uint8Array<ArrayBuffer>): Promise<string> {
  const h = new Uint8Array(await crypto.subtle.digest("SHA-256", data));
  return `sha256:${Array.from(h, (v) => v.toString(16).padStart(2, "0")).join("")}`;
}

/** Whether a path exists (without following a final symlink). */
export function exists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

/** Names in a directory, sorted. */
export function listDir(path: string): string[] {
  return Array.from(Deno.readDirSync(path), (e) => e.name).sort();
}

/** Unique short token for names in a shared broker. */
export function uniq(prefix: string): string {
  return `${prefix}-${crypto.randomUUID().slice(0, 8)}`;
}

/** A broker shared by the tests of one file, with its own temporary directory. */
export interface Shared {
  /** The broker process. */
  broker: BrokerProcess;
  /** A scratch directory that lives as long as the broker. */
  dir: string;
}

let shared: Promise<Shared> | null = null;

/** Start (once) and return the shared broker of this test file. */
export function sharedBroker(): Promise<Shared> {
  shared ??= (async (): Promise<Shared> => {
    const dir = Deno.makeTempDirSync({ prefix: "memfdbus-cli-" });
    const broker = await BrokerProcess.start(dir);
    globalThis.addEventListener("unload", () => {
      try {
        broker.child.kill("SIGKILL");
      } catch {
        // Already stopped by the last test.
      }
      try {
        Deno.removeSync(dir, { recursive: true });
      } catch {
        // Already removed.
      }
    });
    return { broker, dir };
  })();
  return shared;
}

/**
 * A test that uses the shared broker. The broker's stdout readers outlive single tests, so the
 * op and resource sanitizers are off for these.
 */
export function sharedTest(name: string, fn: (s: Shared) => Promise<void>): void {
  Deno.test({
    name,
    sanitizeOps: false,
    sanitizeResources: false,
    fn: async () => await fn(await sharedBroker()),
  });
}

/**
 * The last test of a file: stop the shared broker with SIGTERM and check that it exited 0,
 * printed nothing on stderr and unlinked its socket.
 */
export function stopSharedTest(): void {
  sharedTest(
    "the shared broker exits with code 0 on SIGTERM, with empty stderr and its socket unlinked",
    async ({ broker, dir }) => {
      let status: Deno.CommandStatus;
      let gone: boolean;
      try {
        status = await broker.stop("SIGTERM");
        gone = !exists(broker.socket);
      } finally {
        Deno.removeSync(dir, { recursive: true });
      }
      assertEquals([status.code, status.signal, broker.stderr, gone], [0, null, "", true]);
    },
  );
}

/**
 * Parse `ls -l /proc/self/fd` output into descriptor number → target, leaving out the
 * descriptor ls itself uses to read the directory.
 */
export function parseFdListing(text: string): Map<number, string> {
  const m = new Map<number, string>();
  for (const line of text.split("\n")) {
    const r = /\s(\d+) -> (.*)$/.exec(line);
    if (r === null) continue;
    const target = r[2] ?? "";
    if (/^\/proc\/\d+\/fd$/.test(target)) continue;
    m.set(Number(r[1]), target);
  }
  return m;
}

/**
 * Try to mount a tmpfs (needs root or CAP_SYS_ADMIN). Returns null when it works, else why it
 * does not.
 */
export function probeTmpfs(): string | null {
  let dir: string | null = null;
  try {
    dir = Deno.makeTempDirSync({ prefix: "memfdbus-tmpfs-probe-" });
    const m = new Deno.Command("mount", { args: ["-t", "tmpfs", "-o", "size=64k", "tmpfs", dir] })
      .outputSync();
    if (!m.success) return `mount -t tmpfs failed: ${dec(m.stderr).trim()}`;
    const u = new Deno.Command("umount", { args: [dir] }).outputSync();
    if (!u.success) return `umount failed: ${dec(u.stderr).trim()}`;
    return null;
  } catch (e) {
    return `cannot run mount: ${e instanceof Error ? e.message : String(e)}`;
  } finally {
    if (dir !== null) {
      try {
        Deno.removeSync(dir);
      } catch {
        // Still mounted or already gone.
      }
    }
  }
}

/**
 * The line a client command prints when nothing is at socket `path`: the path, the reason and
 * how to start a broker there.
 */
export function noBrokerLine(path: string): string {
  return `connect: No such file or directory (socket ${path}) — ` +
    `is the broker running? start it with \`memfdbus broker --socket ${path}\`\n`;
}

/** Assert that a run failed (exit 1, or `code`) with exactly `stderr` and nothing on stdout. */
export function assertFails(r: CliResult, stderr: string, what = "", code = 1): void {
  assertEquals(
    { what, code: r.code, stdout: r.stdout, stderr: r.stderr },
    { what, code, stdout: "", stderr },
  );
}

/** Assert a usage mistake: exit 2, exactly `stderr`, nothing on stdout. */
export function assertUsageError(r: CliResult, stderr: string, what = ""): void {
  assertFails(r, stderr, what, 2);
}

/** Map `items` through `fn`, at most `width` at a time, keeping the order. */
export async function parallel<T, R>(
  items: readonly T[],
  fn: (item: T) => Promise<R>,
  width = 8,
): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.min(width, items.length) }, worker));
  return results;
}

/** A finished run and when it finished (a `performance.now()` value). */
export interface TimedResult {
  /** What the run returned. */
  readonly result: CliResult;
  /** performance.now() at completion. */
  readonly endedAt: number;
}

/** Await a CLI run and note when it ended. */
export async function timed(run: Promise<CliResult>): Promise<TimedResult> {
  const result = await run;
  return { result, endedAt: performance.now() };
}

/** The path of util-linux `script`, or null when it is not installed. */
export function scriptPath(): string | null {
  for (const dir of ["/usr/bin", "/bin", "/usr/local/bin"]) {
    try {
      if (Deno.statSync(`${dir}/script`).isFile) return `${dir}/script`;
    } catch {
      // Not there.
    }
  }
  return null;
}

function shellQuote(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

/**
 * A util-linux `script` command that runs `memfdbus ARGS` on a pseudo-terminal of its own. The
 * shell `script` starts (`/bin/sh`, whatever `$SHELL` says) execs the CLI, so the CLI is the
 * terminal's foreground process and its exit status is the terminal's: a shell left waiting in
 * between (dash does not exec a lone `-c` command) would take Ctrl-C itself and exit 130.
 */
export function terminalCommand(
  script: string,
  args: readonly string[],
  options: Omit<Deno.CommandOptions, "args" | "env">,
): Deno.Command {
  const line = [Deno.execPath(), "run", ...CLI_PERMS, CLI, ...args].map(shellQuote).join(" ");
  return new Deno.Command(script, {
    ...options,
    args: ["-qec", `exec ${line}`, "/dev/null"],
    env: { SHELL: "/bin/sh" },
  });
}

/**
 * Run `memfdbus ARGS` with stdin, stdout and stderr on a pseudo-terminal (`script -qec`), in
 * `cwd`. Returns the exit code and everything the terminal showed (stdout and stderr merged,
 * with the terminal's `\r\n` line endings).
 */
export async function cliOnTerminal(
  args: readonly string[],
  cwd: string,
): Promise<{ code: number; screen: string }> {
  const script = scriptPath();
  if (script === null) throw new Error("util-linux script is not installed");
  const out = await terminalCommand(script, args, {
    cwd,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: out.code, screen: dec(out.stdout) + dec(out.stderr) };
}
