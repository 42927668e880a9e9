/**
 * Protocol v1 on the wire: the 48-byte header with its named offsets, command and status codes,
 * the digest string format, and the exact error texts the broker sends. Pure: no I/O.
 *
 * The header is in native byte order; every platform this runs on (x86_64, aarch64) is
 * little-endian, so little-endian is written explicitly.
 *
 * @module
 */

export { DIGEST_LEN, DIGEST_PREFIX, formatDigest, isValidDigest } from "./digest.ts";

/**
 * Header size in bytes.
 *
 * @example Recognising a protocol v1 header
 * ```ts
 * import { HEADER_SIZE, MAGIC, VERSION } from "@memfdbus/memfdbus/protocol";
 * const header = new Uint8Array(HEADER_SIZE);
 * const view = new DataView(header.buffer);
 * view.setUint32(0, MAGIC, true);
 * view.setUint16(4, VERSION, true);
 * console.log(new TextDecoder().decode(header.subarray(0, 4))); // "BDFM": MFDB as a u32
 * ```
 */
export const HEADER_SIZE = 48;
/**
 * `MFDB` read as a little-endian u32: the first four bytes of every header.
 *
 * @example
 * ```ts
 * import { MAGIC } from "@memfdbus/memfdbus/protocol";
 * console.log(MAGIC.toString(16)); // 4d464442
 * ```
 */
export const MAGIC = 0x4d464442;
/**
 * The only protocol version (a u16 at offset 4).
 *
 * @example
 * ```ts
 * import { VERSION } from "@memfdbus/memfdbus/protocol";
 * console.log(VERSION); // 1
 * ```
 */
export const VERSION = 1;

/** Field offsets within the header. */
export const Off = {
  magic: 0,
  version: 4,
  cmd: 6,
  status: 8,
  jobLen: 12,
  objectId: 16,
  size: 24,
  nameLen: 32,
  textLen: 36,
  allowLen: 40,
  reserved: 44,
} as const;

/**
 * Command codes (a u16 at offset 6, echoed in replies).
 *
 * @example
 * ```ts
 * import { Cmd } from "@memfdbus/memfdbus/protocol";
 * const names = Object.fromEntries(Object.entries(Cmd).map(([k, v]) => [v, k]));
 * console.log(names[2]); // "GET"
 * ```
 */
export const Cmd = {
  /** Publish a sealed memfd. */
  PUT: 1,
  /** Fetch an object by id or newest-by-name. */
  GET: 2,
  /** List visible objects. */
  LIST: 3,
  /** Remove an object by id or newest-by-name. */
  DROP: 4,
  /**
   * Extension: describe an object (JSON text: id, name, size, digest, owner, allowed,
   * created_ns, seals) without sending a descriptor. A C broker answers `unknown command`.
   */
  STAT: 0x101,
  /**
   * Extension: hand this broker's listening socket and objects to the caller (a new broker
   * started with `--takeover`). Only a peer with the broker's own uid (or root) may ask; the
   * reply carries the listening socket, then the connection carries the objects.
   */
  TAKEOVER: 0x102,
  /**
   * Extension: subscribe to events (publish, drop, release, eviction) for a name, a name prefix
   * or every name the caller may list. After the OK reply the connection carries watch event
   * frames (see `src/protocol/watch.ts`). A C broker answers `unknown command`.
   */
  WATCH: 0x103,
  /**
   * Extension: what the broker, each job and each uid hold, next to their limits (JSON text,
   * see `src/protocol/usage.ts`); the request carries at most a job id. A C broker answers
   * `unknown command`.
   */
  USAGE: 0x104,
} as const;

/**
 * Extension bits carried in the header's `reserved` field. The C broker and clients ignore this
 * field, so setting them never changes what a C peer does. They count only together with
 * {@link EXT_MARK} in the field's high 16 bits, so a peer that fills `reserved` with arbitrary
 * bytes (which protocol v1 allows) never switches an extension on by accident.
 *
 * @example Reading the extension bits of a reply's reserved field (offset 44)
 * ```ts
 * import { extFlags, Flag, withExt } from "@memfdbus/memfdbus/protocol";
 * const reserved = withExt(Flag.KEEP_ALIVE | Flag.WAIT);
 * console.log((extFlags(reserved) & Flag.WAIT) !== 0, extFlags(0xffffffff)); // true 0
 * ```
 */
