/**
 * Worker entry point that verifies object digests off the broker's event loop. It maps the
 * sealed memfd read-only (the descriptor table is shared with the broker) and hashes it with
 * node:crypto, then answers `{ id, digest }` or `{ id, error }`.
 *
 * @module
 */

import { digestOrError, type HashJob } from "./verifier.ts";

/** The worker's global scope, typed narrowly. */
interface WorkerScope {
  onmessage: ((e: MessageEvent<HashJob>) => void) | null;
  postMessage(message: unknown): void;
}

const scope = globalThis as unknown as WorkerScope;
scope.onmessage = (e: MessageEvent<HashJob>): void => {
  const job = e.data;
  // The mapping is unmapped after the answer is posted: the broker replies meanwhile.
  const later: (() => Promise<void>)[] = [];
  scope.postMessage({ id: job.id, ...digestOrError(job.fd, job.size, later) });
  for (const run of later) void run();
};
