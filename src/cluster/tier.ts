/**
 * The cluster tier: a broker's connection to NATS JetStream, which holds names (KV bucket
 * `<bucket>-names`) and blobs (object store `<bucket>-blobs`, keyed by digest) for every host.
 * See ./model.ts for the data model. This module and its npm dependencies are loaded only by
 * `await import()` when the broker runs with `--cluster`.
 *
 * Failure behaviour, which the broker relies on:
 * - Opening never waits for the engine longer than one request deadline; the tier connects (and
 *   then reconnects) by itself, forever, in the background.
 * - Interactive calls ({@link ClusterTier.resolve}, {@link ClusterTier.pull},
 *   {@link ClusterTier.drop}, {@link ClusterTier.list}) fail at once with ClusterUnavailableError
 *   while disconnected, and otherwise try up to three times with a short deadline each (right
 *   after a node of a cluster dies, single requests can stall).
 * - Uploads go through a queue bounded in objects and bytes that holds its own descriptor of
 *   each sealed memfd; it waits out an engine outage and retries until the engine takes the
 *   upload. A full queue refuses at once and reports through `onQueueOverflow`.
 * - Watches resume from the last revision they delivered after any interruption.
 *
 * @module
 */

import { createHash } from "node:crypto";
import {
  connect,
  credsAuthenticator,
  type NatsConnection,
  nkeyAuthenticator,
  type NodeConnectionOptions,
} from "@nats-io/transport-node";
import { jetstream, JetStreamApiError, StorageType } from "@nats-io/jetstream";
import { type KV, type KvEntry, Kvm, KvWatchInclude } from "@nats-io/kv";
import { type ObjectStore, Objm, setSha256Backend } from "@nats-io/obj";
import { describeFdProblem, inspectSealedFd, isFdProblem, Memfd } from "../sys/memfd.ts";
import { dupCloexec, FileDescriptor, pread } from "../sys/fd.ts";
import type { ClusterOptions } from "./options.ts";
import {
  type ClusterEntry,
  type ClusterVersion,
  decodeRecord,
  encodeDrop,
  encodePut,
  type KeyRecord,
  KV_HISTORY,
  latestOf,
  nameKey,
  replay,
  toObjectDigest,
} from "./model.ts";
import {
  ClusterClosedError,
  ClusterCorruptError,
  ClusterDataError,
  ClusterQueueFullError,
  ClusterUnavailableError,
} from "./errors.ts";

/** Bytes per object-store chunk and per read from a memfd (the server's default max_payload). */
export const CHUNK_BYTES = 1024 * 1024;

/** Attempts of one interactive call before it gives up. */
export const ATTEMPTS = 3;

const WRONG_LAST_SEQUENCE = 10071;

/** Callbacks through which the tier tells the broker what happened in the background. */
export interface ClusterHooks {
  /** The upload queue refused an object (the broker audits it and counts it in a metric). */
  readonly onQueueOverflow?: (entry: ClusterEntry, error: ClusterQueueFullError) => void;
  /** A queued object was committed (uploaded or known, and named in the KV bucket). */
  readonly onCommitted?: (version: ClusterVersion, uploaded: boolean) => void;
  /** A background step failed and will be retried (connect, upload, watch). */
  readonly onRetry?: (what: string, error: unknown) => void;
  /** The connection to the engine came up or went down. */
  readonly onConnection?: (connected: boolean) => void;
}

/** A remote (or local) change of a name, as a watch delivers it. */
export type ClusterEvent =
  | { readonly kind: "publish"; readonly revision: number; readonly version: ClusterVersion }
  | {
    readonly kind: "drop";
    readonly revision: number;
    /** The name. */
    readonly name: string;
    /** The revision of the version that was dropped. */
    readonly dropped: number;
    /** The host that dropped it. */
    readonly byHost: string;
    /** The version that is latest now, or null. */
    readonly current: ClusterVersion | null;
  };