export const Flag = {
  /**
   * Request: the client would like to send further requests on this connection. Reply: the
   * broker agrees and keeps the connection open after this reply. Without the bit in the reply
   * the broker closes the connection, as protocol v1 always does.
   */
  KEEP_ALIVE: 0x1,
  /**
   * Request (GET or STAT by name): if no object has that name yet, wait until one is published
   * instead of answering `object not found`; the request's otherwise unused `size` field holds
   * the longest wait in milliseconds (0: the broker's limit). A C broker ignores the bit and
   * answers at once.
   */
  WAIT: 0x2,
  /**
   * Request (PUT): keep the object on this host. A broker with a cluster tier otherwise shares
   * every named object with the cluster; other brokers ignore the bit.
   */
  LOCAL: 0x4,
  /**
   * Request (LIST): list the cluster's names (the latest version of each) instead of this
   * host's objects. Reply: set when the broker answered with the cluster listing; a broker
   * without a cluster tier answers an error, a C broker ignores the bit and sends its own
   * listing without it.
   */
  CLUSTER: 0x8,
  /**
   * Request (PUT, with `text_len` 0 and no digest in the body): the broker computes the digest
   * of the sealed memfd itself (it hashes it anyway to verify) and returns it in the OK reply's
   * text (`text_len` 71), so the publisher hashes nothing. A C broker answers such a PUT with
   * `invalid object digest` (`text_len` must be 71) before reading the rest, and its reply has
   * no extension bits: the client then hashes and sends a plain PUT. Reply: set in every reply
   * this broker sends to a request carrying extension bits, advertising that it honours the bit.
   */
  DIGEST: 0x10,
} as const;

/** The marker that must fill the high 16 bits of `reserved` for extension bits to count. */
export const EXT_MARK = 0x4d460000;

/** The extension bits of a `reserved` value (0 unless it carries {@link EXT_MARK}). */
export function extFlags(reserved: number): number {
  return ((reserved & 0xffff0000) >>> 0) === EXT_MARK ? reserved & 0xffff : 0;
}

/** The `reserved` value that carries extension bits `flags` (0 for none). */
export function withExt(flags: number): number {
  return flags === 0 ? 0 : (EXT_MARK | flags) >>> 0;
}

/**
 * Set extension bits in an encoded header's `reserved` field (at {@link Off.reserved}), keeping
 * any it already carries. Used on a request that was encoded before the connection decided its
 * flags (keep-alive).
 *
 * @example
 * ```ts
 * import { addExtFlags, decodeHeader, encodeHeader, extFlags, Flag } from "@memfdbus/memfdbus/protocol";
 * const header = encodeHeader({ reserved: 0 });
 * addExtFlags(header, Flag.KEEP_ALIVE);
 * console.log(extFlags(decodeHeader(header).reserved)); // 1
 * ```
 */
export function addExtFlags(header: Uint8Array, flags: number): void {
  const v = new DataView(header.buffer, header.byteOffset, HEADER_SIZE);
  v.setUint32(Off.reserved, withExt(extFlags(v.getUint32(Off.reserved, true)) | flags), true);
}

/** Hard cap on name length in any request. */
export const NAME_HARD_MAX = 65536;
/** Hard cap on job id and allowed job id length. */
export const JOB_MAX = 256;

/** A decoded header. Lengths are u32 numbers; id and size are u64 bigints. */
export interface Header {
  /** Must equal {@link MAGIC}. */
  magic: number;
  /** Must equal {@link VERSION}. */
  version: number;
  /** Command, see {@link Cmd}; echoed in replies. */
  cmd: number;
  /** Result code in replies; ignored in requests. */
  status: number;
  /** Bytes of job id in the body. */
  jobLen: number;
  /** Object id selector or result. */
  objectId: bigint;
  /** Claimed or actual object size. */
  size: bigint;
  /** Bytes of name in the body. */
  nameLen: number;
  /** Bytes of text (digest, error or listing) in the body. */
  textLen: number;
  /** Bytes of allowed job id in a PUT body. */
  allowLen: number;
  /** Extension bits, see {@link Flag}. */
  reserved: number;
}

/** A header with every field zero except magic and version. */
export function emptyHeader(): Header {
  return {
    magic: MAGIC,
    version: VERSION,
    cmd: 0,
    status: 0,
    jobLen: 0,
    objectId: 0n,
    size: 0n,
    nameLen: 0,
    textLen: 0,
    allowLen: 0,
    reserved: 0,
  };
}

