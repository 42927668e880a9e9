/**
 * The WATCH extension on the wire. Pure: no I/O.
 *
 * Request: a protocol v1 header with `cmd` 0x103 ({@link Cmd.WATCH}), `size` holding the selector
 * kind (0 every name the caller may list, 1 one name, 2 a name prefix), `name_len` the name or
 * prefix (0 for every name), `job_len` the caller's job; `object_id`, `text_len` and `allow_len`
 * are 0. Body: name, then job, as in a GET. A C broker answers `unknown command` (status 3).
 *
 * Reply: an error reply as for any request, or an OK header (`cmd` 0x103, status 0, `object_id`
 * the newest id when the watch began, `size` the broker's per-watcher queue length). After an OK
 * reply the connection carries only event frames, broker to client, until either side closes:
 *
 * | off | size | field      | notes                                                     |
 * |----:|-----:|------------|-----------------------------------------------------------|
 * |   0 |    4 | magic      | `0x5744464d`, on the wire `4d 46 44 57` ("MFDW")           |
 * |   4 |    2 | kind       | 1 publish, 2 drop, 3 release, 4 evict, 5 missed           |
 * |   6 |    2 | digest_len | 71, or 0 for `missed`                                     |
 * |   8 |    4 | name_len   | bytes of name after the frame header (0: every name)      |
 * |  12 |    4 | flags      | senders write 0; receivers ignore it                      |
 * |  16 |    8 | id         | the object id (0 for `missed`)                            |
 * |  24 |    8 | size       | the object size (0 for `missed`)                          |
 * |  32 |    8 | time_ns    | CLOCK_REALTIME of the event                               |
 * |  40 |    8 | missed     | events of this name not delivered before this one        |
 *
 * then the name bytes, then the digest. All little-endian.
 *
 * A slow watcher loses events, never delays the broker: see `WatchQueue`. When its queue is full,
 * a new event replaces the newest queued event of the same name and carries, in `missed`, how
 * many events of that name it stands for; an event of a name with nothing queued is dropped and
 * counted, and the watcher receives a `missed` event (empty name: any name) with that count as
 * soon as its queue has room.
 *
 * @module
 */

import { ProtocolError } from "../errors.ts";
import {
  Cmd,
  DIGEST_LEN,
  encodeHeader,
  type Header,
  HEADER_SIZE,
  isValidDigest,
  JOB_MAX,
  NAME_HARD_MAX,
  requestBytes,
  Text,
} from "./wire.ts";
import { fromBinary, toBinary } from "./bytes.ts";

/** `MFDW` as a little-endian u32: the first four bytes of every watch event frame. */
export const WATCH_MAGIC = 0x5744464d;
/** Size of an event frame's fixed part. */
export const WATCH_FRAME_SIZE = 48;

/** Selector kinds, carried in the request's `size` field. */
export const WatchSelect = {
  /** Every name the caller may list. */
  ALL: 0,
  /** Exactly one name. */
  NAME: 1,
  /** Every name starting with the given bytes. */
  PREFIX: 2,
} as const;

/** What a watch follows. Names and prefixes are binary strings (raw bytes). */
export type WatchSelector =
  | { readonly kind: "all" }
  | { readonly kind: "name"; readonly name: string }
  | { readonly kind: "prefix"; readonly prefix: string };

/** Event kinds, by their wire number. */
export const WatchKind = {
  /** A PUT committed. */
  publish: 1,
  /** A client dropped the object. */
  drop: 2,
  /** Retention released it (a newer version took its place). */
  release: 3,
  /** Eviction released it to make room. */
  evict: 4,
  /** Events were lost (the watcher was too slow); `missed` says how many. */
  missed: 5,
} as const;

/** An event kind's name. */
export type WatchKindName = "publish" | "drop" | "release" | "evict" | "missed";

const KIND_NAMES: readonly (WatchKindName | undefined)[] = [
  undefined,
  "publish",
  "drop",
  "release",
  "evict",
  "missed",
];

