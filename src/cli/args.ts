/**
 * Argument rules shared by the client subcommands: flag values, object ids, names and job ids,
 * with the C CLI's messages.
 *
 * @module
 */

import { UsageError } from "../errors.ts";
import { DEFAULT_TIMEOUT_MS, jobIdFromEnv } from "../client.ts";
import { JOB_MAX, NAME_HARD_MAX } from "../protocol/wire.ts";

/**
 * A CLI process has nothing else to do while it waits, so its replies are awaited on the main
 * thread for up to this long before the wait moves off-thread.
 */
export const CLI_SYNC_WAIT_US = 1_000_000;

/** The value after a flag, or `missing value for FLAG`. */
export function flagValue(args: readonly string[], i: number, flag: string): string {
  const v = args[i + 1];
  if (v === undefined) throw new UsageError(`missing value for ${flag}`);
  return v;
}

const U64_MAX = 18446744073709551615n;

/**
 * An object id: decimal digits only, non-zero, at most 2^64-1. Unlike the C CLI (defect D18),
 * leading spaces, signs and `-1` are refused.
 */
export function parseId(text: string): bigint {
  if (!/^[0-9]+$/.test(text)) throw new UsageError(`invalid object id: ${text}`);
  const id = BigInt(text);
  if (id === 0n || id > U64_MAX) throw new UsageError(`invalid object id: ${text}`);
  return id;
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

/**
 * The longest wait the CLI asks for, in ms. The broker caps a wait at its `--max-wait-ms` (at
 * most 2^31-1 ms) anyway; the client's deadline for the reply (the wait plus its request
 * timeout) must also fit a timer, which holds at most 2^31-1 ms.
 */
const WAIT_MAX_MS = 2_147_483_647 - DEFAULT_TIMEOUT_MS;

/**
 * Parse `--wait` (true: as long as the broker allows) or `--wait=SECONDS` (a positive decimal
 * number, fractions allowed, rounded up to whole milliseconds). Returns undefined for any other
 * argument; a bad value fails with `invalid --wait: X`.
 */
export function parseWaitFlag(arg: string): number | true | undefined {
  if (arg === "--wait") return true;
  if (!arg.startsWith("--wait=")) return undefined;
  const text = arg.slice("--wait=".length);
  const m = /^([0-9]*)(?:\.([0-9]*))?$/.exec(text);
  const whole = m?.[1] ?? "";
  const frac = m?.[2] ?? "";
  if (m === null || whole.length + frac.length === 0) {
    throw new UsageError(`invalid --wait: ${text}`);
  }
  // Exact decimal arithmetic: whole seconds, then milliseconds, then any finer part rounds up.
  let ms = Number(whole === "" ? "0" : whole) * 1000 + Number(frac.slice(0, 3).padEnd(3, "0"));
  if (/[1-9]/.test(frac.slice(3))) ms += 1;
  if (ms === 0) throw new UsageError(`invalid --wait: ${text}`);
  return Math.min(ms, WAIT_MAX_MS);
}

/** `--wait requires --name` when a wait was asked for with an id selector. */
export function checkWait(wait: number | true | undefined, byName: boolean): void {
  if (wait !== undefined && !byName) throw new UsageError("--wait requires --name");
}