/** Encode a header into `out` (48 bytes at offset 0), returning `out`. */
export function encodeHeader(
  h: Partial<Header>,
  out: Uint8Array = new Uint8Array(HEADER_SIZE),
): Uint8Array {
  const v = new DataView(out.buffer, out.byteOffset, HEADER_SIZE);
  v.setUint32(Off.magic, h.magic ?? MAGIC, true);
  v.setUint16(Off.version, h.version ?? VERSION, true);
  v.setUint16(Off.cmd, h.cmd ?? 0, true);
  v.setUint32(Off.status, h.status ?? 0, true);
  v.setUint32(Off.jobLen, h.jobLen ?? 0, true);
  v.setBigUint64(Off.objectId, h.objectId ?? 0n, true);
  v.setBigUint64(Off.size, h.size ?? 0n, true);
  v.setUint32(Off.nameLen, h.nameLen ?? 0, true);
  v.setUint32(Off.textLen, h.textLen ?? 0, true);
  v.setUint32(Off.allowLen, h.allowLen ?? 0, true);
  v.setUint32(Off.reserved, h.reserved ?? 0, true);
  return out;
}

/** Decode the first 48 bytes of `bytes`. Does not validate magic or version. */
export function decodeHeader(bytes: Uint8Array): Header {
  if (bytes.length < HEADER_SIZE) {
    throw new RangeError(`Header needs 48 bytes, got ${bytes.length}`);
  }
  const v = new DataView(bytes.buffer, bytes.byteOffset, HEADER_SIZE);
  return {
    magic: v.getUint32(Off.magic, true),
    version: v.getUint16(Off.version, true),
    cmd: v.getUint16(Off.cmd, true),
    status: v.getUint32(Off.status, true),
    jobLen: v.getUint32(Off.jobLen, true),
    objectId: v.getBigUint64(Off.objectId, true),
    size: v.getBigUint64(Off.size, true),
    nameLen: v.getUint32(Off.nameLen, true),
    textLen: v.getUint32(Off.textLen, true),
    allowLen: v.getUint32(Off.allowLen, true),
    reserved: v.getUint32(Off.reserved, true),
  };
}

/** True when magic and version both match. */
export function isValidHeader(h: Header): boolean {
  return h.magic === MAGIC && h.version === VERSION;
}

/** The sum of the four body length fields, which the request-size limit applies to. */
export function requestBytes(h: Header): number {
  // Each is a u32, so the sum is below 2^34 and exact in a double.
  return h.nameLen + h.textLen + h.jobLen + h.allowLen;
}

/** The error texts of protocol v1, byte for byte as the C broker sends them. */
export const Text = {
  badHeader: "invalid protocol header",
  unknownCommand: "unknown command",
  clientQuota: "broker client quota exceeded",
  nameTooLong: "name too long",
  jobTooLong: "job id too long",
  allowTooLong: "allowed job id too long",
  requestTooLarge: "request payload exceeds broker limit",
  nameOverLimit: "object name exceeds broker name limit",
  readName: "failed to read object name",
  emptyName: "name must not be empty",
  invalidDigest: "invalid object digest",
  readDigest: "failed to read object digest",
  allowNeedsOwner: "allowed job requires owner job",
  readJob: "failed to read job id",
  emptyJob: "job id must not be empty",
  readAllow: "failed to read allowed job id",
  emptyAllow: "allowed job id must not be empty",
  missingFd: "missing memfd descriptor",
  notRegular: "descriptor is not a regular memfd-like file",
  notSealed: "fd is not fully immutable-sealed",
  digestAlloc: "digest verification allocation failed",
  digestShortRead: "digest verification short read",
  digestMismatch: "digest mismatch",
  objectQuota: "broker object quota exceeded",
  storeAlloc: "broker object store allocation failed",
  bothSelectors: "specify object id or name, not both",
  noSelector: "missing object selector",
  notFound: "object not found",
  accessDenied: "access denied",
  reopenFailed: "failed to reopen object fd",
  sendObject: "failed to send object response",
  sendName: "failed to send object name",
  sendDigest: "failed to send object digest",
  listTooLarge: "list response too large",
  listBuild: "failed to build object list",
  // Texts of this implementation, for conditions the C broker does not reply to at all.
  /** A name or job id holding a NUL byte, which the C broker silently cut (defect D11). */
  nulInName: "object name must not contain NUL bytes",
  /** See {@link Text.nulInName}. */
  nulInJob: "job id must not contain NUL bytes",
  /** See {@link Text.nulInName}. */
  nulInAllow: "allowed job id must not contain NUL bytes",
  /** Descriptors were lost in transit because the broker ran out of descriptors (D6, D7). */
  fdLimit: "broker descriptor limit reached",
  /** Too many GET --wait requests are parked at once. */
  waitQuota: "broker wait quota exceeded",
  /** A digest verification still queued when the broker stopped. */
  shuttingDown: "broker is shutting down",
  /** LIST with the CLUSTER bit to a broker started without `--cluster`. */
  noCluster: "broker has no cluster tier",
} as const;

/**
 * The broker's text for a digest verification read that failed for `reason` (a strerror text).
 */
export function digestReadFailedText(reason: string): string {
  return `digest verification read failed: ${reason}`;
}
