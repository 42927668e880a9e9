/**
 * A fetched object: metadata, a sealed descriptor of its own, and a lazily mapped view.
 *
 * @module
 */

import { fromUtf8, toBinary } from "../protocol/bytes.ts";
import { DIGEST_LEN, isValidDigest, NAME_HARD_MAX } from "../protocol/wire.ts";
import { ProtocolError } from "../errors.ts";
import { closeQuietly, strerror } from "../ffi.ts";
import { ReadOnlyMapping } from "../sys/mapping.ts";
import { inspectSealedFd, isFdProblem } from "../sys/memfd.ts";
import { fdRejectionText } from "../protocol/fd_problem.ts";
import { closeAll } from "../sys/unix_socket.ts";
import { digests } from "./hashing.ts";
import type { Exchange } from "./request.ts";
import { READ_AHEAD_BYTES } from "./connection.ts";

/**
 * A fetched object: its metadata, a sealed descriptor of its own, and a lazily mapped view.
 * Closing it unmaps the view (detaching every Uint8Array over it) and closes the descriptor.
 *
 * @example Reading an object in place
 * ```ts ignore
 * import { Client } from "@memfdbus/memfdbus";
 * await using client = new Client();
 * using obj = await client.get({ name: "model.bin" });
 * console.log(obj.id, obj.name, obj.size, obj.digest);
 * const firstByte = obj.view[0]; // read from the shared pages, no copy
 * console.log(firstByte);
 * ```
 */
export class BusObject implements Disposable {
  /** Object id. */
  readonly id: bigint;
  /** Size in bytes. */
  readonly size: number;
  /** `sha256:<hex>` of the contents, as the broker verified it. */
  readonly digest: string;
  /** The name as raw bytes. */
  readonly nameBytes: Uint8Array;
  #fd: number;
  #map: ReadOnlyMapping | null = null;

  /**
   * Wrap a received object; the new instance owns `fd`.
   *
   * @param id object id
   * @param size size in bytes
   * @param nameBytes raw name
   * @param digest digest string
   * @param fd the received descriptor, now owned by this object
   */
  constructor(id: bigint, size: number, nameBytes: Uint8Array, digest: string, fd: number) {
    this.id = id;
    this.size = size;
    this.nameBytes = nameBytes;
    this.digest = digest;
    this.#fd = fd;
  }

  /** The name, decoded as UTF-8. */
  get name(): string {
    return fromUtf8(this.nameBytes);
  }

