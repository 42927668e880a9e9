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

import { fromUtf8, utf8 } from "./protocol/bytes.ts";
import { BrokerError, ErrnoError, ProtocolError, Status, TimeoutError } from "./errors.ts";
import { trySeals } from "./sys/fd.ts";
import { closeAll } from "./sys/unix_socket.ts";
import {
  Cmd,
  DIGEST_LEN,
  encodeHeader,
  extFlags,
  Flag,
  isValidDigest,
  Text,
  withExt,
} from "./protocol/wire.ts";
import { type ListEntry, parseList } from "./protocol/list.ts";
import { parseStat } from "./protocol/stat.ts";
import { type BusObject, receiveObject } from "./client/bus_object.ts";
import { digestBytesSliced, digestFdSliced } from "./client/hashing.ts";
import {
  type ClientOptions,
  DEFAULT_TIMEOUT_MS,
  defaultSocket,
  type DropResult,
  type GetOptions,
  jobIdFromEnv,
  type JobOption,
  type ObjectStat,
  PUT_MS_PER_BYTE,
  type PutOptions,
  type PutResult,
  WAIT_FOREVER_MS,
} from "./client/options.ts";
import {
  EARLY_SEND_MIN,
  type Prepared,
  prepareSealed,
  type PutSource,
} from "./client/put_source.ts";
import { Requester } from "./client/request.ts";
import type { Connection } from "./client/connection.ts";
import { Watch, type WatchTarget } from "./client/watch.ts";

/** Options of {@link Client.watch}. */
export interface ClientWatchOptions {
  /** The job whose view to watch (default: the client's job id; null: unscoped). */
  readonly jobId?: string | null;
  /** Ends the watch (the iteration stops without an error). */
  readonly signal?: AbortSignal;
  /** How long the broker has to accept the watch, in ms (default: the client's timeout). */
  readonly timeoutMs?: number;
}
import {
  jobBytesOf,
  nameBytesOf,
  type Selector,
  selectorParts,
  waitOption,
} from "./client/selectors.ts";

