/**
 * Digest verification for PUT: inline for small objects, on a pool of Workers for large ones, so
 * one big publish never freezes the broker for other clients (defect D5).
 *
 * Small objects and any with a hole are read with pread into a bounded buffer (so the holes of
 * a sparse memfd cost no memory); large objects whose every page exists are hashed through a
 * read-only mapping (see `digestObjectFd` in `./digest.ts`). Each peer (uid) may have only a few objects
 * queued or being hashed ({@link HashPool} `perPeer`), and Workers take the next job from the
 * peer with the fewest jobs running, so one uid publishing many large objects delays its own
 * publishes, not everyone's. A Worker hashes {@link HASH_TURN} bytes of a job per turn and then
 * takes the next job in turn, so one huge object (a sparse memfd of a terabyte is minutes of
 * hashing) cannot hold a Worker while others wait.
 *
 * @module
 */

import { digestObjectFd } from "./digest.ts";
import { ErrnoError } from "../errors.ts";
import { errno, libc, strerror } from "../ffi.ts";
import { digestReadFailedText, Text } from "../protocol/wire.ts";

/** A request to hash `size` bytes of descriptor `fd`. */
export interface HashJob {
  /** Correlation id. */
  readonly id: number;
  /** The sealed memfd (a descriptor number valid in the whole process). */
  readonly fd: number;
  /** Bytes to hash. */
  readonly size: number;
}

/** Objects a peer may have queued or being hashed at once, by default. */
export const HASH_PER_PEER = 4;

/** The refusal when a peer already has `limit` digests queued or running. */
export function hashQuotaText(peer: number | string, limit: number): string {
  const who = typeof peer === "number" ? `uid ${peer}` : peer;
  return `too many digests in flight for this peer (${who} has ${limit}, the per-peer limit): retry later`;
}

/** The digest string, or the broker's error text for a failed verification read. */
export type HashOutcome = { readonly digest: string } | { readonly error: string };

/**
 * Hash a descriptor, turning failures into the C broker's error texts. With `later`, cleanup
 * that can wait until the answer is out (unmapping) is pushed there instead of run.
 */
export function digestOrError(
  fd: number,
  size: number,
  later?: (() => Promise<void>)[],
): HashOutcome {
  try {
    return { digest: digestObjectFd(fd, size, later) };
  } catch (e) {
    return hashFailure(e, fd);
  }
}

/** The broker's error text for a digest of `fd` that threw `e`. */
export function hashFailure(e: unknown, fd: number): HashOutcome {
  if (e instanceof RangeError) return { error: Text.digestShortRead };
  if (e instanceof ErrnoError) {
    if (e.code === "ENOMEM") return { error: Text.digestAlloc };
    // The C broker reads with pread: report what pread says about this descriptor (a
    // write-only one gives EBADF, where mmap says EACCES).
    const probe = new Uint8Array(1);
    const n = libc.symbols.pread(fd, probe, 1n, 0n);
    if (n < 0) return { error: digestReadFailedText(strerror(errno())) };
    if (n === 0n) return { error: Text.digestShortRead };
    return { error: digestReadFailedText(e.description) };
  }
  return { error: digestReadFailedText((e as Error).message) };
}

interface Pending {
  resolve: (o: HashOutcome) => void;
  peer: number | string;
  job: HashJob;
  /** The Worker that holds the job's hash state once its first turn ran (-1 before). */
  worker: number;
}

/** Bytes a Worker hashes of one job before it takes the next job in turn. */
export const HASH_TURN = 256 << 20;

/**
 * Hashes objects up to `inlineLimit` bytes on the calling thread and larger ones on Workers,
 * started lazily and kept for later jobs.
 */
export class HashPool {
  readonly #size: number;
  readonly #inlineLimit: number;
  readonly #perPeer: number;
  /** Jobs queued or running, by peer. */
  readonly #byPeer = new Map<number | string, number>();
  /** Jobs running on a Worker, by peer. */
  readonly #running = new Map<number | string, number>();
  readonly #workers: Worker[] = [];
  readonly #busy: number[] = [];
  readonly #pending = new Map<number, Pending>();
  readonly #queue: HashJob[] = [];
  #nextId = 1;
  #closed = false;

  /**
   * @param workers how many Workers at most
   * @param inlineLimit largest object hashed on the calling thread
   * @param perPeer jobs one peer may have queued or running at once
   */
  constructor(workers = 1, inlineLimit = 1 << 20, perPeer = HASH_PER_PEER) {
    this.#size = Math.max(1, workers);
    this.#inlineLimit = inlineLimit;
    this.#perPeer = Math.max(1, perPeer);
  }

