/**
 * Which object a request names, and the checks a client makes on names, job ids and waits before
 * anything is sent (so a request the broker would refuse never leaves the process).
 *
 * @module
 */

import { JOB_MAX, NAME_HARD_MAX } from "../protocol/wire.ts";
import { utf8 } from "../protocol/bytes.ts";

/**
 * Which object: an id, `{ id }`, or `{ name }` for the newest object with that name.
 *
 * @example
 * ```ts ignore
 * import { Client } from "@memfdbus/memfdbus";
 * await using client = new Client();
 * using byId = await client.get(7n); // or 7, or { id: 7n }
 * using newest = await client.get({ name: "model.bin" });
 * ```
 */
export type Selector =
  | bigint
  | number
  | { readonly id: bigint | number }
  | { readonly name: string | Uint8Array };

/**
 * Per-call job override: a job id, or null for an unscoped request.
 *
 * @example Listing as another job than the client's
 * ```ts ignore
 * import { Client } from "@memfdbus/memfdbus";
 * await using client = new Client({ jobId: "trainer" });
 * const mine = await client.list(); // as "trainer"
 * const all = await client.list({ jobId: null }); // unscoped
 * console.log(mine.length, all.length);
 * ```
 */
export interface JobOption {
  /** The job id for this call; overrides the client's. */
  readonly jobId?: string | null;
}

// The name of a selector by id: empty, shared, never written to.
const NO_NAME = new Uint8Array(0);

/** The id (0n for none) and name bytes (empty for none) a selector puts in a request. */
export function selectorParts(selector: Selector): { id: bigint; name: Uint8Array } {
  if (typeof selector === "bigint" || typeof selector === "number") {
    return { id: toId(selector), name: NO_NAME };
  }
  if ("id" in selector) return { id: toId(selector.id), name: NO_NAME };
  return { id: 0n, name: nameBytesOf(selector.name) };
}

function toId(v: bigint | number): bigint {
  const id = typeof v === "bigint" ? v : Number.isSafeInteger(v) ? BigInt(v) : -1n;
  if (id <= 0n || id > 0xffffffffffffffffn) throw new RangeError(`Invalid object id "${v}"`);
  return id;
}

/** A name as request bytes: non-empty, at most NAME_HARD_MAX bytes, no NUL. */
export function nameBytesOf(name: string | Uint8Array, what = "object name"): Uint8Array {
  const bytes = typeof name === "string" ? utf8(name) : name;
  if (bytes.length === 0) throw new TypeError(`${what} must not be empty`);
  if (bytes.length > NAME_HARD_MAX) throw new RangeError(`${what} too long`);
  if (bytes.includes(0)) throw new TypeError(`${what} must not contain NUL bytes`);
  return bytes;
}

/** A job id as request bytes: non-empty, at most JOB_MAX bytes, no NUL. */
export function jobBytesOf(job: string, what: string): Uint8Array {
  const bytes = utf8(job);
  if (bytes.length === 0) throw new TypeError(`${what} must not be empty`);
  if (bytes.length > JOB_MAX) throw new RangeError(`${what} too long`);
  if (bytes.includes(0)) throw new TypeError(`${what} must not contain NUL bytes`);
  return bytes;
}

/** The wait of a GET option in ms (0: the broker's limit), or null for no waiting. */
export function waitOption(wait: number | boolean | undefined, id: bigint): number | null {
  if (wait === undefined || wait === false) return null;
  if (id !== 0n) throw new TypeError("wait needs a name selector");
  if (wait === true) return 0;
  if (!Number.isSafeInteger(wait) || wait <= 0) throw new RangeError(`Invalid wait "${wait}"`);
  return wait;
}