/** One event, as the broker pushes it. `name` is a binary string (raw bytes). */
export interface WatchEvent {
  /** What happened. */
  readonly kind: WatchKindName;
  /**
   * The object id on this broker; 0 for `missed`, and for a publish or drop on another host of
   * the cluster tier (ids are host-local: fetch such an object by name).
   */
  readonly id: number;
  /** The object name; for `missed`, the name whose events were lost or "" for any name. */
  readonly name: string;
  /** Object size in bytes (0 for `missed`). */
  readonly size: number;
  /** The object's digest, or null for `missed`. */
  readonly digest: string | null;
  /** When it happened, CLOCK_REALTIME nanoseconds. */
  readonly timeNs: bigint;
  /** Events of this name (of any name for a `missed` with an empty name) not delivered before it. */
  readonly missed: number;
}

/** Error texts of WATCH requests. */
export const WatchText = {
  /** The selector kind is unknown, or its name does not fit the kind. */
  badSelector: "invalid watch selector",
  /** The broker has as many watchers as it allows. */
  watcherQuota: "broker watcher quota exceeded",
} as const;

/**
 * Encode a WATCH request (header and body).
 *
 * @param selector what to watch (names as binary strings)
 * @param job the caller's job (binary string), or null
 */
export function encodeWatchRequest(selector: WatchSelector, job: string | null): Uint8Array {
  const name = selector.kind === "name"
    ? selector.name
    : selector.kind === "prefix"
    ? selector.prefix
    : "";
  const kind = selector.kind === "name"
    ? WatchSelect.NAME
    : selector.kind === "prefix"
    ? WatchSelect.PREFIX
    : WatchSelect.ALL;
  const jobText = job ?? "";
  const out = new Uint8Array(HEADER_SIZE + name.length + jobText.length);
  encodeHeader(
    { cmd: Cmd.WATCH, size: BigInt(kind), nameLen: name.length, jobLen: jobText.length },
    out,
  );
  out.set(fromBinary(name), HEADER_SIZE);
  out.set(fromBinary(jobText), HEADER_SIZE + name.length);
  return out;
}

/**
 * Check a WATCH request header before its body is read, in this order: the selector (kind in
 * `size`, a name exactly when the kind needs one, `object_id`, `text_len` and `allow_len` zero),
 * `name too long`, `job id too long`, the request-size limit, the broker's name limit. Returns the
 * error text (status 3), or null when the body may be read.
 *
 * @param h the request header
 * @param limits the broker's request and name limits
 */
export function checkWatchHeader(
  h: Header,
  limits: { readonly maxRequestBytes: number; readonly maxNameBytes: number },
): string | null {
  const kind = h.size;
  if (kind > 2n || h.objectId !== 0n || h.textLen !== 0 || h.allowLen !== 0) {
    return WatchText.badSelector;
  }
  if ((kind === 0n) !== (h.nameLen === 0)) return WatchText.badSelector;
  if (h.nameLen > NAME_HARD_MAX) return Text.nameTooLong;
  if (h.jobLen > JOB_MAX) return Text.jobTooLong;
  if (requestBytes(h) > limits.maxRequestBytes) return Text.requestTooLarge;
  if (h.nameLen > limits.maxNameBytes) return Text.nameOverLimit;
  return null;
}

/**
 * The selector of a checked request once its name (binary string) was read. Returns the
 * error text for a name holding a NUL byte.
 */
export function watchSelectorOf(h: Header, name: string): WatchSelector | { error: string } {
  if (name.includes("\0")) return { error: Text.nulInName };
  if (h.size === 1n) return { kind: "name", name };
  if (h.size === 2n) return { kind: "prefix", prefix: name };
  return { kind: "all" };
}

/** Does an event for `name` match the selector? (Visibility is the broker's to check.) */
export function selectorMatches(selector: WatchSelector, name: string): boolean {
  switch (selector.kind) {
    case "all":
      return true;
    case "name":
      return name === selector.name;
    case "prefix":
      return name.startsWith(selector.prefix);
  }
}

/** Encode one event frame. */
export function encodeWatchEvent(ev: WatchEvent): Uint8Array {
  const digest = ev.digest ?? "";
  const out = new Uint8Array(WATCH_FRAME_SIZE + ev.name.length + digest.length);
  const v = new DataView(out.buffer);
  v.setUint32(0, WATCH_MAGIC, true);
  v.setUint16(4, WatchKind[ev.kind], true);
  v.setUint16(6, digest.length, true);
  v.setUint32(8, ev.name.length, true);
  v.setUint32(12, 0, true);
  v.setBigUint64(16, BigInt(ev.id), true);
  v.setBigUint64(24, BigInt(ev.size), true);
  v.setBigUint64(32, ev.timeNs, true);
  v.setBigUint64(40, BigInt(ev.missed), true);
  out.set(fromBinary(ev.name), WATCH_FRAME_SIZE);
  out.set(fromBinary(digest), WATCH_FRAME_SIZE + ev.name.length);
  return out;
}

