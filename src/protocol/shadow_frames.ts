/**
 * The framing between a broker and its shadow (and between an old and a new broker during a
 * takeover). Not part of protocol v1: it only ever runs between two memfdbus processes. Pure.
 *
 * A frame is a 16-byte header (magic `MFDS`, type, payload length, descriptor count) followed by
 * a JSON payload; its descriptors travel with the frame's first bytes (one sendmsg per frame).
 * Names and job ids are raw bytes, so they travel base64-encoded.
 *
 * @module
 */

import type { ClusterShare, ObjectOrigin, StoredObject } from "../core/store.ts";
import { ProtocolError } from "../errors.ts";

/** `MFDS` as a little-endian u32. */
export const SHADOW_MAGIC = 0x5344464d;
/** Frame header size. */
export const FRAME_HEADER = 16;
/** Most descriptors one frame carries (one SCM_RIGHTS message holds at most 253). */
export const FDS_PER_FRAME = 200;

/**
 * The largest payload a frame may declare: 32 MiB. The largest frame sent is a batch of
 * {@link FDS_PER_FRAME} objects whose names are at the 64 KiB limit (about 18 MiB of base64);
 * a peer that declares more is dropped instead of being buffered.
 */
export const MAX_FRAME_PAYLOAD = 32 * 1024 * 1024;

/** Frame types. */
export const Frame = {
  /** broker → shadow: send me your state. */
  HELLO: 1,
  /** Either way: a batch of objects; one descriptor per object, in order. */
  OBJECTS: 2,
  /** shadow → broker: end of state, with the next id. */
  STATE_END: 3,
  /** broker → shadow: forget everything, the OBJECTS that follow are the whole state. */
  SEED: 4,
  /** broker → shadow: end of a seed, with the next id. */
  SEED_END: 5,
  /** broker → shadow: one committed object (one descriptor). */
  ADD: 6,
  /** broker → shadow: an object was dropped. */
  REMOVE: 7,
  /** shadow → broker: the preceding ADD, REMOVE or SEED_END is held. */
  ACK: 8,
  /**
   * old broker → new broker during a takeover: accepted connections nothing was read from yet
   * (one descriptor each), so no waiting client is dropped by the handover.
   */
  CONNS: 9,
  /** old broker → new broker: no more CONNS. */
  CONNS_END: 10,
  /** shadow → broker: this shadow serves another broker; payload `{ reason }`. */
  REFUSED: 11,
} as const;

/** Object metadata as it travels (ids and times as decimal strings, bytes as base64). */
export interface WireObject {
  /** Id. */
  readonly id: number;
  /** Size in bytes. */
  readonly size: number;
  /** Digest string. */
  readonly digest: string;
  /** Name bytes, base64. */
  readonly name: string;
  /** Owner job bytes, base64, or null. */
  readonly owner: string | null;
  /** Allowed job bytes, base64, or null. */
  readonly allowed: string | null;
  /** Publication time in ns, decimal. */
  readonly created: string;
  /**
   * The publisher's uid (per-uid quotas and shares count it), when the broker knew it. Absent in
   * frames of brokers that predate it; such objects are charged to no uid.
   */
  readonly uid?: number;
  /**
   * With `--cluster`: where a copy pulled from the cluster was published (absent for objects
   * published on this host). An extension: receivers that do not know it ignore it.
   */
  readonly origin?: ObjectOrigin;
  /**
   * With `--cluster`, for objects published on this host: `"local"` (kept on this host),
   * `"queued"` (waiting for upload, or not known to be committed) or the cluster revision that
   * committed it (0: handled, not to be committed again). Absent means never shared. An
   * extension like `origin`.
   */
  readonly cluster?: ClusterShare;
}

// btoa and atob work on binary strings, which is what names and job ids are.
const b64 = (binary: string): string => btoa(binary);
const unb64 = (s: string): string => atob(s);

/**
 * Metadata of a stored object for the wire.
 *
 * @param o the object
 * @param share its cluster state now (else the one it was recovered with, if any)
 */
