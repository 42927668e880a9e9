/**
 * The tier's upload queue: sealed objects waiting to be uploaded (unless the engine has their
 * digest already) and named in the KV bucket. The queue is bounded in objects and bytes, holds
 * its own descriptor of each sealed memfd (so the broker may drop the object meanwhile), waits
 * out engine outages and retries until the engine takes the upload; a full queue refuses at once
 * and reports through `onQueueOverflow`. Loaded only with `--cluster`.
 *
 * @module
 */

import { inspectSealedFd, isFdProblem } from "../sys/memfd.ts";
import { libraryFdProblemText } from "../protocol/fd_problem.ts";
import { strerror } from "../ffi.ts";
import { dupCloexec, FileDescriptor, pread } from "../sys/fd.ts";
import type { KV } from "@nats-io/kv";
import {
  type ClusterEntry,
  type ClusterVersion,
  decodeRecord,
  encodePut,
  type KeyRecord,
  KV_HISTORY,
  nameKey,
  toObjectDigest,
} from "./model.ts";
import {
  ClusterClosedError,
  ClusterCorruptError,
  ClusterDataError,
  ClusterQueueFullError,
} from "./errors.ts";
import { type EngineLink, transient } from "./link.ts";

/** Bytes per object-store chunk and per read from a memfd (the server's default max_payload). */
export const CHUNK_BYTES = 1024 * 1024;

/** Counters of the upload queue. */
export interface UploadStats {
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
}

interface Job {
  readonly entry: ClusterEntry;
  fd: number;
  /**
   * Queued again after a takeover or a recovery from the shadow: the predecessor may have
   * committed it already, so the commit checks the name's history first (see `#commitOnce`).
   */
  readonly recovered: boolean;
  readonly resolve?: (v: ClusterVersion | null) => void;
  readonly reject?: (e: unknown) => void;
}

type HistoryVerdict =
  | { readonly kind: "committed"; readonly revision: number }
  | { readonly kind: "skip" }
  | { readonly kind: "last"; readonly last: number };

/** The bounded queue of objects to upload and name, drained in order. */
export class UploadQueue {
  readonly #link: EngineLink;
  readonly #queue: Job[] = [];
  #queueBytes = 0;
  #draining: Promise<void> | null = null;
  #stats = { overflows: 0, uploads: 0, uploadedBytes: 0, dedupHits: 0 };

  /** @param link the engine link */
  constructor(link: EngineLink) {
    this.#link = link;
  }

  /** True while objects wait in the queue. */
  get pending(): boolean {
    return this.#queue.length > 0;
  }

