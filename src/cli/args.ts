/**
 * The command-line grammar shared by every subcommand, and the argument rules of the client
 * subcommands (object ids, names, job ids, seconds), with the C CLI's messages.
 *
 * One grammar for every flag, read by `node:util` `parseArgs`: a flag that takes a value takes
 * it as `--flag value` or `--flag=value`; a switch takes none; `--help`/`-h` asks for the
 * subcommand's help; `--` ends the flags. A value is taken verbatim, even when it starts with
 * `-` (as in the C CLI: `--name --json` names an object `--json`).
 *
 * Every usage mistake exits 2. One the C CLI also reports (PROTOCOL.md §6) keeps its C text
 * ({@link UsageError}); the others are {@link CliUsageError}s.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { UsageError } from "../errors.ts";
import { Client, DEFAULT_TIMEOUT_MS, defaultSocket, jobIdFromEnv } from "../client.ts";
import { JOB_MAX, NAME_HARD_MAX } from "../protocol/wire.ts";

/**
 * A CLI process has nothing else to do while it waits, so its replies are awaited on the main
 * thread for up to this long before the wait moves off-thread.
 */
export const CLI_SYNC_WAIT_US = 1_000_000;

/** A usage mistake the C CLI does not have (a new flag, subcommand or check): exit code 2. */
export class CliUsageError extends UsageError {
  /** The exit code of a usage error beyond the C CLI's. */
  readonly exitCode = 2;

  /**
   * Describe the mistake.
   *
   * @param message the line the CLI prints
   */
  constructor(message: string) {
    super(message);
    this.name = "CliUsageError";
  }
}

/** `--help` or `-h` was given: the dispatcher prints the subcommand's help and exits 0. */
export class HelpRequested extends Error {
  /** Mark the request. */
  constructor() {
    super("help requested");
    this.name = "HelpRequested";
  }
}

/** What a flag takes: a value, or nothing (a switch). */
export type FlagKind = "string" | "boolean";

/** One flag or positional, in command-line order. */
export type Item =
  | { readonly kind: "flag"; readonly flag: string; readonly value: string }
  | { readonly kind: "switch"; readonly flag: string }
  | { readonly kind: "positional"; readonly text: string };

/** The parsed command line: flags and positionals in order, and the words after `--`. */
export interface Parsed {
  /** Flags (as `--name`) and positionals, in the order given. */
  readonly items: readonly Item[];
  /** The words after `--`, or null when there was no `--`. */
  readonly rest: readonly string[] | null;
}

/**
 * Split `args` by the flags in `spec` (names without dashes). Throws {@link HelpRequested} for
 * `--help`/`-h`, `missing value for --FLAG` for a valued flag at the end, `unexpected argument:
 * X` for an unknown `--flag` and `--FLAG takes no value` for `--switch=value`. A word starting
 * with a single dash (`-`, `-1`) is a positional.
 *
 * @param args the arguments after the subcommand
 * @param spec the flags the subcommand knows
 * @param dashDash true when `--` separates a command to run (exec, capture): the words after it
 *   are returned in `rest`; otherwise they are positionals
 */
export function parseCommandLine(
  args: readonly string[],
  spec: Readonly<Record<string, FlagKind>>,
  dashDash = false,
): Parsed {
  const options: Record<string, { type: FlagKind; short?: string }> = {};
  for (const [name, type] of Object.entries(spec)) options[name] = { type };
  options["help"] = { type: "boolean", short: "h" };
  const { tokens } = parseArgs({
    args: [...args],
    options,
    strict: false,
    allowPositionals: true,
    tokens: true,
  });
  const items: Item[] = [];
  let rest: string[] | null = null;
  let lastShort = -1;
  for (const t of tokens) {
    if (t.kind === "option-terminator") {
      const after = args.slice(t.index + 1);
      if (dashDash) rest = after;
      else for (const text of after) items.push({ kind: "positional", text });
      break;
    }
    if (t.kind === "positional") {
      items.push({ kind: "positional", text: t.value });
      continue;
    }
    const raw = args[t.index] ?? "";
    if (!raw.startsWith("--")) {
      // A single-dash word: `-h` asks for help; anything else (`-1`, `-x`) is a positional,
      // once per word (parseArgs splits `-ab` into two tokens).
      if (raw === "-h") throw new HelpRequested();
      if (t.index !== lastShort) items.push({ kind: "positional", text: raw });
      lastShort = t.index;
      continue;
    }
    const kind = Object.hasOwn(spec, t.name) ? spec[t.name] : undefined;
    if (t.name === "help" && kind === undefined) {
      if (t.inlineValue) throw new CliUsageError(`--help takes no value`);
      throw new HelpRequested();
    }
    if (kind === undefined) throw new UsageError(`unexpected argument: ${raw}`);
    const flag = `--${t.name}`;
    if (kind === "boolean") {
      if (t.inlineValue) throw new CliUsageError(`${flag} takes no value`);
      items.push({ kind: "switch", flag });
      continue;
    }
    if (t.value === undefined) throw new UsageError(`missing value for ${flag}`);
    items.push({ kind: "flag", flag, value: t.value });
  }
  return { items, rest };
}

/** The flags every client subcommand takes. */
export const CLIENT_FLAGS: Readonly<Record<string, FlagKind>> = {
  socket: "string",
  "job-id": "string",
  timeout: "string",
};

/** The connection settings of a client subcommand, from its flags and the environment. */
export interface ClientSettings {
  /** `--socket`, else MEMFDBUS_SOCKET, else the default socket. */
  socket: string;
  /** `--job-id`, if given. */
  jobFlag: string | undefined;
  /** `--timeout` in milliseconds (default 30 s). */
  timeoutMs: number;
}