export function toWire(o: StoredObject, share: ClusterShare | undefined = o.cluster): WireObject {
  return {
    id: o.id,
    size: o.size,
    digest: o.digest,
    name: b64(o.name),
    owner: o.owner === null ? null : b64(o.owner),
    allowed: o.allowed === null ? null : b64(o.allowed),
    created: String(o.createdNs),
    ...(o.uid === undefined ? {} : { uid: o.uid }),
    ...(o.origin === undefined ? {} : {
      origin: { host: o.origin.host, id: o.origin.id, revision: o.origin.revision },
    }),
    ...(share === undefined ? {} : { cluster: share }),
  };
}

/** A stored object from wire metadata and the descriptor that came with it. */
export function fromWire(w: WireObject, fd: number): StoredObject {
  return {
    id: w.id,
    size: w.size,
    fd,
    digest: w.digest,
    name: unb64(w.name),
    owner: w.owner === null ? null : unb64(w.owner),
    allowed: w.allowed === null ? null : unb64(w.allowed),
    createdNs: BigInt(w.created),
    ...(isUid(w.uid) ? { uid: w.uid } : {}),
    ...(w.origin === undefined ? {} : { origin: w.origin }),
    ...(w.cluster === undefined ? {} : { cluster: w.cluster }),
  };
}

/** Is `v` a uid (an integer from 0 to 4294967295)? */
export function isUid(v: unknown): v is number {
  return Number.isSafeInteger(v) && (v as number) >= 0 && (v as number) <= 0xffffffff;
}

/** Encode one frame. */
export function encodeFrame(type: number, payload: unknown, fdCount = 0): Uint8Array {
  const body = new TextEncoder().encode(JSON.stringify(payload ?? null));
  const out = new Uint8Array(FRAME_HEADER + body.length);
  const v = new DataView(out.buffer);
  v.setUint32(0, SHADOW_MAGIC, true);
  v.setUint16(4, type, true);
  v.setUint32(8, body.length, true);
  v.setUint32(12, fdCount, true);
  out.set(body, FRAME_HEADER);
  return out;
}

/** A decoded frame. */
export interface DecodedFrame {
  /** Frame type. */
  readonly type: number;
  /** Parsed JSON payload. */
  readonly payload: unknown;
  /** Descriptors the frame carries. */
  readonly fdCount: number;
  /** Bytes the frame occupied. */
  readonly length: number;
}

/**
 * Decode the frame at the start of `buf`, or return null when it is not complete yet. Throws a
 * {@link ProtocolError} on a corrupt header, a payload over {@link MAX_FRAME_PAYLOAD}, more than
 * {@link FDS_PER_FRAME} descriptors, or a payload that is not JSON.
 */
export function decodeFrame(buf: Uint8Array): DecodedFrame | null {
  if (buf.length < FRAME_HEADER) return null;
  const v = new DataView(buf.buffer, buf.byteOffset, buf.length);
  if (v.getUint32(0, true) !== SHADOW_MAGIC) throw new ProtocolError("corrupt shadow frame");
  const len = v.getUint32(8, true);
  if (len > MAX_FRAME_PAYLOAD) {
    throw new ProtocolError(
      `shadow frame payload of ${len} bytes exceeds the limit of ${MAX_FRAME_PAYLOAD}`,
    );
  }
  const fds = v.getUint32(12, true);
  if (fds > FDS_PER_FRAME) {
    throw new ProtocolError(`shadow frame declares ${fds} descriptors (at most ${FDS_PER_FRAME})`);
  }
  if (buf.length < FRAME_HEADER + len) return null;
  let payload: unknown;
  try {
    payload = JSON.parse(new TextDecoder().decode(buf.subarray(FRAME_HEADER, FRAME_HEADER + len)));
  } catch {
    throw new ProtocolError("shadow frame payload is not JSON");
  }
  return {
    type: v.getUint16(4, true),
    payload,
    fdCount: fds,
    length: FRAME_HEADER + len,
  };
}
