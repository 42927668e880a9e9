/**
 * The cluster tier: a broker's connection to NATS JetStream, which holds names (KV bucket
 * `<bucket>-names`) and blobs (object store `<bucket>-blobs`, keyed by digest) for every host.
 * See ./model.ts for the data model. This module and its npm dependencies are loaded only by
 * `await import()` when the broker runs with `--cluster`.
 *
 * The work is split by job: ./link.ts (the connection, deadlines and retries), ./uploads.ts (the
 * upload queue), ./pulls.ts (transfers into memfds), ./names.ts (resolve, list, drop) and
 * ./watch.ts (watches). This class puts them together.
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

import { setSha256Backend } from "@nats-io/obj";
import type { Memfd } from "../sys/memfd.ts";
import type { ClusterOptions } from "./options.ts";
import type { ClusterEntry, ClusterVersion } from "./model.ts";
import { ClusterQueueFullError } from "./errors.ts";
import { type ClusterHooks, EngineLink } from "./link.ts";
import { UploadQueue, type UploadStats } from "./uploads.ts";
import { Puller, type PullStats } from "./pulls.ts";
import { type ClusterDropResult, ClusterNames } from "./names.ts";
import { type ClusterEvent, type ClusterWatch, ClusterWatches } from "./watch.ts";

export { ATTEMPTS, type ClusterHooks } from "./link.ts";
export { CHUNK_BYTES } from "./uploads.ts";
export type { ClusterDropResult } from "./names.ts";
export type { ClusterEvent, ClusterWatch } from "./watch.ts";

/** Counters of the tier, for metrics and tests. */
export interface ClusterStats extends UploadStats, PullStats {}

let sha256Native = false;

/**
 * A broker's handle on the cluster. Create it with {@link ClusterTier.open}; close it with
 * `close()` or `await using`.
 */
export class ClusterTier implements AsyncDisposable {
  readonly #link: EngineLink;
  readonly #uploads: UploadQueue;
  readonly #puller: Puller;
  readonly #names: ClusterNames;
  readonly #watches: ClusterWatches;

  private constructor(o: ClusterOptions, hooks: ClusterHooks) {
    this.#link = new EngineLink(o, hooks, () => this.#uploads.kick());
    this.#uploads = new UploadQueue(this.#link);
    this.#puller = new Puller(this.#link);
    this.#names = new ClusterNames(this.#link);
    this.#watches = new ClusterWatches(this.#link);
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
    await tier.#link.start();
    return tier;
  }

  /** This host's id. */
  get hostId(): string {
    return this.#link.options.hostId;
  }

  /** True while connected to the engine with both buckets bound. */
  get connected(): boolean {
    return this.#link.connected;
  }

  /** True while the upload queue holds work and the engine is reachable. */
  get uploading(): boolean {
    return this.#uploads.pending && this.#link.connected;
  }

  /** Counters (queue depth, uploads, dedup hits, pulls). */
  get stats(): ClusterStats {
    return { ...this.#uploads.stats, ...this.#puller.stats };
  }

  /**
   * Wait until connected, or throw ClusterUnavailableError after `timeoutMs`.
   *
   * @param timeoutMs how long to wait
   */
  async ready(timeoutMs: number): Promise<void> {
    if (this.connected) return;
    await this.#link.deadline("connect", this.#link.waitConnected(), timeoutMs);
  }

  /**
   * Queue a sealed object for upload and naming, and return at once. False (after calling
   * `onQueueOverflow`) when the queue is full; throws TypeError for a descriptor that is not a
   * sealed memfd of `entry.size` bytes, ClusterClosedError once closed. The tier keeps its own
   * descriptor, so the caller may close `fd` (and drop the object) whenever it likes.
   *
   * @param entry what the KV entry will say
   * @param fd a sealed memfd of exactly `entry.size` bytes
   */
  enqueue(entry: ClusterEntry, fd: number): boolean {
    const err = this.#uploads.add(entry, fd);
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
      const err = this.#uploads.add(entry, fd, (v) => {
        if (v !== null) resolve(v);
      }, reject);
      if (err !== null) reject(err);
    });
  }

  /**
   * Queue again an object whose upload a predecessor (the broker taken over, or the one whose
   * shadow was recovered) had queued and may or may not have committed. Before the commit the
   * name's history is read: an entry of this host with the object's id, digest and creation
   * time means it is committed already (resolves with that version, nothing is written); an
   * entry of a later object of this host, or a full history that may have lost the entry, means
   * it must not be written (resolves with null); otherwise the entry is written with a compare-and-set on the
   * key's last revision, so a late commit of the predecessor cannot make it two revisions.
   * Rejects like {@link ClusterTier.publish}.
   *
   * @param entry what the KV entry will say (with this host's id and the object's id)
   * @param fd a sealed memfd of exactly `entry.size` bytes
   */
  requeue(entry: ClusterEntry, fd: number): Promise<ClusterVersion | null> {
    return new Promise((resolve, reject) => {
      const err = this.#uploads.add(entry, fd, resolve, reject, true);
      if (err !== null) reject(err);
    });
  }

  /**
   * The cluster's latest version of a name, or null when it has none. Fails at once with
   * ClusterUnavailableError while disconnected.
   *
   * @param name the name (binary string of its bytes)
   */
  resolve(name: string): Promise<ClusterVersion | null> {
    return this.#names.resolve(name);
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
    return this.#puller.pull(version);
  }

  /**
   * Drop the cluster's newest version of a name: a tombstone, written only if nobody changed the
   * name meanwhile (otherwise it looks again), makes the previous live version latest
   * everywhere. Null when the name has no live version.
   *
   * With `expected` (the revision of the version the caller's policy check saw), the drop goes
   * ahead only while that version is still the newest: if a publish landed after the check, it
   * throws ClusterChangedError (carrying the newest version) and drops nothing, so a caller who
   * may drop the old version cannot drop a new one it was never checked against.
   *
   * @param name the name (binary string of its bytes)
   * @param expected the revision the caller checked, if it checked one
   */
  drop(name: string, expected?: number): Promise<ClusterDropResult | null> {
    return this.#names.drop(name, expected);
  }

  /** The latest live version of every name in the cluster, sorted by name bytes. */
  list(): Promise<ClusterVersion[]> {
    return this.#names.list();
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
    return this.#watches.watch(fromRevision, cb);
  }

  /**
   * Write nothing more to the engine from now on (a successor took the queued uploads over): a
   * drain stops before its next step, and in particular before a name write. `close()` follows.
   */
  quiesce(): void {
    this.#link.shut();
  }

  /**
   * Stop everything: watches end, waiting uploads are abandoned (their `publish` promises
   * reject with ClusterClosedError), the connection closes. Safe to call twice.
   */
  async close(): Promise<void> {
    if (this.#link.closed) return;
    this.#link.shut();
    this.#watches.stopAll();
    this.#uploads.abandon();
    await this.#link.close();
  }

  /** Same as {@link ClusterTier.close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