/** The settings of the command this process runs, once it made them. */
let current: ClientSettings | null = null;

/** Settings before any flag: the default socket and timeout. */
export function clientDefaults(): ClientSettings {
  current = { socket: defaultSocket(), jobFlag: undefined, timeoutMs: DEFAULT_TIMEOUT_MS };
  return current;
}

/**
 * The socket and timeout of the client command this process runs (its flags applied), for the
 * messages of its errors; null before a client command parsed its arguments.
 */
export function currentClientSettings(): Readonly<ClientSettings> | null {
  return current;
}

/**
 * The client a command talks to the broker with: the socket and timeout of its flags, the job
 * `jobId`, a connection per request (a CLI process makes one or two), and replies awaited on the
 * main thread ({@link CLI_SYNC_WAIT_US}).
 */
export function cliClient(s: ClientSettings, jobId: string | null): Client {
  return new Client({
    socket: s.socket,
    jobId,
    keepAlive: false,
    syncWaitUs: CLI_SYNC_WAIT_US,
    timeoutMs: s.timeoutMs,
  });
}

/**
 * Apply a flag of {@link CLIENT_FLAGS} to `s`; false when `item` is not one of them.
 */
export function clientFlag(s: ClientSettings, item: Item): boolean {
  if (item.kind !== "flag") return false;
  if (item.flag === "--socket") s.socket = item.value;
  else if (item.flag === "--job-id") s.jobFlag = item.value;
  else if (item.flag === "--timeout") s.timeoutMs = parseTimeout(item.value);
  else return false;
  return true;
}

const U64_MAX = 18446744073709551615n;

/**
 * An object id: decimal digits only, non-zero, at most 2^64-1. Unlike the C CLI (defect D18),
 * leading spaces, signs and `-1` are refused. A word that is no number at all (`model.bin`)
 * gets a hint to select by name, an empty one a hint that a variable was not set.
 */
export function parseId(text: string): bigint {
  if (/^[0-9]+$/.test(text)) {
    const id = BigInt(text);
    if (id !== 0n && id <= U64_MAX) return id;
  }
  // `get "$id" out` with $id unset: say so instead of printing nothing after the colon.
  if (text === "") {
    throw new UsageError("invalid object id: (empty; is the variable holding it set?)");
  }
  const numberLike = /^[\s+-]*[0-9]/.test(text);
  throw new UsageError(
    numberLike
      ? `invalid object id: ${text}`
      : `invalid object id: ${text} (ids are numbers; to select by name use --name ${text})`,
  );
}

function byteLength(s: string): number {
  return new TextEncoder().encode(s).length;
}

/** Check a name given on the command line. */
export function checkName(name: string): void {
  if (name === "") throw new UsageError("object name must not be empty");
  if (byteLength(name) > NAME_HARD_MAX) throw new UsageError("object name too long");
}

/**
 * The job id for a request: `--job-id` if given (it must be non-empty), else a non-empty
 * MEMFDBUS_JOB_ID, else none.
 */
export function resolveJob(flag: string | undefined): string | null {
  const job = flag ?? jobIdFromEnv();
  if (job === null) return null;
  checkJob("--job-id", job);
  return job;
}

/** `FLAG requires a non-empty job id` or `job id too long`. */
export function checkJob(flag: string, job: string): void {
  if (job === "") throw new UsageError(`${flag} requires a non-empty job id`);
  if (byteLength(job) > JOB_MAX) throw new UsageError("job id too long");
}

/** The longest timer: setTimeout holds at most 2^31-1 ms. */
const TIMER_MAX_MS = 2_147_483_647;

/** The longest `--timeout`: one day. */
const TIMEOUT_MAX_MS = 86_400_000;

/**
 * Seconds as a positive decimal number (fractions allowed), in whole milliseconds rounded up;
 * null when `text` is not one.
 */
export function secondsToMs(text: string): number | null {
  const m = /^([0-9]*)(?:\.([0-9]*))?$/.exec(text);
  const whole = m?.[1] ?? "";
  const frac = m?.[2] ?? "";
  if (m === null || whole.length + frac.length === 0 || whole.length > 12) return null;
  // Exact decimal arithmetic: whole seconds, then milliseconds, then any finer part rounds up.
  let ms = Number(whole === "" ? "0" : whole) * 1000 + Number(frac.slice(0, 3).padEnd(3, "0"));
  if (/[1-9]/.test(frac.slice(3))) ms += 1;
  return ms === 0 ? null : ms;
}

/** `--timeout SECONDS`: how long any one request may take (at most a day). */
export function parseTimeout(text: string): number {
  const ms = secondsToMs(text);
  if (ms === null) {
    throw new CliUsageError(`invalid --timeout: ${text} (expected seconds, for example 30)`);
  }
  return Math.min(ms, TIMEOUT_MAX_MS);
}

/**
 * `--wait SECONDS` (a positive decimal number, fractions allowed) or `--wait max` (as long as
 * the broker allows). A value is always required, so `--wait` can never swallow an output path
 * silently: `get --name n --wait out.bin` fails with `invalid --wait: out.bin`.
 *
 * @param text the value
 * @param timeoutMs the request timeout, which the client adds to the wait for its deadline
 */
export function parseWait(text: string, timeoutMs: number): number | true {
  if (text === "max") return true;
  const ms = secondsToMs(text);
  if (ms === null) {
    throw new CliUsageError(
      `invalid --wait: ${text} (expected seconds, for example --wait 30, or --wait max)`,
    );
  }
  return Math.min(ms, TIMER_MAX_MS - timeoutMs);
}

/** `--wait requires --name` when a wait was asked for with an id selector. */
export function checkWait(wait: string | undefined, byName: boolean): void {
  if (wait !== undefined && !byName) throw new CliUsageError("--wait requires --name");
}
