/**
 * The client's GET and STAT requests, one exchange each; {@link Client.get} retries a wait
 * against brokers that do not honour it, and {@link Client.stat} falls back to a GET and a
 * LIST against brokers without STAT.
 *
 * @module
 */

import { fromUtf8 } from "../protocol/bytes.ts";
import { BrokerError, Status, TimeoutError } from "../errors.ts";
import { Cmd, encodeHeader, Flag, HEADER_SIZE, withExt } from "../protocol/wire.ts";
import { parseStat } from "../protocol/stat.ts";
import { type BusObject, receiveObject } from "./bus_object.ts";
import { type ObjectStat, WAIT_FOREVER_MS } from "./options.ts";
import { isUnknownCommand, replyText, type RequestLink } from "./request.ts";

/** What a GET or STAT asks for, as bytes. */
export interface Lookup {
  /** The object id (0n: by name). */
  readonly id: bigint;
  /** The name (empty: by id). */
  readonly name: Uint8Array;
  /** The caller's job id (empty: none). */
  readonly job: Uint8Array;
  /** How long the broker may wait for the name, in ms (0: its limit; null: no wait). */
  readonly waitMs: number | null;
}

/**
 * One GET exchange; `verify` re-hashes the object received. On a kept connection whose reply
 * arrives within the sync wait this runs to the end on the calling thread and returns the object
 * itself (no promise, no microtask turn); otherwise a promise of it.
 */
export function getOnce(
  link: RequestLink,
  lookup: Lookup,
  verify: boolean,
): BusObject | Promise<BusObject> {
  const { id, name, job, waitMs } = lookup;
  // The request is encoded into one reused buffer (the requester copies it before it waits).
  const length = HEADER_SIZE + name.length + job.length;
  const data = length <= requestScratch.length
    ? requestScratch.subarray(0, length)
    : new Uint8Array(length);
  encodeHeader({
    cmd: Cmd.GET,
    objectId: id,
    nameLen: name.length,
    jobLen: job.length,
    size: waitMs === null ? 0n : BigInt(waitMs),
    reserved: waitMs === null ? 0 : withExt(Flag.WAIT),
  }, data);
  if (name.length > 0) data.set(name, HEADER_SIZE);
  if (job.length > 0) data.set(job, HEADER_SIZE + name.length);
  const r = link.requester.request(
    data,
    "send get request",
    link.timeoutMs + (waitMs === null ? 0 : waitMs === 0 ? WAIT_FOREVER_MS : waitMs),
  );
  if (r instanceof Promise) return r.then((x) => receiveObject(x, link.timeoutMs, verify));
  return receiveObject(r, link.timeoutMs, verify);
}

const requestScratch = new Uint8Array(1024);

/**
 * One STAT exchange; null when the broker does not know the command (a C broker), so the caller
 * can answer from a GET and a LIST.
 */
export async function statRequest(
  link: RequestLink,
  lookup: Lookup,
): Promise<ObjectStat | null> {
  const { id, name, job, waitMs } = lookup;
  const header = encodeHeader({
    cmd: Cmd.STAT,
    objectId: id,
    nameLen: name.length,
    jobLen: job.length,
    size: BigInt(waitMs ?? 0),
    reserved: waitMs === null ? 0 : withExt(Flag.WAIT),
  });
  let r;
  try {
    r = await link.requester.exchange(
      [[header, "send stat request"], [name, "send object name"], [job, "send job id"]],
      [],
      link.timeoutMs + (waitMs === null ? 0 : waitMs === 0 ? WAIT_FOREVER_MS : waitMs),
    );
  } catch (e) {
    if (isUnknownCommand(e)) return null;
    throw waitMs === null ? e : waitExpired(e, name, waitMs);
  }
  const st = await replyText(r, link.timeoutMs, "receive stat", parseStat);
  return { id: r.reply.header.objectId, size: Number(r.reply.header.size), ...st };
}

/**
 * A wait by name that ended with "object not found" becomes a {@link TimeoutError}: no object
 * named NAME appeared within N s. Any other error stays as it is.
 */
export function waitExpired(e: unknown, name: Uint8Array, waitMs: number): unknown {
  if (!(e instanceof BrokerError) || e.status !== Status.NOT_FOUND) return e;
  const within = waitMs === 0 ? "the broker's longest wait" : `${waitMs / 1000} s`;
  return new TimeoutError(
    "wait",
    waitMs,
    `no object named ${fromUtf8(name)} appeared within ${within}`,
  );
}
