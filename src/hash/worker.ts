/**
 * Worker entry point that verifies object digests off the broker's event loop. It hashes the
 * sealed memfd with node:crypto (the descriptor table is shared with the broker): a dense one
 * through a read-only mapping whose page tables another thread faults in just ahead, a sparse
 * one with pread; then answers `{ id, digest }` or `{ id, error }`. One job at a time: the pool
 * posts the next only after the answer.
 *
 * @module
 */

import { digestOrErrorAsync, type HashJob } from "./verifier.ts";

/** The worker's global scope, typed narrowly. */
interface WorkerScope {
  onmessage: ((e: MessageEvent<HashJob>) => void) | null;
  postMessage(message: unknown): void;
}

const scope = globalThis as unknown as WorkerScope;
scope.onmessage = async (e: MessageEvent<HashJob>): Promise<void> => {
  const job = e.data;
  scope.postMessage({ id: job.id, ...await digestOrErrorAsync(job.fd, job.size) });
};