/** What {@link ClusterTier.drop} did. */
export interface ClusterDropResult {
  /** The version that was newest and is now dropped. */
  readonly dropped: ClusterVersion;
  /** The version that is latest now, or null when none is left. */
  readonly current: ClusterVersion | null;
  /** The revision of the tombstone. */
  readonly revision: number;
}

/** Counters of the tier, for metrics and tests. */
export interface ClusterStats {
  /** Objects waiting for upload. */
  readonly queueEntries: number;
  /** Bytes waiting for upload. */
  readonly queueBytes: number;
  /** Objects refused by a full queue. */
  readonly overflows: number;
  /** Blobs uploaded. */
  readonly uploads: number;
  /** Bytes uploaded. */
  readonly uploadedBytes: number;
  /** Publishes whose blob the engine already had (no upload). */
  readonly dedupHits: number;
  /** Blobs pulled into memfds. */
  readonly pulls: number;
  /** Bytes pulled. */
  readonly pulledBytes: number;
}

/** A running watch; stop it with `stop()` or `using`. */
export interface ClusterWatch extends Disposable {
  /** The last revision delivered (where a restart resumes). */
  readonly lastRevision: number;
  /** Stop delivering events. */
  stop(): void;
}

interface Job {
  readonly entry: ClusterEntry;
  fd: number;
  readonly resolve?: (v: ClusterVersion) => void;
  readonly reject?: (e: unknown) => void;
}

interface Pull {
  readonly promise: Promise<Memfd>;
  refs: number;
}

let sha256Native = false;

/** True for errors that say the engine could not be reached or answered too late. */
function transient(e: unknown): boolean {
  return !(e instanceof ClusterCorruptError || e instanceof ClusterDataError ||
    e instanceof ClusterClosedError);
}

/**
 * A broker's handle on the cluster. Create it with {@link ClusterTier.open}; close it with
 * `close()` or `await using`.
 */