/** The fixed part of an event frame, checked; the body follows. */
export interface WatchFrameHead {
  /** Event kind. */
  readonly kind: WatchKindName;
  /** Bytes of name after the fixed part. */
  readonly nameLen: number;
  /** Bytes of digest after the name (71, or 0 for `missed`). */
  readonly digestLen: number;
  /** Object id. */
  readonly id: number;
  /** Object size. */
  readonly size: number;
  /** Event time. */
  readonly timeNs: bigint;
  /** Events not delivered before this one. */
  readonly missed: number;
}

function invalid(what: string): never {
  throw new ProtocolError(`broker sent an invalid watch event: ${what}`);
}

function safe(v: bigint, what: string): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) invalid(`${what} out of range`);
  return Number(v);
}

/**
 * Decode and check the 48-byte fixed part of an event frame. Throws {@link ProtocolError}
 * (`broker sent an invalid watch event: ...`) on anything a broker never sends.
 */
export function decodeWatchHead(bytes: Uint8Array): WatchFrameHead {
  if (bytes.length < WATCH_FRAME_SIZE) invalid("short frame");
  const v = new DataView(bytes.buffer, bytes.byteOffset, WATCH_FRAME_SIZE);
  if (v.getUint32(0, true) !== WATCH_MAGIC) invalid("bad magic");
  const kind = KIND_NAMES[v.getUint16(4, true)];
  if (kind === undefined) invalid(`unknown kind ${v.getUint16(4, true)}`);
  const digestLen = v.getUint16(6, true);
  const nameLen = v.getUint32(8, true);
  const id = safe(v.getBigUint64(16, true), "id");
  const size = safe(v.getBigUint64(24, true), "size");
  const missed = safe(v.getBigUint64(40, true), "missed count");
  if (nameLen > NAME_HARD_MAX) invalid("name too long");
  if (kind === "missed") {
    if (digestLen !== 0 || id !== 0 || size !== 0 || missed === 0) {
      invalid("malformed missed event");
    }
  } else {
    if (digestLen !== DIGEST_LEN) invalid("bad digest length");
    if (nameLen === 0) invalid("missing id or name");
    // Id 0 is a publish or drop on another host of the cluster (ids are host-local); an object
    // this broker released or evicted always has its own id.
    if (id === 0 && kind !== "publish" && kind !== "drop") invalid("missing id or name");
  }
  return { kind, nameLen, digestLen, id, size, timeNs: v.getBigUint64(32, true), missed };
}

/** Complete an event from its checked fixed part and its body (name then digest). */
export function finishWatchEvent(head: WatchFrameHead, body: Uint8Array): WatchEvent {
  if (body.length !== head.nameLen + head.digestLen) invalid("body length");
  const name = toBinary(body.subarray(0, head.nameLen));
  const digestBytes = body.subarray(head.nameLen);
  if (head.digestLen > 0 && !isValidDigest(digestBytes)) invalid("bad digest");
  return {
    kind: head.kind,
    id: head.id,
    name,
    size: head.size,
    digest: head.digestLen > 0 ? toBinary(digestBytes) : null,
    timeNs: head.timeNs,
    missed: head.missed,
  };
}

/**
 * Decode the event frame at the start of `buf`: the event and the bytes it took, or null when
 * the frame is not complete yet. Throws {@link ProtocolError} on a corrupt frame.
 */
export function decodeWatchEvent(buf: Uint8Array): { event: WatchEvent; length: number } | null {
  if (buf.length < WATCH_FRAME_SIZE) return null;
  const head = decodeWatchHead(buf);
  const length = WATCH_FRAME_SIZE + head.nameLen + head.digestLen;
  if (buf.length < length) return null;
  return { event: finishWatchEvent(head, buf.subarray(WATCH_FRAME_SIZE, length)), length };
}