  /**
   * The sealed descriptor (close-on-exec; O_RDWR as from the C broker, but the seals make every
   * write fail, or O_RDONLY from a broker run with --read-only-fds). Throws once closed.
   */
  get fd(): number {
    if (this.#fd < 0) throw new TypeError("Object is closed");
    return this.#fd;
  }

  /** True once closed. */
  get closed(): boolean {
    return this.#fd < 0 && this.#map === null;
  }

  /**
   * The contents, mapped read-only on first use. Valid until {@link BusObject.close}; after that
   * any kept reference reads as empty rather than touching unmapped memory.
   *
   * @example Counting lines without copying the object
   * ```ts ignore
   * import { Client } from "@memfdbus/memfdbus";
   * await using client = new Client();
   * using obj = await client.get({ name: "data.csv" });
   * let lines = 0;
   * for (const byte of obj.view) if (byte === 10) lines++;
   * console.log(lines);
   * ```
   */
  get view(): Uint8Array {
    this.#map ??= ReadOnlyMapping.of(this.fd, this.size);
    return this.#map.bytes;
  }

  /**
   * A separate mapping the caller owns (and closes).
   *
   * @example A mapping that outlives the object
   * ```ts ignore
   * import { Client } from "@memfdbus/memfdbus";
   * await using client = new Client();
   * const obj = await client.get({ name: "model.bin" });
   * using map = obj.map();
   * obj.close(); // the mapping stays valid until it is closed itself
   * console.log(map.bytes.length);
   * ```
   */
  map(): ReadOnlyMapping {
    return ReadOnlyMapping.of(this.fd, this.size);
  }

  /**
   * A copy of the contents.
   *
   * @example Keeping the bytes after the object is closed
   * ```ts ignore
   * import { Client } from "@memfdbus/memfdbus";
   * await using client = new Client();
   * let kept: Uint8Array;
   * {
   *   using obj = await client.get({ name: "greeting" });
   *   kept = obj.bytes();
   * }
   * console.log(kept.length);
   * ```
   */
  bytes(): Uint8Array {
    return this.view.slice();
  }

  /**
   * The contents decoded as UTF-8.
   *
   * @example
   * ```ts ignore
   * import { Client } from "@memfdbus/memfdbus";
   * await using client = new Client();
   * using obj = await client.get({ name: "config.json" });
   * const config = JSON.parse(obj.text());
   * console.log(config);
   * ```
   */
  text(): string {
    return fromUtf8(this.view);
  }

  /**
   * Recompute the digest and compare it with the one the broker sent.
   *
   * @example
   * ```ts ignore
   * import { Client } from "@memfdbus/memfdbus";
   * await using client = new Client();
   * using obj = await client.get({ name: "model.bin" });
   * if (!(await obj.verify())) throw new Error(`${obj.name} does not match ${obj.digest}`);
   * ```
   */
  async verify(): Promise<boolean> {
    const { digestBytes } = await digests();
    return digestBytes(this.view) === this.digest;
  }

  /**
   * Give up ownership of the descriptor (for example to hand it to a child process).
   *
   * @example Keeping only the descriptor
   * ```ts ignore
   * import { Client, Memfd } from "@memfdbus/memfdbus";
   * await using client = new Client();
   * const obj = await client.get({ name: "model.bin" });
   * using memfd = Memfd.adopt(obj.releaseFd()); // obj no longer closes it
   * console.log(memfd.size);
   * ```
   */
  releaseFd(): number {
    const fd = this.fd;
    this.#fd = -1;
    return fd;
  }

  /**
   * Unmap the view and close the descriptor. Safe to call more than once.
   *
   * @example Without `using`
   * ```ts ignore
   * import { Client } from "@memfdbus/memfdbus";
   * await using client = new Client();
   * const obj = await client.get({ name: "model.bin" });
   * try {
   *   console.log(obj.view.length);
   * } finally {
   *   obj.close();
   * }
   * ```
   */
  close(): void {
    this.#map?.close();
    this.#map = null;
    if (this.#fd >= 0) closeQuietly(this.#fd);
    this.#fd = -1;
  }

  /** Same as {@link BusObject.close}. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * Read the rest of a GET reply (name and digest) and check the descriptor that came with it:
 * a sealed regular file of the size the header states. With `verify`, the contents are hashed
 * and compared with the digest. The exchange is settled either way. Done on this thread when the
 * rest of the reply is already there or arrives within the sync wait (the object itself is
 * returned); otherwise a promise of it.
 */
export function receiveObject(
  r: Exchange,
  timeoutMs: number,
  verify: boolean,
): BusObject | Promise<BusObject> {
  const { header: h, fds } = r.reply;
  let fd = fds.shift() ?? -1;
  if (fds.length > 0) closeAll(fds);
  try {
    if (fd < 0) throw new ProtocolError("broker did not send an object fd");
    if (h.nameLen > NAME_HARD_MAX) {
      throw new ProtocolError("broker sent an oversized object name");
    }
    if (h.textLen !== DIGEST_LEN) throw new ProtocolError("broker sent an invalid object digest");
    const deadline = performance.now() + timeoutMs;
    const body = h.nameLen + DIGEST_LEN;
    if (body > READ_AHEAD_BYTES || !r.conn.fillNow(body, deadline, "receive object name")) {
      const owned = fd;
      fd = -1; // receiveRest owns it now
      return receiveRest(r, owned, deadline, verify);
    }
    const conn = r.conn;
    const name = conn.take(h.nameLen).slice();
    const digest = conn.take(DIGEST_LEN);
    closeAll(conn.takeFds());
    const obj = objectOf(r, name, digest, fd);
    fd = -1; // the object owns it now
    return verify ? verified(obj) : obj;
  } catch (e) {
    if (fd >= 0) closeQuietly(fd);
    r.fail();
    throw e;
  }
}

/** {@link receiveObject} once it has to wait off-thread for the name and digest. */
async function receiveRest(
  r: Exchange,
  fd: number,
  deadline: number,
  verify: boolean,
): Promise<BusObject> {
  const h = r.reply.header;
  try {
    let name: Uint8Array;
    let digest: Uint8Array;
    const conn = r.conn;
    if (h.nameLen + DIGEST_LEN <= READ_AHEAD_BYTES) {
      await conn.fill(h.nameLen + DIGEST_LEN, deadline, "receive object name");
      name = conn.take(h.nameLen).slice();
      digest = conn.take(DIGEST_LEN);
      closeAll(conn.takeFds());
    } else {
      const nameChunk = await conn.recvExact(h.nameLen, deadline, "receive object name");
      closeAll(nameChunk.fds);
      const digestChunk = await conn.recvExact(DIGEST_LEN, deadline, "receive object digest");
      closeAll(digestChunk.fds);
      name = nameChunk.bytes;
      digest = digestChunk.bytes;
    }
    const obj = objectOf(r, name, digest, fd);
    fd = -1; // the object owns it now
    return verify ? await verified(obj) : obj;
  } catch (e) {
    if (fd >= 0) closeQuietly(fd);
    r.fail();
    throw e;
  }
}

/**
 * The object of a GET reply read in full (the exchange is done): its digest checked, and its
 * descriptor a sealed regular file of the size the header states. Throws otherwise; the caller
 * still owns `fd` then.
 */
function objectOf(r: Exchange, name: Uint8Array, digest: Uint8Array, fd: number): BusObject {
  if (!isValidDigest(digest)) throw new ProtocolError("broker sent an invalid object digest");
  r.done();
  const h = r.reply.header;
  const info = inspectSealedFd(fd, h.size);
  if (isFdProblem(info)) {
    throw new ProtocolError(
      `broker sent an invalid object fd: ${fdRejectionText(info, h.size, strerror)}`,
    );
  }
  return new BusObject(h.objectId, Number(h.size), name, toBinary(digest), fd);
}

/** The object when its contents match its digest; closed and ProtocolError otherwise. */
async function verified(obj: BusObject): Promise<BusObject> {
  if (await obj.verify()) return obj;
  obj.close();
  throw new ProtocolError("object contents do not match the digest");
}