  /** Jobs queued or running on Workers. */
  get inFlight(): number {
    return this.#pending.size;
  }

  /**
   * Digest `size` bytes of `fd`: small objects at once (a plain value), large ones on a Worker
   * (a promise). The descriptor must stay open until the promise settles. A large object of a
   * `peer` (its uid) that already has `perPeer` jobs queued or running is refused at once.
   */
  digest(
    fd: number,
    size: number,
    peer: number | string = "-",
  ): HashOutcome | Promise<HashOutcome> {
    if (size <= this.#inlineLimit || this.#closed) return digestOrError(fd, size);
    const held = this.#byPeer.get(peer) ?? 0;
    if (held >= this.#perPeer) return { error: hashQuotaText(peer, this.#perPeer) };
    this.#byPeer.set(peer, held + 1);
    const job: HashJob = { id: this.#nextId++, fd, size };
    return new Promise<HashOutcome>((resolve) => {
      this.#pending.set(job.id, { resolve, peer, job, worker: -1 });
      this.#queue.push(job);
      this.#dispatch();
    });
  }

  #count(map: Map<number | string, number>, peer: number | string, delta: number): void {
    const n = (map.get(peer) ?? 0) + delta;
    if (n <= 0) map.delete(peer);
    else map.set(peer, n);
  }

  /**
   * The queued job Worker `w` may take (a new one, or one whose hash state it holds) of the peer
   * with the fewest jobs running (oldest first among equals; a job back from a turn is last).
   */
  #nextJob(w: number): HashJob | undefined {
    let best = -1;
    let bestRunning = Infinity;
    for (let i = 0; i < this.#queue.length && bestRunning > 0; i++) {
      const job = this.#queue[i];
      const p = job === undefined ? undefined : this.#pending.get(job.id);
      if (p !== undefined && p.worker >= 0 && p.worker !== w) continue;
      const peer = p?.peer ?? "-";
      // Fewest running first; among equals, the peer with fewer jobs in flight.
      const running = (this.#running.get(peer) ?? 0) + (this.#byPeer.get(peer) ?? 0) / 1024;
      if (running < bestRunning) [best, bestRunning] = [i, running];
    }
    return best < 0 ? undefined : this.#queue.splice(best, 1)[0];
  }

  #settle(id: number, outcome: HashOutcome): void {
    const p = this.#pending.get(id);
    this.#pending.delete(id);
    if (p === undefined) return;
    this.#count(this.#byPeer, p.peer, -1);
    this.#count(this.#running, p.peer, -1);
    p.resolve(outcome);
  }

  #dispatch(): void {
    // Workers are started in order, so a free slot past the last one is the next to start.
    for (let w = 0; w < this.#size && this.#queue.length > 0; w++) {
      if (w < this.#busy.length && this.#busy[w] !== 0) continue;
      const job = this.#nextJob(w);
      if (job === undefined) continue;
      if (w >= this.#workers.length) w = this.#spawn();
      const p = this.#pending.get(job.id);
      if (p !== undefined) p.worker = w;
      this.#busy[w] = job.id;
      this.#count(this.#running, p?.peer ?? "-", 1);
      this.#workers[w]?.postMessage(job);
    }
  }

  #spawn(): number {
    const worker = new Worker(new URL("./worker.ts", import.meta.url), { type: "module" });
    const index = this.#workers.length;
    this.#workers.push(worker);
    this.#busy.push(0);
    worker.onmessage = (e: MessageEvent<{ id: number; more?: boolean } & HashOutcome>): void => {
      const { id, more, ...outcome } = e.data;
      this.#busy[index] = 0;
      const p = this.#pending.get(id);
      if (more === true && p !== undefined) {
        // A turn is over: the job waits behind the others (on this Worker, which holds its state).
        this.#count(this.#running, p.peer, -1);
        this.#queue.push(p.job);
      } else this.#settle(id, outcome as HashOutcome);
      this.#dispatch();
    };
    worker.onerror = (e: ErrorEvent): void => {
      e.preventDefault();
      const id = this.#busy[index] ?? 0;
      this.#busy[index] = 0;
      this.#settle(id, { error: digestReadFailedText(e.message) });
      this.#dispatch();
    };
    return index;
  }

  /** Stop the Workers. Jobs queued or running are answered `broker is shutting down`. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const w of this.#workers) w.terminate();
    // Queued jobs are refused too, never hashed here: a queued terabyte would hold the stop.
    for (const p of this.#pending.values()) p.resolve({ error: Text.shuttingDown });
    this.#pending.clear();
    this.#byPeer.clear();
    this.#running.clear();
    this.#queue.length = 0;
  }
}