export class ClusterTier implements AsyncDisposable {
  readonly #o: ClusterOptions;
  readonly #hooks: ClusterHooks;
  #nc: NatsConnection | null = null;
  #kv: KV | null = null;
  #os: ObjectStore | null = null;
  #connected = false;
  #closed = false;
  readonly #abort = new AbortController();
  #waiters: (() => void)[] = [];
  readonly #queue: Job[] = [];
  #queueBytes = 0;
  #draining: Promise<void> | null = null;
  readonly #pulls = new Map<string, Pull>();
  readonly #watches = new Set<() => void>();
  readonly #background = new Set<Promise<unknown>>();
  #stats = {
    overflows: 0,
    uploads: 0,
    uploadedBytes: 0,
    dedupHits: 0,
    pulls: 0,
    pulledBytes: 0,
  };

  private constructor(o: ClusterOptions, hooks: ClusterHooks) {
    this.#o = o;
    this.#hooks = hooks;
  }

  /**
   * Start the tier: connect to the engine, creating the buckets if missing (with the configured
   * replicas and storage). Returns after the first attempt whether or not it succeeded; the
   * tier keeps trying in the background, and {@link ClusterTier.ready} waits for it.
   *
   * @param options the cluster options
   * @param hooks callbacks for background events
   */
  static async open(options: ClusterOptions, hooks: ClusterHooks = {}): Promise<ClusterTier> {
    if (!sha256Native) {
      // The object store otherwise hashes in pure JavaScript, 3-5x slower end to end.
      setSha256Backend("native");
      sha256Native = true;
    }
    const tier = new ClusterTier(options, hooks);
    const first = tier.#track(tier.#connectLoop());
    await Promise.race([first, tier.#sleep(options.timeoutMs)]);
    return tier;
  }

  /** This host's id. */
  get hostId(): string {
    return this.#o.hostId;
  }

  /** True while connected to the engine with both buckets bound. */
  get connected(): boolean {
    return this.#connected && !this.#closed;
  }

  /** Counters (queue depth, uploads, dedup hits, pulls). */
  get stats(): ClusterStats {
    return { ...this.#stats, queueEntries: this.#queue.length, queueBytes: this.#queueBytes };
  }

  /**
   * Wait until connected, or throw ClusterUnavailableError after `timeoutMs`.
   *
   * @param timeoutMs how long to wait
   */
  async ready(timeoutMs: number): Promise<void> {
    if (this.connected) return;
    await this.#deadline("connect", this.#waitConnected(), timeoutMs);
  }

  /**
   * Queue a sealed object for upload and naming, and return at once. False (after calling
   * `onQueueOverflow`) when the queue is full; throws TypeError for a descriptor that is not a
   * sealed memfd of `entry.size` bytes, ClusterClosedError once closed. The tier keeps its own descriptor, so the caller
   * may close `fd` (and drop the object) whenever it likes.
   *
   * @param entry what the KV entry will say
   * @param fd a sealed memfd of exactly `entry.size` bytes
   */
  enqueue(entry: ClusterEntry, fd: number): boolean {
    const err = this.#add(entry, fd);
    if (err === null) return true;
    if (err instanceof ClusterQueueFullError) return false;
    throw err;
  }

  /**
   * Upload (unless the engine has the digest already) and commit a name entry; resolves with
   * the committed version once the KV write, the commit point, is done (`--cluster-sync`).
   * Rejects with ClusterQueueFullError when the queue is full.
   *
   * @param entry what the KV entry will say
   * @param fd a sealed memfd of exactly `entry.size` bytes
   */
  publish(entry: ClusterEntry, fd: number): Promise<ClusterVersion> {
    return new Promise((resolve, reject) => {
      const err = this.#add(entry, fd, resolve, reject);
      if (err !== null) reject(err);
    });
  }

  #add(
    entry: ClusterEntry,
    fd: number,
    resolve?: (v: ClusterVersion) => void,
    reject?: (e: unknown) => void,
  ): Error | null {
    if (this.#closed) return new ClusterClosedError();
    const info = inspectSealedFd(fd, BigInt(entry.size));
    if (isFdProblem(info)) return new TypeError(describeFdProblem(info, BigInt(entry.size)));
    if (
      this.#queue.length >= this.#o.maxQueueEntries ||
      this.#queueBytes + entry.size > this.#o.maxQueueBytes
    ) {
      const err = new ClusterQueueFullError(this.#queue.length, this.#queueBytes);
      this.#stats.overflows++;
      this.#hooks.onQueueOverflow?.(entry, err);
      return err;
    }
    const job: Job = { entry, fd: dupCloexec(fd, "dup object for upload") };
    if (resolve !== undefined && reject !== undefined) {
      Object.assign(job, { resolve, reject });
    }
    this.#queue.push(job);
    this.#queueBytes += entry.size;
    this.#kick();
    return null;
  }

  #kick(): void {
    if (this.#draining !== null || this.#closed) return;
    this.#draining = this.#track(this.#drain()).finally(() => {
      this.#draining = null;
      // A job added after the loop found the queue empty, but before this ran, needs a new run.
      if (this.#queue.length > 0 && this.#connected) this.#kick();
    });
  }

  async #drain(): Promise<void> {
    let backoff = 50;
    while (!this.#closed) {
      const job = this.#queue[0];
      if (job === undefined) return;
      try {
        await this.#waitConnected();
        const [version, uploaded] = await this.#upload(job.entry, job.fd);
        this.#finish(job);
        backoff = 50;
        job.resolve?.(version);
        this.#hooks.onCommitted?.(version, uploaded);
      } catch (e) {
        if (this.#closed) return;
        if (!transient(e)) {
          // The object itself is wrong for the engine (it cannot get better by waiting).
          this.#finish(job);
          job.reject?.(e);
          continue;
        }
        this.#hooks.onRetry?.("upload", e);
        await this.#sleep(backoff);
        backoff = Math.min(backoff * 2, 2000);
      }
    }
  }

  #finish(job: Job): void {
    this.#queue.shift();
    this.#queueBytes -= job.entry.size;
    new FileDescriptor(job.fd).close();
    job.fd = -1;
  }

  async #upload(entry: ClusterEntry, fd: number): Promise<[ClusterVersion, boolean]> {
    const { kv, os } = this.#bound("upload");
    const objDigest = toObjectDigest(entry.digest);
    const known = await this.#deadline("object info", os.info(entry.digest));
    let uploaded = false;
    if (
      known === null || known.deleted || known.digest !== objDigest || known.size !== entry.size
    ) {
      // Absent, or damaged: a put under the same name replaces (and purges) what was there.
      const info = await os.put(
        { name: entry.digest, options: { max_chunk_size: CHUNK_BYTES } },
        fdStream(fd, entry.size),
        { timeout: this.#o.timeoutMs },
      );
      if (info.digest !== objDigest || info.size !== entry.size) {
        throw new ClusterCorruptError(entry.digest, `uploaded ${info.digest} (${info.size} bytes)`);
      }
      uploaded = true;
      this.#stats.uploads++;
      this.#stats.uploadedBytes += entry.size;
    } else {
      this.#stats.dedupHits++;
    }
    // The commit point: only now does the name refer to the blob.
    const revision = await this.#deadline(
      "name put",
      kv.put(nameKey(entry.name), encodePut(entry)),
    );
    return [{ ...entry, revision }, uploaded];
  }

  /**
   * The cluster's latest version of a name, or null when it has none. Fails at once with
   * ClusterUnavailableError while disconnected.
   *
   * @param name the name (binary string of its bytes)
   */
  async resolve(name: string): Promise<ClusterVersion | null> {
    const key = nameKey(name);
    const e = await this.#interactive("resolve", ({ kv }) => kv.get(key));
    if (e === null || e.operation !== "PUT") return null;
    const v = latestOf(e.revision, decodeRecord(e.value));
    if (v !== null && v.name !== name) throw new ClusterDataError(`key ${key} names another name`);
    return v;
  }

  /**
   * Stream a version's blob into a new memfd, verify its size and SHA-256 against the version's
   * digest, seal it and return it (the caller owns it). Concurrent pulls of one digest share one
   * transfer; each caller gets its own descriptor. Throws ClusterCorruptError for data that does
   * not match (nothing is kept), ClusterUnavailableError when the engine cannot be reached.
   *
   * @param version the version to fetch (its digest and size)
   */
  pull(version: Pick<ClusterEntry, "digest" | "size">): Promise<Memfd> {
    let p = this.#pulls.get(version.digest);
    if (p === undefined) {
      const digest = version.digest;
      const promise = this.#pullRetrying(version).finally(() => this.#pulls.delete(digest));
      p = { promise, refs: 0 };
      this.#pulls.set(digest, p);
    }
    const shared = p;
    shared.refs++;
    return shared.promise.then(
      (mfd) => {
        try {
          return Memfd.adopt(dupCloexec(mfd.fd, "dup pulled object"));
        } finally {
          if (--shared.refs === 0) mfd.close();
        }
      },
      (e) => {
        shared.refs--;
        throw e;
      },
    );
  }

  async #pullRetrying(v: Pick<ClusterEntry, "digest" | "size">): Promise<Memfd> {
    for (let attempt = 1;; attempt++) {
      if (!this.connected) throw new ClusterUnavailableError("pull: not connected");
      try {
        return await this.#pullOnce(v);
      } catch (e) {
        if (!transient(e) || attempt >= ATTEMPTS || this.#closed) throw this.#wrap("pull", e);
      }
    }
  }

  async #pullOnce(v: Pick<ClusterEntry, "digest" | "size">): Promise<Memfd> {
    const { os } = this.#bound("pull");
    const r = await this.#deadline("object get", os.get(v.digest));
    if (r === null) throw new ClusterDataError(`no blob ${v.digest} in the object store`);
    const reader = r.data.getReader();
    // The library reports a corrupt object through both the stream and this promise.
    r.error.catch(() => {});
    let mfd: Memfd | null = null;
    try {
      if (r.info.digest !== toObjectDigest(v.digest) || r.info.size !== v.size) {
        throw new ClusterCorruptError(v.digest, `${r.info.digest} (${r.info.size} bytes)`);
      }
      mfd = Memfd.create(`cluster:${v.digest}`, { noexecSeal: "auto" });
      const hash = createHash("sha256");
      let n = 0;
      for (;;) {
        let chunk: ReadableStreamReadResult<Uint8Array>;
        try {
          chunk = await this.#deadline("object chunk", reader.read());
        } catch (e) {
          if (e instanceof Error && /corrupt/.test(e.message)) {
            throw new ClusterCorruptError(v.digest, "a chunk that does not hash to it");
          }
          throw e;
        }
        if (chunk.done) break;
        n += chunk.value.length;
        if (n > v.size) throw new ClusterCorruptError(v.digest, `more than ${v.size} bytes`);
        hash.update(chunk.value);
        mfd.writeAll(chunk.value);
      }
      if (n !== v.size) throw new ClusterCorruptError(v.digest, `${n} of ${v.size} bytes`);
      const actual = "sha256:" + hash.digest("hex");
      if (actual !== v.digest) throw new ClusterCorruptError(v.digest, actual);
      mfd.seal();
      this.#stats.pulls++;
      this.#stats.pulledBytes += n;
      const done = mfd;
      mfd = null;
      return done;
    } finally {
      mfd?.close();
      reader.cancel().catch(() => {});
    }
  }

  /**
   * Drop the cluster's newest version of a name: a tombstone, written only if nobody changed the
   * name meanwhile (otherwise it looks again), makes the previous live version latest
   * everywhere. Null when the name has no live version.
   *
   * @param name the name (binary string of its bytes)
   */
  async drop(name: string): Promise<ClusterDropResult | null> {
    const key = nameKey(name);
    for (let attempt = 1;; attempt++) {
      const history = await this.#interactive("drop", async ({ kv }) => {
        const out: { revision: number; record: KeyRecord }[] = [];
        for await (const e of await kv.history({ key })) {
          if (e.operation === "PUT") {
            out.push({ revision: e.revision, record: decodeRecord(e.value) });
          }
        }
        return out;
      });
      const last = history.at(-1);
      const live = replay(history);
      const dropped = live.pop();
      if (last === undefined || dropped === undefined) return null;
      if (dropped.name !== name) throw new ClusterDataError(`key ${key} names another name`);
      const current = live.at(-1) ?? null;
      try {
        const revision = await this.#interactive(
          "drop",
          ({ kv }) =>
            kv.update(
              key,
              encodeDrop(name, dropped.revision, this.#o.hostId, current),
              last.revision,
            ),
          1,
        );
        return { dropped, current, revision };
      } catch (e) {
        const cause = e instanceof ClusterUnavailableError ? e.cause : e;
        const raced = cause instanceof JetStreamApiError && cause.code === WRONG_LAST_SEQUENCE;
        if (!raced || attempt >= 10) throw e;
      }
    }
  }

  /**
   * The latest live version of every name in the cluster, sorted by name bytes.
   */
  async list(): Promise<ClusterVersion[]> {
    return await this.#interactive("list", async ({ kv }) => {
      const keys: string[] = [];
      for await (const k of await kv.keys()) keys.push(k);
      const out: ClusterVersion[] = [];
      for (const k of keys) {
        const e = await kv.get(k);
        if (e === null || e.operation !== "PUT") continue;
        const v = latestOf(e.revision, decodeRecord(e.value));
        if (v !== null) out.push(v);
      }
      return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    });
  }

  /**
   * Deliver every change of a name after `fromRevision` (0: only changes from now on), in
   * revision order, including this host's own. Survives disconnects and resumes after the last
   * revision delivered. A value that is not a well-formed entry is skipped and reported through
   * `onRetry("watch", error)`.
   *
   * @param fromRevision the last revision already seen
   * @param cb called once per event
   */
  watch(fromRevision: number, cb: (event: ClusterEvent) => void): ClusterWatch {
    let last = fromRevision;
    let stopped = false;
    let stopIter: (() => void) | null = null;
    const stop = (): void => {
      stopped = true;
      stopIter?.();
      this.#watches.delete(stop);
    };
    this.#watches.add(stop);
    const run = async (): Promise<void> => {
      let backoff = 50;
      while (!stopped && !this.#closed) {
        try {
          await this.#waitConnected();
          const { kv } = this.#bound("watch");
          const iter = await this.#deadline(
            "watch",
            last === 0
              ? kv.watch({ include: KvWatchInclude.UpdatesOnly })
              : kv.watch({ resumeFromRevision: last + 1 }),
          );
          stopIter = () => iter.stop();
          if (stopped) iter.stop();
          for await (const e of iter) {
            if (e.revision <= last) continue;
            last = e.revision;
            backoff = 50;
            const ev = toEvent(e);
            if (ev instanceof Error) this.#hooks.onRetry?.("watch", ev);
            else cb(ev);
          }
        } catch (e) {
          if (stopped || this.#closed) return;
          this.#hooks.onRetry?.("watch", e);
        }
        if (stopped || this.#closed) return;
        await this.#sleep(backoff);
        backoff = Math.min(backoff * 2, 2000);
      }
    };
    this.#track(run());
    return {
      get lastRevision() {
        return last;
      },
      stop,
      [Symbol.dispose]: stop,
    };
  }

  /**
   * Stop everything: watches end, waiting uploads are abandoned (their `publish` promises
   * reject with ClusterClosedError), the connection closes. Safe to call twice.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#abort.abort();
    for (const stop of [...this.#watches]) stop();
    this.#wake();
    for (const job of this.#queue.splice(0)) {
      new FileDescriptor(job.fd).close();
      job.reject?.(new ClusterClosedError());
    }
    this.#queueBytes = 0;
    const nc = this.#nc;
    this.#nc = null;
    this.#kv = null;
    this.#os = null;
    if (nc !== null) await nc.close().catch(() => {});
    await Promise.allSettled([...this.#background]);
  }

  /** Same as {@link ClusterTier.close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  // --- connection ---

  async #connectLoop(): Promise<void> {
    let backoff = 100;
    while (!this.#closed) {
      try {
        await this.#connectOnce();
        return;
      } catch (e) {
        if (this.#closed) return;
        this.#hooks.onRetry?.("connect", e);
        await this.#sleep(backoff);
        backoff = Math.min(backoff * 2, 2000);
      }
    }
  }

  async #connectOnce(): Promise<void> {
    const o = this.#o;
    const opts: NodeConnectionOptions = {
      servers: [...o.servers],
      name: `memfdbus ${o.hostId}`,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 250,
      timeout: o.timeoutMs,
      pingInterval: 10_000,
    };
    if (o.auth.kind === "token") opts.token = o.auth.token;
    if (o.auth.kind === "credentials") {
      opts.authenticator = credsAuthenticator(await Deno.readFile(o.auth.file));
    }
    if (o.auth.kind === "nkey") {
      const seed = new TextDecoder().decode(await Deno.readFile(o.auth.file)).trim();
      opts.authenticator = nkeyAuthenticator(new TextEncoder().encode(seed));
    }
    if (o.tls !== null) {
      opts.tls = {
        ...(o.tls.ca === undefined ? {} : { caFile: o.tls.ca }),
        ...(o.tls.cert === undefined ? {} : { certFile: o.tls.cert }),
        ...(o.tls.key === undefined ? {} : { keyFile: o.tls.key }),
      };
    }
    const nc = await connect(opts);
    try {
      const js = jetstream(nc, { timeout: o.timeoutMs });
      const storage = o.storage === "memory" ? StorageType.Memory : StorageType.File;
      const kv = await new Kvm(js).create(`${o.bucket}-names`, {
        history: KV_HISTORY,
        replicas: o.replicas,
        storage,
      });
      const os = await new Objm(js).create(`${o.bucket}-blobs`, { replicas: o.replicas, storage });
      if (this.#closed) throw new ClusterClosedError();
      this.#nc = nc;
      this.#kv = kv;
      this.#os = os;
    } catch (e) {
      await nc.close().catch(() => {});
      throw e;
    }
    this.#track(this.#statusLoop(nc));
    this.#track(nc.closed());
    this.#setConnected(true);
  }

  async #statusLoop(nc: NatsConnection): Promise<void> {
    for await (const s of nc.status()) {
      if (s.type === "disconnect") this.#setConnected(false);
      else if (s.type === "reconnect") this.#setConnected(true);
    }
  }

  #setConnected(on: boolean): void {
    if (this.#connected === on) return;
    this.#connected = on;
    this.#hooks.onConnection?.(on);
    if (on) {
      this.#wake();
      if (this.#queue.length > 0) this.#kick();
    }
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }

  #waitConnected(): Promise<void> {
    if (this.#closed) return Promise.reject(new ClusterClosedError());
    if (this.#connected) return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.#waiters.push(() => (this.#closed ? reject(new ClusterClosedError()) : resolve()));
    });
  }

  #bound(what: string): { kv: KV; os: ObjectStore } {
    if (this.#closed) throw new ClusterClosedError();
    const kv = this.#kv;
    const os = this.#os;
    if (!this.#connected || kv === null || os === null) {
      throw new ClusterUnavailableError(`${what}: not connected`);
    }
    return { kv, os };
  }

  async #interactive<T>(
    what: string,
    fn: (b: { kv: KV; os: ObjectStore }) => Promise<T>,
    attempts = ATTEMPTS,
  ): Promise<T> {
    for (let attempt = 1;; attempt++) {
      const b = this.#bound(what);
      try {
        return await this.#deadline(what, fn(b));
      } catch (e) {
        if (!transient(e) || attempt >= attempts || this.#closed) throw this.#wrap(what, e);
      }
    }
  }

  #wrap(what: string, e: unknown): unknown {
    if (!transient(e) || e instanceof ClusterUnavailableError) return e;
    return new ClusterUnavailableError(`${what}: ${e instanceof Error ? e.message : String(e)}`, e);
  }

  /** Race `p` against a timer (cleared either way); a late rejection of `p` is ignored. */
  #deadline<T>(what: string, p: Promise<T>, ms = this.#o.timeoutMs): Promise<T> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new ClusterUnavailableError(`${what}: no answer in ${ms} ms`)),
        ms,
      );
    });
    p.catch(() => {});
    return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const signal = this.#abort.signal;
      if (signal.aborted) return resolve();
      const done = (): void => {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal.addEventListener("abort", done);
    });
  }

  #track<T>(p: Promise<T>): Promise<T> {
    const settled = p.then(() => {}, () => {});
    this.#background.add(settled);
    settled.finally(() => this.#background.delete(settled));
    return p;
  }
}

