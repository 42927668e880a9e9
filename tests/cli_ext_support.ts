/**
 * Support for the CLI extension tests: timing a CLI run, waiting, and running the CLI with a
 * pseudo-terminal as stderr (through util-linux `script`) to see what a user sees.
 *
 * @module
 */

import { CLI, CLI_PERMS, type CliResult, dec } from "./helpers.ts";

/** Resolve after `ms` milliseconds. */
export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
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
  const line = [Deno.execPath(), "run", ...CLI_PERMS, CLI, ...args].map(shellQuote).join(" ");
  const out = await new Deno.Command(script, {
    args: ["-qec", line, "/dev/null"],
    cwd,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  return { code: out.code, screen: dec(out.stdout) + dec(out.stderr) };
}
