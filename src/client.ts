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
import { BrokerError, ProtocolError, Status } from "./errors.ts";
import { trySeals } from "./sys/fd.ts";
import { closeAll } from "./sys/unix_socket.ts";
import { Cmd, encodeHeader, extFlags, Flag, withExt } from "./protocol/wire.ts";
import { type ListEntry, parseList } from "./protocol/list.ts";
import type { BusObject } from "./client/bus_object.ts";
import { digestFdSliced } from "./client/hashing.ts";
import {
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
  WAIT_FOREVER_MS,
} from "./client/options.ts";
import { EARLY_SEND_MIN, prepareSealed, type PutSource } from "./client/put_source.ts";
import { Requester, type RequestLink } from "./client/request.ts";
import { basename, putByBroker, putEarly, putSealedFd } from "./client/put.ts";
import { getOnce, statRequest, waitExpired } from "./client/get_stat.ts";
import type { Connection } from "./client/connection.ts";
import { Watch, type WatchTarget } from "./client/watch.ts";
import { usageRequest } from "./client/usage.ts";
import type { UsageReport } from "./protocol/usage.ts";

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
export type { JobUsageEntry, UidUsageEntry, UsageEntry, UsageReport } from "./protocol/usage.ts";

// An empty field of a request (no job id); never written to.
const NO_BYTES = new Uint8Array(0);

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
  // The default job id as request bytes, encoded once.
  readonly #jobBytes: Uint8Array;
  readonly #timeoutMs: number;
  readonly #link: RequestLink;

  /**
   * Create a client. Nothing connects until the first request.
   *
   * @param options socket, job id, timeout and keep-alive
   */
  constructor(options: ClientOptions = {}) {
    this.#jobId = options.jobId === undefined ? jobIdFromEnv() : options.jobId;
    this.#jobBytes = this.#jobId === null ? NO_BYTES : jobBytesOf(this.#jobId, "job id");
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.#requester = new Requester({
      socket: options.socket ?? defaultSocket(),
      keepAlive: options.keepAlive ?? true,
      syncWaitUs: options.syncWaitUs ?? 250,
      brokerUid: options.brokerUid,
    });
    this.#link = { requester: this.#requester, timeoutMs: this.#timeoutMs };
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
    const job = opt?.jobId;
    if (job === undefined) return this.#jobBytes;
    return job === null ? NO_BYTES : jobBytesOf(job, "job id");
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
        const byBroker = await putByBroker(this.#link, prepared, { name: early, job, allow });
        if (byBroker !== null) return byBroker;
      }
      if (early !== null && prepared.digest === null && prepared.size >= EARLY_SEND_MIN) {
        // Bytes the caller holds hash faster than a fresh mapping of the memfd (no page faults).
        const hashFrom = source instanceof Uint8Array ? source : null;
        return await putEarly(this.#link, prepared, {
          name: early,
          job,
          allow,
          hashFrom,
          local: options.local === true,
        });
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
    return await putSealedFd(this.#link, fd, req);
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
    if (waitMs === null) {
      // No await: a GET done on this thread resolves this call's promise directly.
      return getOnce(this.#link, { id, name, job, waitMs: null }, options.verify ?? false);
    }
    const deadline = performance.now() + (waitMs === 0 ? WAIT_FOREVER_MS : waitMs);
    let pause = 50;
    for (;;) {
      try {
        return await getOnce(this.#link, { id, name, job, waitMs }, options.verify ?? false);
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
    const st = await statRequest(this.#link, { id, name, job, waitMs });
    return st ?? await this.#statFallback(selector, options);
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

  // ---- USAGE -------------------------------------------------------------------------------

  /**
   * What the broker, jobs and uids hold (objects, bytes charged after dedup) next to their
   * limits. With a job (the client's or `options.jobId`) the report shows that job only; without
   * one it shows every job. Uids: your own, or every uid for root and the broker's own uid.
   * Throws {@link UnsupportedError} against a broker without the extension (a C broker).
   *
   * @example
   * ```ts ignore
   * import { Client } from "@memfdbus/memfdbus";
   * await using client = new Client({ jobId: "trainer" });
   * const { jobs } = await client.usage();
   * console.log(jobs[0]?.bytes, jobs[0]?.maxBytes);
   * ```
   */
  async usage(options: JobOption = {}): Promise<UsageReport> {
    return await usageRequest(this.#link, this.#job(options));
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