function toEvent(e: KvEntry): ClusterEvent | Error {
  if (e.operation !== "PUT") return new ClusterDataError(`unexpected ${e.operation} of ${e.key}`);
  try {
    const r = decodeRecord(e.value);
    if (r.op === "put") {
      return {
        kind: "publish",
        revision: e.revision,
        version: { ...r.entry, revision: e.revision },
      };
    }
    return {
      kind: "drop",
      revision: e.revision,
      name: r.name,
      dropped: r.target,
      byHost: r.byHost,
      current: r.current,
    };
  } catch (err) {
    return err as Error;
  }
}

/** A stream of a sealed memfd's bytes, read with pread in {@link CHUNK_BYTES} pieces. */
function fdStream(fd: number, size: number): ReadableStream<Uint8Array> {
  let off = 0;
  return new ReadableStream<Uint8Array>({
    pull(controller): void {
      if (off >= size) return controller.close();
      const buf = new Uint8Array(Math.min(CHUNK_BYTES, size - off));
      let filled = 0;
      while (filled < buf.length) {
        const n = pread(fd, buf.subarray(filled), off + filled, "read object for upload");
        if (n === 0) return controller.error(new ClusterDataError("object shorter than its size"));
        filled += n;
      }
      off += filled;
      controller.enqueue(buf);
      if (off >= size) controller.close();
    },
  }, { highWaterMark: 0 });
}