  /** Counters and the queue's depth. */
  get stats(): UploadStats {
    return { ...this.#stats, queueEntries: this.#queue.length, queueBytes: this.#queueBytes };
  }

  /**
   * Queue an object; null when queued, otherwise the error (ClusterQueueFullError after
   * `onQueueOverflow`, TypeError for a descriptor that is not a sealed memfd of `entry.size`
   * bytes, ClusterClosedError once closed).
   *
   * @param entry what the KV entry will say
   * @param fd a sealed memfd of exactly `entry.size` bytes (the queue dups it)
   * @param resolve called with the committed version (null: a recovered object that is not to
   *   be committed, see `#commitOnce`)
   * @param reject called when the object cannot be committed
   * @param recovered the object was queued by a predecessor (takeover, shadow recovery)
   */
  add(
    entry: ClusterEntry,
    fd: number,
    resolve?: (v: ClusterVersion | null) => void,
    reject?: (e: unknown) => void,
    recovered = false,
  ): Error | null {
    const o = this.#link.options;
    if (this.#link.closed) return new ClusterClosedError();
    const info = inspectSealedFd(fd, BigInt(entry.size));
    if (isFdProblem(info)) {
      return new TypeError(libraryFdProblemText(info, BigInt(entry.size), strerror));
    }
    if (
      this.#queue.length >= o.maxQueueEntries ||
      this.#queueBytes + entry.size > o.maxQueueBytes
    ) {
      const err = new ClusterQueueFullError(this.#queue.length, this.#queueBytes);
      this.#stats.overflows++;
      this.#link.hooks.onQueueOverflow?.(entry, err);
      return err;
    }
    const job: Job = { entry, fd: dupCloexec(fd, "dup object for upload"), recovered };
    if (resolve !== undefined && reject !== undefined) {
      Object.assign(job, { resolve, reject });
    }
    this.#queue.push(job);
    this.#queueBytes += entry.size;
    this.kick();
    return null;
  }

  /** Start draining unless a drain runs (called on add and when the link comes back up). */
  kick(): void {
    if (this.#draining !== null || this.#link.closed || this.#queue.length === 0) return;
    this.#draining = this.#link.track(this.#drain()).finally(() => {
      this.#draining = null;
      // A job added after the loop found the queue empty, but before this ran, needs a new run.
      if (this.#queue.length > 0 && this.#link.connected) this.kick();
    });
  }

  /** Abandon every waiting job (their `publish` promises reject with ClusterClosedError). */
  abandon(): void {
    for (const job of this.#queue.splice(0)) {
      new FileDescriptor(job.fd).close();
      job.reject?.(new ClusterClosedError());
    }
    this.#queueBytes = 0;
  }

  async #drain(): Promise<void> {
    const link = this.#link;
    let backoff = 50;
    while (!link.closed) {
      const job = this.#queue[0];
      if (job === undefined) return;
      try {
        await link.waitConnected();
        const [version, uploaded] = await this.#upload(job);
        this.#finish(job);
        backoff = 50;
        job.resolve?.(version);
        if (version !== null) link.hooks.onCommitted?.(version, uploaded);
      } catch (e) {
        if (link.closed) return;
        if (!transient(e)) {
          // The object itself is wrong for the engine (it cannot get better by waiting).
          this.#finish(job);
          job.reject?.(e);
          continue;
        }
        link.hooks.onRetry?.("upload", e);
        await link.sleep(backoff);
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

  async #upload(job: Job): Promise<[ClusterVersion | null, boolean]> {
    const { entry, fd } = job;
    const link = this.#link;
    const { kv, os } = link.bound("upload");
    let last = 0;
    if (job.recovered) {
      const seen = await link.deadline("name history", this.#history(kv, entry));
      if (seen.kind === "committed") return [{ ...entry, revision: seen.revision }, false];
      if (seen.kind === "skip") return [null, false];
      last = seen.last;
    }
    const objDigest = toObjectDigest(entry.digest);
    const known = await link.deadline("object info", os.info(entry.digest));
    let uploaded = false;
    if (
      known === null || known.deleted || known.digest !== objDigest || known.size !== entry.size
    ) {
      // Absent, or damaged: a put under the same name replaces (and purges) what was there.
      const info = await os.put(
        { name: entry.digest, options: { max_chunk_size: CHUNK_BYTES } },
        fdStream(fd, entry.size),
        { timeout: link.options.timeoutMs },
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
    // The commit point: only now does the name refer to the blob. A recovered object is
    // written only if the name did not change since its history was read (else the drain tries
    // again, and reads the history again): it cannot be committed twice.
    const key = nameKey(entry.name);
    if (link.closed) throw new ClusterClosedError();
    const revision = await link.deadline(
      "name put",
      !job.recovered
        ? kv.put(key, encodePut(entry))
        : last === 0
        ? kv.create(key, encodePut(entry))
        : kv.update(key, encodePut(entry), last),
    );
    return [{ ...entry, revision }, uploaded];
  }

  /**
   * What a recovered object's name history says: committed already (an entry of this host
   * with its id, digest and creation time), not to be committed (`skip`: a later object of this host is named
   * there, so this one was handled before it, or the history is full and may have lost its
   * entry; committing it could make an old version latest again), or the key's last revision
   * (0: no key) for the compare-and-set.
   */
  async #history(kv: KV, entry: ClusterEntry): Promise<HistoryVerdict> {
    const host = this.#link.options.hostId;
    let last = 0;
    let n = 0;
    let later = false;
    for await (const e of await kv.history({ key: nameKey(entry.name) })) {
      n++;
      last = Math.max(last, e.revision);
      if (e.operation !== "PUT") continue;
      let r: KeyRecord;
      try {
        r = decodeRecord(e.value);
      } catch {
        continue;
      }
      if (r.op !== "put" || r.entry.originHost !== host) continue;
      const e2 = r.entry;
      if (
        e2.originId === entry.originId && e2.digest === entry.digest &&
        e2.createdNs === entry.createdNs
      ) {
        return { kind: "committed", revision: e.revision };
      }
      // Ids restart with a broker that has no shadow: a later object is later in both.
      if (e2.originId > entry.originId && e2.createdNs > entry.createdNs) later = true;
    }
    if (later || n >= KV_HISTORY) return { kind: "skip" };
    return { kind: "last", last };
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
