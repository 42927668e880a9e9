/**
 * Digest verification for PUT: inline for small objects, on a pool of Workers for large ones, so
 * one big publish never freezes the broker for other clients (defect D5).
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

/** The digest string, or the broker's error text for a failed verification read. */
export type HashOutcome = { readonly digest: string } | { readonly error: string };

/** Hash a descriptor, turning failures into the C broker's error texts. */
export function digestOrError(fd: number, size: number): HashOutcome {
  try {
    return { digest: digestObjectFd(fd, size) };
  } catch (e) {
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
}

interface Pending {
  resolve: (o: HashOutcome) => void;
}

/**
 * Hashes objects up to `inlineLimit` bytes on the calling thread and larger ones on Workers,
 * started lazily and kept for later jobs.
 */
export class HashPool {
  readonly #size: number;
  readonly #inlineLimit: number;
  readonly #workers: Worker[] = [];
  readonly #busy: number[] = [];
  readonly #pending = new Map<number, Pending>();
  readonly #queue: HashJob[] = [];
  #nextId = 1;
  #closed = false;

  /**
   * @param workers how many Workers at most
   * @param inlineLimit largest object hashed on the calling thread
   */
  constructor(workers = 1, inlineLimit = 1 << 20) {
    this.#size = Math.max(1, workers);
    this.#inlineLimit = inlineLimit;
  }

  /** Jobs queued or running on Workers. */
  get inFlight(): number {
    return this.#pending.size;
  }

  /**
   * Digest `size` bytes of `fd`: small objects at once (a plain value), large ones on a Worker
   * (a promise). The descriptor must stay open until the promise settles.
   */
  digest(fd: number, size: number): HashOutcome | Promise<HashOutcome> {
    if (size <= this.#inlineLimit || this.#closed) return digestOrError(fd, size);
    const job: HashJob = { id: this.#nextId++, fd, size };
    return new Promise<HashOutcome>((resolve) => {
      this.#pending.set(job.id, { resolve });
      this.#queue.push(job);
      this.#dispatch();
    });
  }

  #dispatch(): void {
    while (this.#queue.length > 0) {
      let w = this.#busy.findIndex((n) => n === 0);
      if (w < 0 && this.#workers.length < this.#size) w = this.#spawn();
      if (w < 0) return;
      const job = this.#queue.shift();
      if (job === undefined) return;
      this.#busy[w] = job.id;
      this.#workers[w]?.postMessage(job);
    }
  }

  #spawn(): number {
    const worker = new Worker(new URL("./worker.ts", import.meta.url), { type: "module" });
    const index = this.#workers.length;
    this.#workers.push(worker);
    this.#busy.push(0);
    worker.onmessage = (e: MessageEvent<{ id: number } & HashOutcome>): void => {
      const { id, ...outcome } = e.data;
      this.#busy[index] = 0;
      const p = this.#pending.get(id);
      this.#pending.delete(id);
      p?.resolve(outcome as HashOutcome);
      this.#dispatch();
    };
    worker.onerror = (e: ErrorEvent): void => {
      e.preventDefault();
      const id = this.#busy[index] ?? 0;
      this.#busy[index] = 0;
      const p = this.#pending.get(id);
      this.#pending.delete(id);
      p?.resolve({ error: digestReadFailedText(e.message) });
      this.#dispatch();
    };
    return index;
  }

  /** Stop the Workers. Jobs still queued are answered by hashing inline. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const w of this.#workers) w.terminate();
    for (const [id, p] of this.#pending) {
      const job = this.#queue.find((j) => j.id === id);
      p.resolve(job ? digestOrError(job.fd, job.size) : { error: Text.shuttingDown });
    }
    this.#pending.clear();
    this.#queue.length = 0;
  }
}