export { BusObject } from "./client/bus_object.ts";
export {
  type ClientOptions,
  DEFAULT_TIMEOUT_MS,
  defaultSocket,
  type DropResult,
  type GetOptions,
  jobIdFromEnv,
  type JobOption,
  type ObjectStat,
  type PutOptions,
  type PutResult,
} from "./client/options.ts";
export { type FdSource, type PutSource } from "./client/put_source.ts";
export { type Selector } from "./client/selectors.ts";
export { type ListEntry, parseList } from "./protocol/list.ts";

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
  readonly #requester: Requester;
  readonly #jobId: string | null;
  readonly #timeoutMs: number;

  /**
   * Create a client. Nothing connects until the first request.
   *
   * @param options socket, job id, timeout and keep-alive
   */
  constructor(options: ClientOptions = {}) {
    this.#jobId = options.jobId === undefined ? jobIdFromEnv() : options.jobId;
    if (this.#jobId !== null) jobBytesOf(this.#jobId, "job id");
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.#requester = new Requester({
      socket: options.socket ?? defaultSocket(),
      keepAlive: options.keepAlive ?? true,
      syncWaitUs: options.syncWaitUs ?? 250,
      brokerUid: options.brokerUid,
    });
  }

  /** The socket path. */
  get socket(): string {
    return this.#requester.socket;
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
      // One hash pass: a broker that advertised Flag.DIGEST (or any broker, for a large object:
      // a C broker refuses at once, before reading the rest) computes the digest it verifies
      // anyway and returns it; this side then hashes nothing.
      if (
        early !== null && prepared.digest === null &&
        (this.#requester.brokerDigest || prepared.size >= EARLY_SEND_MIN)
      ) {
        const byBroker = await this.#putByBroker(prepared, early, job, allow);
        if (byBroker !== null) return byBroker;
      }
      if (early !== null && prepared.digest === null && prepared.size >= EARLY_SEND_MIN) {
        // Bytes the caller holds hash faster than a fresh mapping of the memfd (no page faults).
        const hashFrom = source instanceof Uint8Array ? source : null;
        return await this.#putEarly(prepared, early, job, allow, hashFrom, options.local === true);
      }
      const digest = prepared.digest ?? await digestFdSliced(prepared.fd, prepared.size);
      const nameBytes = early ?? utf8(digest);
      const id = await this.putSealed(prepared.fd, {
        size: prepared.size,
        digest,
        name: nameBytes,
        job,
        allow,
        local: options.local === true,
      });
      return { id, size: prepared.size, digest, name: fromUtf8(nameBytes) };
    } finally {
      prepared.release();
    }
  }

  /**
   * PUT with Flag.DIGEST and no digest: the broker computes it and returns it in the reply. Null
   * when the broker is not one that honours the flag (a C broker's `invalid object digest`
   * reply without extension bits, or its closing the connection on the unread body): the
   * caller then sends a plain PUT. Other failures are the PUT's own and are thrown.
   */
  async #putByBroker(
    prepared: Prepared,
    name: Uint8Array,
    job: Uint8Array,
    allow: Uint8Array,
  ): Promise<PutResult | null> {
    const requester = this.#requester;
    const known = requester.brokerDigest;
    const header = encodeHeader({
      cmd: Cmd.PUT,
      jobLen: job.length,
      size: BigInt(prepared.size),
      nameLen: name.length,
      allowLen: allow.length,
      reserved: withExt(Flag.DIGEST),
    });
    const deadline = performance.now() + this.#timeoutMs + prepared.size * PUT_MS_PER_BYTE;
    let reply;
    try {
      reply = await requester.exchange(
        [[header, "send put request"], [name, "send object name"], [job, "send job id"], [
          allow,
          "send allowed job id",
        ]],
        [prepared.fd],
        deadline - performance.now(),
      );
    } catch (e) {
      const ours = e instanceof BrokerError && (extFlags(e.flags) & Flag.DIGEST) !== 0;
      if (ours) throw e;
      const refused = e instanceof BrokerError && e.status === Status.BAD_REQUEST &&
        e.text === Text.invalidDigest;
      const cut = e instanceof ErrnoError && (e.code === "ECONNRESET" || e.code === "EPIPE");
      if (refused || (cut && !known)) {
        requester.forgetBrokerDigest();
        return null;
      }
      throw e;
    }
    try {
      closeAll(reply.reply.fds);
      const h = reply.reply.header;
      if ((extFlags(h.reserved) & Flag.DIGEST) === 0 || h.textLen !== DIGEST_LEN) {
        throw new ProtocolError("invalid response from broker");
      }
      const text = await reply.conn.recvExact(DIGEST_LEN, deadline, "receive response text");
      closeAll(text.fds);
      if (!isValidDigest(text.bytes)) throw new ProtocolError("invalid response from broker");
      reply.done();
      return {
        id: h.objectId,
        size: prepared.size,
        digest: fromUtf8(text.bytes),
        name: fromUtf8(name),
      };
    } catch (e) {
      reply.fail();
      throw e;
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
    local: boolean,
  ): Promise<PutResult> {
    const header = encodeHeader({
      cmd: Cmd.PUT,
      jobLen: job.length,
      size: BigInt(prepared.size),
      nameLen: name.length,
      textLen: DIGEST_LEN,
      allowLen: allow.length,
      reserved: local ? withExt(Flag.LOCAL) : 0,
    });
    let digest: string | null = null;
    const reply = await this.#requester.exchange(
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
      /** Keep the object on the broker's host (see {@link PutOptions.local}). */
      readonly local?: boolean;
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
      reserved: req.local === true ? withExt(Flag.LOCAL) : 0,
    });
    const reply = await this.#requester.exchange(
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
        ) throw waitExpired(e, name, waitMs);
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
    const r = await this.#requester.exchange(
      [[header, "send get request"], [name, "send object name"], [job, "send job id"]],
      [],
      this.#timeoutMs + (waitMs === null ? 0 : waitMs === 0 ? WAIT_FOREVER_MS : waitMs),
    );
    return await receiveObject(r, this.#timeoutMs, options.verify ?? false);
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
      r = await this.#requester.exchange(
        [[header, "send stat request"], [name, "send object name"], [job, "send job id"]],
        [],
        this.#timeoutMs + (waitMs === null ? 0 : waitMs === 0 ? WAIT_FOREVER_MS : waitMs),
      );
    } catch (e) {
      if (
        e instanceof BrokerError && e.status === Status.BAD_REQUEST &&
        e.text === Text.unknownCommand
      ) {
        return await this.#statFallback(selector, options);
      }
      throw waitMs === null ? e : waitExpired(e, name, waitMs);
    }
    closeAll(r.reply.fds);
    try {
      const body = await r.conn.recvExact(
        r.reply.header.textLen,
        performance.now() + this.#timeoutMs,
        "receive stat",
      );
      closeAll(body.fds);
      const st = parseStat(fromUtf8(body.bytes));
      r.done();
      return { id: r.reply.header.objectId, size: Number(r.reply.header.size), ...st };
    } catch (e) {
      r.fail();
      throw e;
    }
  }

  async #statFallback(selector: Selector, options: GetOptions): Promise<ObjectStat> {
    using obj = await this.get(selector, options);
    const seals = trySeals(obj.fd);
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
      shared: null,
      ownerUsage: null,
      origin: null,
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
  listRaw(options: JobOption = {}): Promise<Uint8Array> {
    return this.#list(options, false);
  }

  /**
   * The cluster listing of a broker started with `--cluster`: one tab-separated line per name
   * the caller may read, with the cluster's latest version of it
   * (`REVISION host=HOST owner=JOB allowed=JOB SIZE DIGEST NAME`), sorted by name. A broker
   * without a cluster tier answers `broker has no cluster tier`; a broker that ignores the
   * request (a C broker) makes it fail with a ProtocolError.
   *
   * @example
   * ```ts ignore
   * import { Client } from "@memfdbus/memfdbus";
   * await using client = new Client();
   * console.log(new TextDecoder().decode(await client.listCluster()));
   * ```
   */
  listCluster(options: JobOption = {}): Promise<Uint8Array> {
    return this.#list(options, true);
  }

  async #list(options: JobOption, cluster: boolean): Promise<Uint8Array> {
    const job = this.#job(options);
    const header = encodeHeader({
      cmd: Cmd.LIST,
      jobLen: job.length,
      reserved: cluster ? withExt(Flag.CLUSTER) : 0,
    });
    const r = await this.#requester.exchange(
      [[header, "send list request"], [job, "send job id"]],
      [],
      this.#timeoutMs,
    );
    closeAll(r.reply.fds);
    if (cluster && (extFlags(r.reply.header.reserved) & Flag.CLUSTER) === 0) {
      r.fail();
      throw new ProtocolError("broker does not list a cluster");
    }
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
    const r = await this.#requester.exchange(
      [[header, "send drop request"], [name, "send object name"], [job, "send job id"]],
      [],
      this.#timeoutMs,
    );
    closeAll(r.reply.fds);
    r.done();
    return { id: r.reply.header.objectId, size: Number(r.reply.header.size) };
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
    this.#requester.close();
  }

  // ---- WATCH -------------------------------------------------------------------------------

  /**
   * Follow what happens to objects: publishes, drops, retention releases and evictions of one
   * name (`{ name }`), of names under a prefix (`{ prefix }`), or of every name the job may list
   * (`{}`), pushed by the broker on a connection of their own. The result is an `AsyncIterable`
   * of {@link BusEvent}s; a `break`, `options.signal` or `using` closes it. A watcher that reads
   * too slowly loses events, never delays the broker: they coalesce per name (`missed` counts
   * them) or arrive as one `missed` event. After a `--takeover` the watch reconnects by itself
   * (see {@link WatchOptions.reconnect}). A C broker refuses with a {@link BrokerError}
   * (`unknown command`).
   *
   * @example
   * ```ts ignore
   * import { Client } from "@memfdbus/memfdbus";
   * await using client = new Client();
   * using watch = await client.watch({ prefix: "model/" });
   * for await (const ev of watch) {
   *   console.log(ev.kind, ev.id, ev.name);
   *   if (ev.kind === "publish") break;
   * }
   * ```
   *
   * @param target a name, a prefix, or `{}`
   * @param options job (default: the client's), abort signal, accept timeout
   */
  async watch(target: WatchTarget = {}, options: ClientWatchOptions = {}): Promise<Watch> {
    const job = options.jobId === undefined ? this.#jobId : options.jobId;
    const timeoutMs = options.timeoutMs ?? this.#timeoutMs;
    const connect = (): Promise<Connection> => this.#requester.connect(timeoutMs);
    const conn = await connect();
    return await Watch.open(conn, target, {
      job,
      timeoutMs,
      reconnect: connect,
      ...(options.signal === undefined ? {} : { signal: options.signal }),
    });
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

function basename(path: string): string {
  const i = path.lastIndexOf("/");
  return i < 0 ? path : path.slice(i + 1);
}

/**
 * A wait by name that ended with "object not found" becomes a {@link TimeoutError}: no object
 * named NAME appeared within N s. Any other error stays as it is.
 */
function waitExpired(e: unknown, name: Uint8Array, waitMs: number): unknown {
  if (!(e instanceof BrokerError) || e.status !== Status.NOT_FOUND) return e;
  const within = waitMs === 0 ? "the broker's longest wait" : `${waitMs / 1000} s`;
  return new TimeoutError(
    "wait",
    waitMs,
    `no object named ${fromUtf8(name)} appeared within ${within}`,
  );
}
