/**
 * The memfdbus client: publish, fetch, list and drop objects on a broker, speaking protocol v1.
 *
 * Every call is async and bounded by a timeout, so a slow or hung broker never blocks the
 * caller's event loop. With `keepAlive` (the default) one connection serves several requests
 * when the broker supports it (a flag in the header's reserved field that C brokers ignore);
 * against a C broker each request simply uses a new connection.
 *
 * @example Publish bytes and read them back through a shared mapping
 * ```ts ignore
 * import { Client } from "@memfdbus/memfdbus";
 * await using client = new Client();
 * const { id } = await client.put(new TextEncoder().encode("hello"), { name: "greeting" });
 * using obj = await client.get({ name: "greeting" });
 * console.log(obj.id === id, new TextDecoder().decode(obj.view));
 * ```
 *
 * @module
 */

import { fromUtf8, toBinary, utf8 } from "./protocol/bytes.ts";
import type { DigestBuilder as DigestBuilderType } from "./hash/digest.ts";
import { Connection, isPeerGone } from "./client/connection.ts";
import { BrokerError, ErrnoError, ProtocolError, Status } from "./errors.ts";
import { closeQuietly, cstr, lastError, libc } from "./ffi.ts";
import { fstat, isRegular } from "./sys/fd.ts";
import { F_GET_SEALS, O_CLOEXEC, O_RDONLY, SEALS_IMMUTABLE } from "./sys/linux.ts";
import { ReadOnlyMapping } from "./sys/mapping.ts";
import {
  brokerFdProblemText,
  inspectSealedFd,
  isFdProblem,
  Memfd,
  memfdLabel,
} from "./sys/memfd.ts";
import { DEFAULT_SOCKET } from "./core/options.ts";
import { closeAll } from "./sys/unix_socket.ts";
import {
  Cmd,
  decodeHeader,
  DIGEST_LEN,
  encodeHeader,
  extFlags,
  Flag,
  type Header,
  HEADER_SIZE,
  isValidDigest,
  isValidHeader,
  JOB_MAX,
  NAME_HARD_MAX,
  withExt,
} from "./protocol/wire.ts";

/**
 * Options of a {@link Client}.
 *
 * @example A client of the system broker, acting for one job, with a shorter timeout
 * ```ts
 * import { Client } from "@memfdbus/memfdbus";
 * const client = new Client({ socket: "/run/memfdbus.sock", jobId: "trainer", timeoutMs: 5000 });
 * console.log(client.socket, client.jobId); // nothing is connected until the first request
 * client.close();
 * ```
 */
export interface ClientOptions {
  /** Broker socket path; `/tmp/memfdbus.sock` by default. */
  readonly socket?: string;
  /**
   * The job id requests carry. Undefined: `MEMFDBUS_JOB_ID` when it is set and non-empty.
   * Null: no job (unscoped), whatever the environment says.
   */
  readonly jobId?: string | null;
  /** Milliseconds a request may take before it fails with TimeoutError (default 30000). */
  readonly timeoutMs?: number;
  /** Reuse a connection for several requests where the broker allows it (default true). */
  readonly keepAlive?: boolean;
  /**
   * Microseconds a reply may be awaited on the calling thread before waiting off-thread
   * (default 250). A broker usually answers within that, and waiting here saves a thread hop;
   * the caller's event loop is never held longer than this per receive. 0 disables it.
   */
  readonly syncWaitUs?: number;
}

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

/**
 * Options of {@link Client.put}.
 *
 * @example
 * ```ts ignore
 * import { Client } from "@memfdbus/memfdbus";
 * await using client = new Client({ jobId: "trainer" });
 * await client.put("./weights.bin", { name: "weights", allowJob: "inference" });
 * const { name } = await client.put(new Uint8Array([1, 2, 3]), { contentAddressed: true });
 * console.log(name); // sha256:039058c6f2c0cb492c533b0a4d14ef77cc0f78abccced5287d84a1a2011cfb81
 * ```
 */
export interface PutOptions extends JobOption {
  /**
   * The object name. Defaults to the file's base name for a path source, else required
   * (unless `contentAddressed`).
   */
  readonly name?: string | Uint8Array;
  /** Publish under the digest string as name. Cannot be combined with `name`. */
  readonly contentAddressed?: boolean;
  /** The one other job that may read the object; requires a job id. */
  readonly allowJob?: string;
}

/**
 * Options of {@link Client.get}.
 *
 * @example Waiting up to ten seconds for a name, and checking what arrived
 * ```ts ignore
 * import { Client } from "@memfdbus/memfdbus";
 * await using client = new Client();
 * using obj = await client.get({ name: "model.bin" }, { wait: 10_000, verify: true });
 * console.log(obj.size);
 * ```
 */
export interface GetOptions extends JobOption {
  /** Recompute the digest of what arrived and fail on a mismatch (costs one pass over it). */
  readonly verify?: boolean;
  /**
   * By name only: if nothing has that name yet, wait up to this many milliseconds (true: as long
   * as the broker allows) for it to be published. The broker answers as soon as it is; a broker
   * without the extension (the C one) is asked again with a growing pause instead.
   */
  readonly wait?: number | boolean;
}

