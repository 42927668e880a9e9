/**
 * Waiting in tests. A test waits for a condition, never for a fixed time: {@link waitFor} polls
 * until the condition holds and fails with a message naming what did not happen. The only fixed
 * wait is {@link letTimePass}, for the few tests that must let time pass on purpose (to show that
 * something does NOT happen within a window, or that a deadline is honoured).
 *
 * @module
 */

/** How long {@link waitFor} waits by default: generous, because the machine may be loaded. */
export const DEFAULT_WAIT_MS = 30_000;

/** What {@link waitFor} waits for, and for how long. */
export interface WaitOptions {
  /** Named in the error when the condition never held ("the broker to accept", ...). */
  readonly what: string;
  /** The deadline in milliseconds (default {@link DEFAULT_WAIT_MS}). */
  readonly timeoutMs?: number;
  /** Milliseconds between two polls (default 5). */
  readonly everyMs?: number;
}

/** Thrown by {@link waitFor} when the deadline passes before the condition holds. */
export class WaitTimeout extends Error {
  /** Create one. */
  constructor(what: string, timeoutMs: number, last: unknown) {
    super(`timed out after ${timeoutMs} ms waiting for ${what} (last value: ${String(last)})`);
    this.name = "WaitTimeout";
  }
}

/**
 * Poll `cond` until it returns a truthy value and return that value; throw {@link WaitTimeout}
 * naming `what` once `timeoutMs` passes.
 */
export async function waitFor<T>(
  cond: () => T | Promise<T>,
  opts: WaitOptions,
): Promise<NonNullable<T>> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_WAIT_MS;
  const end = performance.now() + timeoutMs;
  for (;;) {
    const v = await cond();
    if (v) return v as NonNullable<T>;
    if (performance.now() > end) throw new WaitTimeout(opts.what, timeoutMs, v);
    await new Promise((r) => setTimeout(r, opts.everyMs ?? 5));
  }
}

/**
 * Let `ms` milliseconds pass on purpose. Use it only where time passing IS the test (something
 * must not happen within a window, a deadline must be honoured, a client must stay idle); every
 * other wait is {@link waitFor} on a condition.
 */
export function letTimePass(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
