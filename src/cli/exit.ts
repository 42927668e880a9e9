/**
 * Errors that end a subcommand with a particular exit code, and the turning of library errors
 * into the one line a user reads (with what to do about it).
 *
 * @module
 */

import { BrokerError, ErrnoError, TimeoutError } from "../errors.ts";
import { PolicyText } from "../core/policy.ts";
import { ConnectError } from "../client/connection.ts";
import { DEFAULT_TIMEOUT_MS, defaultSocket } from "../client.ts";
import { currentClientSettings } from "./args.ts";
import { tryLstat } from "../sys/fd.ts";
import { ENOENT, S_IFMT } from "../sys/linux.ts";

/** A failure with its own exit code (127: command not found, 126: not executable). */
export class ExitError extends Error {
  /** The process exit code. */
  readonly exitCode: number;

  /**
   * Describe the failure.
   *
   * @param message the line the CLI prints
   * @param exitCode the exit code
   */
  constructor(message: string, exitCode: number) {
    super(message);
    this.name = "ExitError";
    this.exitCode = exitCode;
  }
}

/** The exit code of a process ended by each signal the CLI handles (128 + its number). */
export const SIGNAL_EXIT: Readonly<Record<string, number>> = {
  SIGHUP: 129,
  SIGINT: 130,
  SIGPIPE: 141,
  SIGTERM: 143,
};

/**
 * The command was interrupted by a signal (or its output pipe closed: SIGPIPE); it cleaned up
 * and exits 128 + the signal's number, printing nothing, as a process killed by it would.
 */
export class Interrupted extends Error {
  /** SIGINT, SIGTERM, SIGHUP or SIGPIPE. */
  readonly signal: string;

  /**
   * Record the signal.
   *
   * @param signal its name
   */
  constructor(signal: string) {
    super(`interrupted by ${signal}`);
    this.name = "Interrupted";
    this.signal = signal;
  }

  /** 128 + the signal's number. */
  get exitCode(): number {
    return SIGNAL_EXIT[this.signal] ?? 1;
  }
}

/**
 * exec or capture could not start COMMAND: `command not found: NAME` (exit 127) for ENOENT,
 * `cannot execute NAME: <strerror>` (exit 126) otherwise (`Is a directory` for a directory), as a
 * shell reports them.
 */
export function commandError(e: unknown, command: string): unknown {
  if (!(e instanceof ErrnoError) || (e.syscall !== "execvp" && e.syscall !== "posix_spawnp")) {
    return e;
  }
  if (e.code === "ENOENT") return new ExitError(`command not found: ${command}`, 127);
  // execve says EACCES for a directory; a shell says what it is.
  const why = e.code === "EACCES" && command.includes("/") && isDirectory(command)
    ? "Is a directory"
    : e.description;
  return new ExitError(`cannot execute ${command}: ${why}`, 126);
}

function isDirectory(path: string): boolean {
  try {
    return Deno.statSync(path).isDirectory;
  } catch {
    return false;
  }
}

/** Name the socket path in a failure to create it: `bind: /tmp/x.sock: Permission denied`. */
export function nameSocket(e: unknown, socket: string): unknown {
  if (
    !(e instanceof ErrnoError) ||
    !["bind", "listen", "chmod", "unlink", "lstat"].includes(e.syscall)
  ) {
    return e;
  }
  const what = e.message.slice(0, e.message.length - e.description.length - 2);
  const named = new ErrnoError(e.syscall, e.errno, e.description, `${what}: ${socket}`);
  return named;
}

/** S_IFSOCK */
const S_IFSOCK = 0o140000;

/** S_IFDIR */
const S_IFDIR = 0o040000;

/**
 * The line for a failed connection. It starts as the C CLI's does (`connect: <strerror>`, so
 * scripts that match that prefix keep working), then names the socket and what to do, for
 * example `connect: No such file or directory (socket /tmp/x.sock) — is the broker running?
 * start it with \`memfdbus broker\``.
 */
export function connectMessage(e: ConnectError): string {
  const start = e.socket === defaultSocket()
    ? "`memfdbus broker`"
    : `\`memfdbus broker --socket ${e.socket}\``;
  const head = `connect: ${e.description} (socket ${e.socket})`;
  const st = tryLstat(e.socket);
  if (st === -ENOENT || e.code === "ENOENT") {
    return `${head} — is the broker running? start it with ${start}`;
  }
  if (typeof st !== "number" && (st.mode & S_IFMT) !== S_IFSOCK) {
    const what = (st.mode & S_IFMT) === S_IFDIR ? "a directory" : "a file";
    return `${head} — ${what} is there, not a socket; check --socket (or MEMFDBUS_SOCKET)`;
  }
  if (e.code === "ECONNREFUSED") {
    return `${head} — no broker is listening on it (a broker that died left ` +
      `it behind?); start one with ${start}`;
  }
  if (e.code === "EACCES") {
    return `${head} — the socket's mode (broker --socket-mode) does not ` +
      `let this user connect`;
  }
  return `${head} — check --socket (or MEMFDBUS_SOCKET)`;
}

/** Seconds for a message: `30`, `2.5`. */
function seconds(ms: number): string {
  return String(Math.round(ms) / 1000);
}

/**
 * The line for a request the broker did not answer in time, for example `receive response: no
 * answer within 1 s (socket /tmp/x.sock) — the broker is busy or stuck; --timeout SECONDS waits
 * longer (default 30)`. A wait by name that ran out keeps its own message.
 */
export function timeoutMessage(e: TimeoutError): string {
  const m = /^(.*): timed out after [0-9.]+ ms$/.exec(e.message);
  if (m === null) return e.message;
  const settings = currentClientSettings();
  const where = settings === null ? "" : ` (socket ${settings.socket})`;
  return `${m[1]}: no answer within ${seconds(e.timeoutMs)} s${where} — the broker is busy ` +
    `or stuck; --timeout SECONDS waits longer (default ${seconds(DEFAULT_TIMEOUT_MS)})`;
}

/**
 * What to do about a broker's identity refusal, after its text (which stays the C broker's, so
 * scripts that match it keep working).
 */
const POLICY_HINTS: ReadonlyMap<string, string> = new Map([
  [
    PolicyText.jobRequired,
    "pass --job-id JOB (or set MEMFDBUS_JOB_ID)",
  ],
  [
    PolicyText.jobNotPermitted,
    'the broker\'s --policy does not let this user claim that job; use one its "jobs" bind ' +
    "to this user",
  ],
]);

/** The line the CLI prints for an error. */
export function errorLine(e: unknown): string {
  if (e instanceof ConnectError) return connectMessage(e);
  if (e instanceof TimeoutError) return timeoutMessage(e);
  if (e instanceof BrokerError) {
    const hint = POLICY_HINTS.get(e.text);
    if (hint !== undefined) return `${e.message} — ${hint}`;
  }
  return e instanceof Error ? e.message : String(e);
}