/**
 * What {@link Client.stat} reports about an object.
 *
 * @example
 * ```ts ignore
 * import { Client } from "@memfdbus/memfdbus";
 * await using client = new Client();
 * const st = await client.stat({ name: "model.bin" });
 * console.log(st.id, st.size, st.digest, st.owner ?? "-", st.createdNs);
 * ```
 */
export interface ObjectStat {
  /** Object id. */
  readonly id: bigint;
  /** Name. */
  readonly name: string;
  /** Size in bytes. */
  readonly size: number;
  /** Digest string. */
  readonly digest: string;
  /** Owner job, or null. */
  readonly owner: string | null;
  /** Allowed job, or null. */
  readonly allowed: string | null;
  /** When it was published (CLOCK_REALTIME ns), or null when the broker cannot say. */
  readonly createdNs: bigint | null;
  /** Its seals (F_GET_SEALS bits), or null when unknown. */
  readonly seals: number | null;
}

/**
 * An open descriptor to publish from. A regular file is read from offset 0 (its file offset
 * is left alone) unless `fromCurrentOffset` is set; a pipe or socket is read to its end. A memfd
 * that already carries the four seals is sent as is, without a copy.
 *
 * @example Publishing from an open descriptor
 * ```ts ignore
 * import { Client, FileDescriptor } from "@memfdbus/memfdbus";
 * await using client = new Client();
 * using file = FileDescriptor.open("./model.bin");
 * await client.put({ fd: file.fd }, { name: "model.bin" });
 * ```
 */
export interface FdSource {
  /** The descriptor; it stays the caller's. */
  readonly fd: number;
  /** Read a regular file from its current offset instead of from 0 (as `put -` does). */
  readonly fromCurrentOffset?: boolean;
}

/**
 * What {@link Client.put} can publish: a file path, bytes, a stream of bytes, an open
 * descriptor, or a {@link Memfd}.
 *
 * @example Each kind of source
 * ```ts ignore
 * import { Client, Memfd } from "@memfdbus/memfdbus";
 * await using client = new Client();
 * await client.put("./model.bin"); // a path: named "model.bin"
 * await client.put(new TextEncoder().encode("hi"), { name: "greeting" });
 * await client.put(Deno.stdin.readable, { name: "stdin" }); // a stream, read to its end
 * using memfd = Memfd.create("scratch");
 * memfd.writeAll(new Uint8Array(1024));
 * memfd.seal();
 * await client.put(memfd, { name: "zeros" }); // already sealed: sent without a copy
 * ```
 */
export type PutSource = string | Uint8Array | ReadableStream<Uint8Array> | FdSource | Memfd;

/**
 * The result of a successful PUT.
 *
 * @example
 * ```ts ignore
 * import { Client } from "@memfdbus/memfdbus";
 * await using client = new Client();
 * const { id, size, digest, name } = await client.put("./model.bin");
 * console.log(`${id} ${size} ${digest} ${name}`);
 * ```
 */
export interface PutResult {
  /** The new object id. */
  readonly id: bigint;
  /** Size in bytes. */
  readonly size: number;
  /** `sha256:<hex>` of the contents. */
  readonly digest: string;
  /** The name it was published under. */
  readonly name: string;
}

/**
 * One line of a LIST reply.
 *
 * @example The total size of what the caller may see
 * ```ts ignore
 * import { Client } from "@memfdbus/memfdbus";
 * await using client = new Client();
 * const entries = await client.list();
 * console.log(entries.reduce((sum, e) => sum + e.size, 0));
 * ```
 */
export interface ListEntry {
  /** Object id. */
  readonly id: bigint;
  /** Owner job, or null. */
  readonly owner: string | null;
  /** Allowed job, or null. */
  readonly allowed: string | null;
  /** Size in bytes. */
  readonly size: number;
  /** Digest string. */
  readonly digest: string;
  /** Object name. */
  readonly name: string;
}

/**
 * The result of a successful DROP.
 *
 * @example
 * ```ts ignore
 * import { Client } from "@memfdbus/memfdbus";
 * await using client = new Client();
 * const { id, size } = await client.drop({ name: "model.bin" }); // the newest version
 * console.log(`dropped ${id} (${size} bytes)`);
 * ```
 */
export interface DropResult {
  /** The dropped id. */
  readonly id: bigint;
  /** Its size. */
  readonly size: number;
}

/** How long `wait: true` may take on the client's side (the broker's own limit usually ends it first). */
const WAIT_FOREVER_MS = 7 * 24 * 3_600_000;

/**
 * The default per-request timeout.
 *
 * @example
 * ```ts
 * import { Client, DEFAULT_TIMEOUT_MS } from "@memfdbus/memfdbus";
 * const patient = new Client({ timeoutMs: 4 * DEFAULT_TIMEOUT_MS }); // two minutes
 * patient.close();
 * ```
 */
export const DEFAULT_TIMEOUT_MS = 30_000;
/** Extra time a PUT allows per byte, for the broker's digest check (100 MB/s). */
const PUT_MS_PER_BYTE = 1 / 100_000;
const IDLE_POOL = 4;

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
 * Read MEMFDBUS_JOB_ID, treating an empty value or a denied permission as unset.
 *
 * @example
 * ```ts
 * import { jobIdFromEnv } from "@memfdbus/memfdbus";
 * Deno.env.set("MEMFDBUS_JOB_ID", "trainer");
 * console.log(jobIdFromEnv()); // "trainer"
 * Deno.env.set("MEMFDBUS_JOB_ID", "");
 * console.log(jobIdFromEnv()); // null
 * Deno.env.delete("MEMFDBUS_JOB_ID");
 * ```
 */
export function jobIdFromEnv(): string | null {
  try {
    const v = Deno.env.get("MEMFDBUS_JOB_ID");
    return v === undefined || v === "" ? null : v;
  } catch {
    return null;
  }
}

function nameBytesOf(name: string | Uint8Array, what = "object name"): Uint8Array {
  const bytes = typeof name === "string" ? utf8(name) : name;
  if (bytes.length === 0) throw new TypeError(`${what} must not be empty`);
  if (bytes.length > NAME_HARD_MAX) throw new RangeError(`${what} too long`);
  if (bytes.includes(0)) throw new TypeError(`${what} must not contain NUL bytes`);
  return bytes;
}

function jobBytesOf(job: string, what: string): Uint8Array {
  const bytes = utf8(job);
  if (bytes.length === 0) throw new TypeError(`${what} must not be empty`);
  if (bytes.length > JOB_MAX) throw new RangeError(`${what} too long`);
  if (bytes.includes(0)) throw new TypeError(`${what} must not contain NUL bytes`);
  return bytes;
}

function concat(parts: readonly Uint8Array[]): Uint8Array<ArrayBuffer> {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

function basename(path: string): string {
  const i = path.lastIndexOf("/");
  return i < 0 ? path : path.slice(i + 1);
}

/** A reply header and the descriptors that came with it. */
interface Reply {
  readonly header: Header;
  readonly fds: number[];
}

/**
 * A client of one broker. Cheap to create; holds at most a few idle connections, closed by
 * {@link Client.close} or `await using`.
 *
 * @example Listing what a job may see
 * ```ts ignore
 * import { Client } from "@memfdbus/memfdbus";
 * await using client = new Client({ jobId: "beta" });
 * for (const e of await client.list()) console.log(e.id, e.name, e.size);
 * ```
 */
export class Client implements AsyncDisposable, Disposable {
  readonly #socket: string;
  readonly #jobId: string | null;
  readonly #timeoutMs: number;
  readonly #keepAlive: boolean;
  readonly #syncWaitUs: number;
  readonly #idle: Connection[] = [];
  #closed = false;

  /**
   * Create a client. Nothing connects until the first request.
   *
   * @param options socket, job id, timeout and keep-alive
   */
  constructor(options: ClientOptions = {}) {
    this.#socket = options.socket ?? DEFAULT_SOCKET;
    this.#jobId = options.jobId === undefined ? jobIdFromEnv() : options.jobId;
    if (this.#jobId !== null) jobBytesOf(this.#jobId, "job id");
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.#keepAlive = options.keepAlive ?? true;
    this.#syncWaitUs = options.syncWaitUs ?? 250;
  }

  /** The socket path. */
  get socket(): string {
    return this.#socket;
  }

  /** The job id requests carry by default (null: unscoped). */
  get jobId(): string | null {
    return this.#jobId;
  }

  #job(opt: JobOption | undefined): Uint8Array {
    const job = opt?.jobId === undefined ? this.#jobId : opt.jobId;
    return job === null ? new Uint8Array(0) : jobBytesOf(job, "job id");
  }

  // ---- PUT ---------------------------------------------------------------------------------

  /**
   * Publish an object: copy the source into a new memfd (in the kernel where possible), seal
   * it, and send the descriptor. Returns the new id.
   *
   * @example
   * ```ts ignore
   * import { Client } from "@memfdbus/memfdbus";
   * await using client = new Client();
   * const { id } = await client.put("./model.bin"); // named "model.bin"
   * await client.put("./model-v2.bin", { name: "model.bin" }); // now the newest "model.bin"
   * console.log(id);
   * ```
   *
   * @param source a path, bytes, a stream, `{ fd }` or a Memfd
   * @param options name, job, allowed job, content addressing
   */
  async put(source: PutSource, options: PutOptions = {}): Promise<PutResult> {
    if (options.contentAddressed && options.name !== undefined) {
      throw new TypeError("contentAddressed cannot be combined with name");
    }
    const job = this.#job(options);
    const allow = options.allowJob === undefined
      ? new Uint8Array(0)
      : jobBytesOf(options.allowJob, "allowed job id");
    if (allow.length > 0 && job.length === 0) {
      throw new TypeError("allowJob requires a job id");
    }
    const fallbackName = typeof source === "string" ? basename(source) : undefined;
    const nameOption = options.name ?? fallbackName;
    if (!options.contentAddressed && nameOption === undefined) {
      throw new TypeError("put needs a name (or contentAddressed)");
    }
    // Check the name before any copying (the C CLI copied first, defect D23).
    const early = nameOption === undefined || options.contentAddressed
      ? null
      : nameBytesOf(nameOption);

    const label = nameOption ?? "memfdbus";
    const prepared = await prepareSealed(source, label, early !== null);
    try {
      if (early !== null && prepared.digest === null && prepared.size >= EARLY_SEND_MIN) {
        // Bytes the caller holds hash faster than a fresh mapping of the memfd (no page faults).
        const hashFrom = source instanceof Uint8Array ? source : null;
        return await this.#putEarly(prepared, early, job, allow, hashFrom);
      }
      const digest = prepared.digest ?? await digestFdSliced(prepared.fd, prepared.size);
      const nameBytes = early ?? utf8(digest);
      const id = await this.putSealed(prepared.fd, {
        size: prepared.size,
        digest,
        name: nameBytes,
        job,
        allow,
      });
      return { id, size: prepared.size, digest, name: fromUtf8(nameBytes) };
    } finally {
      prepared.release();
    }
  }

  /**
   * PUT of a large object whose digest is not known yet: the header, descriptor and name go out
   * as soon as the memfd is sealed, so the broker can start verifying the sealed memfd while
   * this side computes the digest it then sends. The bytes on the wire are those of a plain
   * PUT; only their timing differs (a C broker simply waits for the digest).
   */
  async #putEarly(
    prepared: Prepared,
    name: Uint8Array,
    job: Uint8Array,
    allow: Uint8Array,
    hashFrom: Uint8Array | null,
  ): Promise<PutResult> {
    const header = encodeHeader({
      cmd: Cmd.PUT,
      jobLen: job.length,
      size: BigInt(prepared.size),
      nameLen: name.length,
      textLen: DIGEST_LEN,
      allowLen: allow.length,
    });
    let digest: string | null = null;
    const reply = await this.#request(
      [[header, "send put request"], [name, "send object name"]],
      [prepared.fd],
      this.#timeoutMs + prepared.size * PUT_MS_PER_BYTE,
      async () => {
        digest ??= hashFrom === null
          ? await digestFdSliced(prepared.fd, prepared.size)
          : await digestBytesSliced(hashFrom);
        return [
          [utf8(digest), "send object digest"],
          [job, "send job id"],
          [allow, "send allowed job id"],
        ];
      },
    );
    closeAll(reply.reply.fds);
    reply.done();
    return {
      id: reply.reply.header.objectId,
      size: prepared.size,
      digest: digest ?? "",
      name: fromUtf8(name),
    };
  }

  /**
   * Send an already sealed memfd with known size and digest (the lowest-level PUT). The
   * descriptor stays the caller's.
   *
   * @example
   * ```ts ignore
   * import { Client, digestBytes, Memfd } from "@memfdbus/memfdbus";
   * const bytes = new TextEncoder().encode("hello");
   * using memfd = Memfd.create("greeting");
   * memfd.writeAll(bytes);
   * memfd.seal();
   * await using client = new Client();
   * const id = await client.putSealed(memfd.fd, {
   *   size: bytes.length,
   *   digest: digestBytes(bytes),
   *   name: new TextEncoder().encode("greeting"),
   * });
   * console.log(id);
   * ```
   */
  async putSealed(
    fd: number,
    req: {
      readonly size: number;
      readonly digest: string;
      readonly name: Uint8Array;
      readonly job?: Uint8Array;
      readonly allow?: Uint8Array;
    },
  ): Promise<bigint> {
    const job = req.job ?? new Uint8Array(0);
    const allow = req.allow ?? new Uint8Array(0);
    const digest = utf8(req.digest);
    if (!isValidDigest(digest)) throw new TypeError(`Invalid digest "${req.digest}"`);
    const header = encodeHeader({
      cmd: Cmd.PUT,
      jobLen: job.length,
      size: BigInt(req.size),
      nameLen: req.name.length,
      textLen: DIGEST_LEN,
      allowLen: allow.length,
    });
    const reply = await this.#request(
      [
        [header, "send put request"],
        [req.name, "send object name"],
        [digest, "send object digest"],
        [job, "send job id"],
        [allow, "send allowed job id"],
      ],
      [fd],
      this.#timeoutMs + req.size * PUT_MS_PER_BYTE,
    );
    closeAll(reply.reply.fds);
    reply.done();
    return reply.reply.header.objectId;
  }

  // ---- GET ---------------------------------------------------------------------------------

  /**
   * Fetch an object by id or newest by name. The result owns a fresh sealed descriptor; close
   * it (or use `using`) when done.
   *
   * @example
   * ```ts ignore
   * import { Client } from "@memfdbus/memfdbus";
   * await using client = new Client();
   * using obj = await client.get({ name: "model.bin" }, { wait: 30_000 });
   * console.log(obj.id, obj.size, obj.view.subarray(0, 4));
   * ```
   */
  async get(selector: Selector, options: GetOptions = {}): Promise<BusObject> {
    const { id, name } = selectorParts(selector);
    const job = this.#job(options);
    const waitMs = waitOption(options.wait, id);
    if (waitMs === null) return await this.#getOnce(id, name, job, options, null);
    const deadline = performance.now() + (waitMs === 0 ? WAIT_FOREVER_MS : waitMs);
    let pause = 50;
    for (;;) {
      try {
        return await this.#getOnce(id, name, job, options, waitMs);
      } catch (e) {
        // A broker that honoured the wait sets the bit in its reply: its "not found" is final.
        if (
          !(e instanceof BrokerError) || e.status !== Status.NOT_FOUND ||
          (extFlags(e.flags) & Flag.WAIT) !== 0 || performance.now() + pause > deadline
        ) throw e;
      }
      await new Promise((r) => setTimeout(r, pause));
      pause = Math.min(pause * 2, 1000);
    }
  }

  async #getOnce(
    id: bigint,
    name: Uint8Array,
    job: Uint8Array,
    options: GetOptions,
    waitMs: number | null,
  ): Promise<BusObject> {
    const header = encodeHeader({
      cmd: Cmd.GET,
      objectId: id,
      nameLen: name.length,
      jobLen: job.length,
      size: BigInt(waitMs ?? 0),
      reserved: waitMs === null ? 0 : withExt(Flag.WAIT),
    });
    const r = await this.#request(
      [[header, "send get request"], [name, "send object name"], [job, "send job id"]],
      [],
      this.#timeoutMs + (waitMs === null ? 0 : waitMs === 0 ? WAIT_FOREVER_MS : waitMs),
    );
    const { header: h, fds } = r.reply;
    const fd = fds.shift() ?? -1;
    closeAll(fds);
    try {
      if (fd < 0) throw new ProtocolError("broker did not send an object fd");
      if (h.nameLen > NAME_HARD_MAX) {
        throw new ProtocolError("broker sent an oversized object name");
      }
      if (h.textLen !== DIGEST_LEN) throw new ProtocolError("broker sent an invalid object digest");
      const deadline = performance.now() + this.#timeoutMs;
      const nameChunk = await r.conn.recvExact(h.nameLen, deadline, "receive object name");
      closeAll(nameChunk.fds);
      const digestChunk = await r.conn.recvExact(DIGEST_LEN, deadline, "receive object digest");
      closeAll(digestChunk.fds);
      if (!isValidDigest(digestChunk.bytes)) {
        throw new ProtocolError("broker sent an invalid object digest");
      }
      r.done();
      const info = inspectSealedFd(fd, h.size);
      if (isFdProblem(info)) {
        throw new ProtocolError(
          `broker sent an invalid object fd: ${brokerFdProblemText(info, h.size)}`,
        );
      }
      const obj = new BusObject(
        h.objectId,
        Number(h.size),
        nameChunk.bytes,
        toBinary(digestChunk.bytes),
        fd,
      );
      if (options.verify && !(await obj.verify())) {
        obj.close();
        throw new ProtocolError("object contents do not match the digest");
      }
      return obj;
    } catch (e) {
      closeQuietly(fd);
      r.fail();
      throw e;
    }
  }

  // ---- STAT --------------------------------------------------------------------------------

  /**
   * Describe an object: size, digest, seals, owner, allowed job and publication time. A broker
   * without the STAT extension is answered from a GET and a LIST (no publication time).
   *
   * @example
   * ```ts ignore
   * import { Client, Seal } from "@memfdbus/memfdbus";
   * await using client = new Client();
   * const st = await client.stat(3n);
   * console.log(st.name, st.size, ((st.seals ?? 0) & Seal.IMMUTABLE) === Seal.IMMUTABLE);
   * ```
   */
  async stat(selector: Selector, options: GetOptions = {}): Promise<ObjectStat> {
    const { id, name } = selectorParts(selector);
    const job = this.#job(options);
    const waitMs = waitOption(options.wait, id);
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
      r = await this.#request(
        [[header, "send stat request"], [name, "send object name"], [job, "send job id"]],
        [],
        this.#timeoutMs + (waitMs === null ? 0 : waitMs === 0 ? WAIT_FOREVER_MS : waitMs),
      );
    } catch (e) {
      if (
        e instanceof BrokerError && e.status === Status.BAD_REQUEST && e.text === "unknown command"
      ) {
        return await this.#statFallback(selector, options);
      }
      throw e;
    }
    closeAll(r.reply.fds);
    try {
      const body = await r.conn.recvExact(
        r.reply.header.textLen,
        performance.now() + this.#timeoutMs,
        "receive stat",
      );
      closeAll(body.fds);
      r.done();
      const text = fromUtf8(body.bytes);
      const v = JSON.parse(text) as Record<string, unknown>;
      const created = /"created_ns":(\d+)/.exec(text)?.[1];
      return {
        id: r.reply.header.objectId,
        name: String(v.name),
        size: Number(r.reply.header.size),
        digest: String(v.digest),
        owner: v.owner === null ? null : String(v.owner),
        allowed: v.allowed === null ? null : String(v.allowed),
        createdNs: created === undefined ? null : BigInt(created),
        seals: typeof v.seals === "number" ? v.seals : null,
      };
    } catch (e) {
      r.fail();
      throw e;
    }
  }

  async #statFallback(selector: Selector, options: GetOptions): Promise<ObjectStat> {
    using obj = await this.get(selector, options);
    const seals = libc.symbols.fcntl(obj.fd, F_GET_SEALS, 0);
    const entry = (await this.list(options)).find((e) => e.id === obj.id);
    return {
      id: obj.id,
      name: obj.name,
      size: obj.size,
      digest: obj.digest,
      owner: entry?.owner ?? null,
      allowed: entry?.allowed ?? null,
      createdNs: null,
      seals: seals < 0 ? null : seals,
    };
  }

  // ---- LIST --------------------------------------------------------------------------------

  /**
   * The LIST text exactly as the broker sent it (possibly empty).
   *
   * @example Passing the listing on untouched
   * ```ts ignore
   * import { Client } from "@memfdbus/memfdbus";
   * await using client = new Client();
   * await Deno.stdout.write(await client.listRaw());
   * ```
   */
  async listRaw(options: JobOption = {}): Promise<Uint8Array> {
    const job = this.#job(options);
    const header = encodeHeader({ cmd: Cmd.LIST, jobLen: job.length });
    const r = await this.#request(
      [[header, "send list request"], [job, "send job id"]],
      [],
      this.#timeoutMs,
    );
    closeAll(r.reply.fds);
    try {
      const chunk = await r.conn.recvExact(
        r.reply.header.textLen,
        performance.now() + this.#timeoutMs,
        "receive list",
      );
      closeAll(chunk.fds);
      r.done();
      return chunk.bytes;
    } catch (e) {
      r.fail();
      throw e;
    }
  }

  /**
   * The LIST text decoded as UTF-8: one line per object, tab-separated
   * (`ID owner=JOB allowed=JOB SIZE DIGEST NAME`).
   *
   * @example
   * ```ts ignore
   * import { Client } from "@memfdbus/memfdbus";
   * await using client = new Client();
   * console.log(await client.listText());
   * ```
   */
  async listText(options: JobOption = {}): Promise<string> {
    return fromUtf8(await this.listRaw(options));
  }

  /**
   * The visible objects, parsed, in ascending id order.
   *
   * @example
   * ```ts ignore
   * import { Client } from "@memfdbus/memfdbus";
   * await using client = new Client();
   * for (const e of await client.list()) console.log(e.id, e.name, e.size, e.owner ?? "-");
   * ```
   */
  async list(options: JobOption = {}): Promise<ListEntry[]> {
    return parseList(await this.listText(options));
  }

  // ---- DROP --------------------------------------------------------------------------------

  /**
   * Drop an object by id or newest by name; descriptors already handed out stay valid.
   *
   * @example
   * ```ts ignore
   * import { Client } from "@memfdbus/memfdbus";
   * await using client = new Client();
   * await client.drop({ name: "model.bin" }); // the previous version becomes the newest
   * await client.drop(3n);
   * ```
   */
  async drop(selector: Selector, options: JobOption = {}): Promise<DropResult> {
    const { id, name } = selectorParts(selector);
    const job = this.#job(options);
    const header = encodeHeader({
      cmd: Cmd.DROP,
      objectId: id,
      nameLen: name.length,
      jobLen: job.length,
    });
    const r = await this.#request(
      [[header, "send drop request"], [name, "send object name"], [job, "send job id"]],
      [],
      this.#timeoutMs,
    );
    closeAll(r.reply.fds);
    r.done();
    return { id: r.reply.header.objectId, size: Number(r.reply.header.size) };
  }

  // ---- plumbing ----------------------------------------------------------------------------

  /**
   * Send one request (all parts in as few sendmsg calls as possible, descriptors on the first)
   * and read the reply header. A broker error becomes BrokerError. If sending fails because the
   * broker already answered and closed (defect D1), its answer is still read and reported.
   */
  async #request(
    parts: ReadonlyArray<readonly [Uint8Array, string]>,
    fds: readonly number[],
    timeoutMs: number,
    rest?: () => Promise<ReadonlyArray<readonly [Uint8Array, string]>>,
  ): Promise<{ conn: Connection; reply: Reply; done: () => void; fail: () => void }> {
    if (this.#closed) throw new TypeError("Client is closed");
    const reused = this.#idle.pop();
    try {
      return await this.#attempt(
        reused ?? await Connection.connect(this.#socket, timeoutMs, this.#syncWaitUs),
        parts,
        fds,
        timeoutMs,
        rest,
      );
    } catch (e) {
      // A kept-alive connection the broker closed meanwhile: retry once on a fresh one. The
      // broker only closes idle connections, so the request was never processed.
      if (reused === undefined || !(e instanceof StaleConnection)) throw unwrapStale(e);
      return await this.#attempt(
        await Connection.connect(this.#socket, timeoutMs, this.#syncWaitUs),
        parts,
        fds,
        timeoutMs,
        rest,
      )
        .catch((e2) => Promise.reject(unwrapStale(e2)));
    }
  }

  async #attempt(
    conn: Connection,
    parts: ReadonlyArray<readonly [Uint8Array, string]>,
    fds: readonly number[],
    timeoutMs: number,
    rest?: () => Promise<ReadonlyArray<readonly [Uint8Array, string]>>,
  ): Promise<{ conn: Connection; reply: Reply; done: () => void; fail: () => void }> {
    const deadline = performance.now() + timeoutMs;
    const first = parts[0]?.[0];
    if (first !== undefined && this.#keepAlive) {
      const v = new DataView(first.buffer, first.byteOffset);
      v.setUint32(44, withExt(extFlags(v.getUint32(44, true)) | Flag.KEEP_ALIVE), true);
    }
    let reply: Reply;
    try {
      let sendError: unknown = null;
      try {
        await sendParts(conn, parts, fds, deadline);
        if (rest !== undefined) await sendParts(conn, await rest(), [], deadline);
      } catch (e) {
        if (!isPeerGone(e)) throw e;
        sendError = e;
      }
      try {
        reply = await readReply(conn, deadline);
      } catch (e) {
        if (e instanceof BrokerError || sendError === null) throw e;
        throw sendError;
      }
    } catch (e) {
      conn.close();
      if (e instanceof ErrnoError && (e.code === "ECONNRESET" || e.code === "EPIPE")) {
        throw new StaleConnection(e);
      }
      throw e;
    }
    const keep = this.#keepAlive && (extFlags(reply.header.reserved) & Flag.KEEP_ALIVE) !== 0;
    return {
      conn,
      reply,
      done: () => {
        if (keep && !this.#closed && this.#idle.length < IDLE_POOL) this.#idle.push(conn);
        else conn.close();
      },
      fail: () => conn.close(),
    };
  }

  /**
   * Close idle connections. Safe to call more than once. Objects already fetched stay valid.
   *
   * @example A client kept for a program's lifetime
   * ```ts
   * import { Client } from "@memfdbus/memfdbus";
   * const client = new Client();
   * // ... requests ...
   * client.close();
   * ```
   */
  close(): void {
    this.#closed = true;
    for (const c of this.#idle) c.close();
    this.#idle.length = 0;
  }

  /** Same as {@link Client.close}. */
  [Symbol.dispose](): void {
    this.close();
  }

  /** Same as {@link Client.close}. */
  [Symbol.asyncDispose](): Promise<void> {
    this.close();
    return Promise.resolve();
  }
}

/** Marks a failure on a reused connection that the broker had closed. */
class StaleConnection extends Error {
  readonly original: Error;
  constructor(original: Error) {
    super(original.message);
    this.original = original;
  }
}

function unwrapStale(e: unknown): unknown {
  return e instanceof StaleConnection ? e.original : e;
}

async function sendParts(
  conn: Connection,
  parts: ReadonlyArray<readonly [Uint8Array, string]>,
  fds: readonly number[],
  deadline: number,
): Promise<void> {
  // One message for the whole request; a failure is labelled with the part it happened in.
  const all = concat(parts.map(([b]) => b));
  try {
    await conn.send(all, deadline, "send", fds);
  } catch (e) {
    if (!(e instanceof ErrnoError)) throw e;
    throw new ErrnoError(e.syscall, e.errno, e.description, parts[0]?.[1]);
  }
}

async function readReply(conn: Connection, deadline: number): Promise<Reply> {
  const chunk = await conn.recvExact(HEADER_SIZE, deadline, "receive response");
  const header = decodeHeader(chunk.bytes);
  if (!isValidHeader(header)) {
    closeAll(chunk.fds);
    throw new ProtocolError("invalid response from broker");
  }
  if (header.status !== Status.OK) {
    closeAll(chunk.fds);
    let text = "";
    if (header.textLen > 0) {
      const t = await conn.recvExact(header.textLen, deadline, "receive response text");
      closeAll(t.fds);
      text = fromUtf8(t.bytes);
    }
    const error = new BrokerError(header.status, text);
    error.flags = header.reserved;
    throw error;
  }
  return { header, fds: chunk.fds };
}

/** The wait of a GET option in ms (0: the broker's limit), or null for no waiting. */
function waitOption(wait: number | boolean | undefined, id: bigint): number | null {
  if (wait === undefined || wait === false) return null;
  if (id !== 0n) throw new TypeError("wait needs a name selector");
  if (wait === true) return 0;
  if (!Number.isSafeInteger(wait) || wait <= 0) throw new RangeError(`Invalid wait "${wait}"`);
  return wait;
}

function selectorParts(selector: Selector): { id: bigint; name: Uint8Array } {
  if (typeof selector === "bigint" || typeof selector === "number") {
    return { id: toId(selector), name: new Uint8Array(0) };
  }
  if ("id" in selector) return { id: toId(selector.id), name: new Uint8Array(0) };
  return { id: 0n, name: nameBytesOf(selector.name) };
}

function toId(v: bigint | number): bigint {
  const id = typeof v === "bigint" ? v : Number.isSafeInteger(v) ? BigInt(v) : -1n;
  if (id <= 0n || id > 0xffffffffffffffffn) throw new RangeError(`Invalid object id "${v}"`);
  return id;
}

/**
 * Parse LIST text into entries (a name may itself contain tabs; it is the last column).
 *
 * @example
 * ```ts
 * import { parseList } from "@memfdbus/memfdbus";
 * const digest = "sha256:" + "0".repeat(64);
 * const [entry] = parseList(`7\towner=trainer\tallowed=-\t1024\t${digest}\tmodel.bin\n`);
 * console.log(entry?.id, entry?.owner, entry?.allowed, entry?.name); // 7n trainer null model.bin
 * ```
 */
export function parseList(text: string): ListEntry[] {
  const out: ListEntry[] = [];
  for (const line of text.split("\n")) {
    if (line === "") continue;
    const cols = line.split("\t");
    if (cols.length < 6) throw new ProtocolError(`Malformed list line "${line}"`);
    const [id, owner, allowed, size, digest] = cols as [string, string, string, string, string];
    const ownerValue = owner.startsWith("owner=") ? owner.slice(6) : owner;
    const allowedValue = allowed.startsWith("allowed=") ? allowed.slice(8) : allowed;
    out.push({
      id: BigInt(id),
      owner: ownerValue === "-" ? null : ownerValue,
      allowed: allowedValue === "-" ? null : allowedValue,
      size: Number(size),
      digest,
      name: cols.slice(5).join("\t"),
    });
  }
  return out;
}

// ---- preparing a sealed memfd from any source ------------------------------------------------

interface Prepared {
  readonly fd: number;
  readonly size: number;
  /** Known when it was cheapest to hash during the copy; else null (hash the memfd later). */
  readonly digest: string | null;
  release(): void;
}

// node:crypto costs a CLI command about 20 ms to load: only PUT and verification need it.
let digestModule: typeof import("./hash/digest.ts") | null = null;
async function digests(): Promise<typeof import("./hash/digest.ts")> {
  digestModule ??= await import("./hash/digest.ts");
  return digestModule;
}

/** Objects at least this large are sent early and hashed while the broker verifies them. */
export const EARLY_SEND_MIN = 4 << 20;
const HASH_SLICE_BYTES = 8 << 20;

/**
 * The digest of a descriptor's first `size` bytes, hashed through a read-only mapping in
 * slices, yielding to the event loop between slices so a large object never freezes it.
 */
export async function digestFdSliced(fd: number, size: number): Promise<string> {
  using map = ReadOnlyMapping.of(fd, size, "mmap object");
  return await digestBytesSliced(map.bytes);
}

/** The digest of some bytes, hashed in slices with the event loop running between them. */
export async function digestBytesSliced(bytes: Uint8Array): Promise<string> {
  const { DigestBuilder } = await digests();
  const { setImmediate } = await import("node:timers");
  const hash = new DigestBuilder();
  for (let off = 0; off < bytes.length; off += HASH_SLICE_BYTES) {
    hash.update(bytes.subarray(off, off + HASH_SLICE_BYTES));
    if (off + HASH_SLICE_BYTES < bytes.length) await new Promise((r) => setImmediate(r));
  }
  return hash.digest();
}

/**
 * Turn a PUT source into a sealed memfd. The bytes are copied once (kernel-side for
 * descriptors). Bytes and streams are hashed during the copy, unless `deferHash` asks to leave
 * a large object's digest for later (digest null), which lets it be sent early.
 */
export async function prepareSealed(
  source: PutSource,
  label: string | Uint8Array,
  deferHash = false,
): Promise<Prepared> {
  if (source instanceof Memfd) return prepareFromFd(source.fd, label, false);
  if (typeof source === "string") {
    const fd = libc.symbols.open(cstr(source), O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0) throw lastError("open", "open input");
    let prepared: Prepared;
    try {
      prepared = prepareFromFd(fd, label, true);
    } catch (e) {
      closeQuietly(fd);
      throw e;
    }
    // A file that already carries the four seals is published through this very descriptor:
    // it may only be closed once the publication is over.
    if (prepared.fd === fd) return { ...prepared, release: () => closeQuietly(fd) };
    closeQuietly(fd);
    return prepared;
  }
  if (source instanceof Uint8Array) {
    const hashNow = !(deferHash && source.length >= EARLY_SEND_MIN);
    return prepareFromBytes([source], label, hashNow ? (await digests()).DigestBuilder : null);
  }
  if (source instanceof ReadableStream) {
    return await prepareFromStream(source, label, (await digests()).DigestBuilder);
  }
  return prepareFromFd(source.fd, label, source.fromCurrentOffset ?? false);
}

function sealedResult(memfd: Memfd, size: number, digest: string | null): Prepared {
  memfd.seal();
  return { fd: memfd.fd, size, digest, release: () => memfd.close() };
}

function prepareFromBytes(
  chunks: Iterable<Uint8Array>,
  label: string | Uint8Array,
  Builder: typeof DigestBuilderType | null,
): Prepared {
  const memfd = Memfd.create(memfdLabel(label));
  try {
    const hash = Builder === null ? null : new Builder();
    let size = 0;
    for (const chunk of chunks) {
      memfd.writeAll(chunk);
      hash?.update(chunk);
      size += chunk.length;
    }
    return sealedResult(memfd, size, hash === null ? null : hash.digest());
  } catch (e) {
    memfd.close();
    throw e;
  }
}

async function prepareFromStream(
  stream: ReadableStream<Uint8Array>,
  label: string | Uint8Array,
  Builder: typeof DigestBuilderType,
): Promise<Prepared> {
  const memfd = Memfd.create(memfdLabel(label));
  try {
    const hash = new Builder();
    let size = 0;
    for await (const chunk of stream) {
      memfd.writeAll(chunk);
      hash.update(chunk);
      size += chunk.length;
    }
    return sealedResult(memfd, size, hash.digest());
  } catch (e) {
    memfd.close();
    throw e;
  }
}

function prepareFromFd(
  fd: number,
  label: string | Uint8Array,
  fromCurrentOffset: boolean,
): Prepared {
  const st = fstat(fd, "fstat input");
  // A sealed memfd (or any regular file carrying the four seals) is published as is: no copy.
  if (isRegular(st.mode)) {
    const seals = libc.symbols.fcntl(fd, F_GET_SEALS, 0);
    if (seals >= 0 && (seals & SEALS_IMMUTABLE) === SEALS_IMMUTABLE) {
      return { fd, size: Number(st.size), digest: null, release: () => {} };
    }
  }
  const memfd = Memfd.create(memfdLabel(label));
  try {
    const copy = memfd.copyFrom(
      fd,
      undefined,
      { read: "read input", write: "write destination" },
      fromCurrentOffset || !isRegular(st.mode) ? undefined : 0,
    );
    memfd.seal();
    return { fd: memfd.fd, size: copy.bytes, digest: null, release: () => memfd.close() };
  } catch (e) {
    memfd.close();
    throw e;
  }
}
