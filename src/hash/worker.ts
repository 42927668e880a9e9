/**
 * Worker entry point that verifies object digests off the broker's event loop. It maps the
 * sealed memfd read-only (the descriptor table is shared with the broker) and hashes it with
 * node:crypto, a turn of {@link HASH_TURN} bytes per message, answering `{ id, more: true }` after
 * a turn and `{ id, digest }` or `{ id, error }` at the end.
 *
 * @module
 */

import { ObjectHasher } from "./digest.ts";
import { HASH_TURN, hashFailure, type HashJob } from "./verifier.ts";

/** The worker's global scope, typed narrowly. */
interface WorkerScope {
  onmessage: ((e: MessageEvent<HashJob>) => void) | null;
  postMessage(message: unknown): void;
}

/** Jobs between turns, by id. */
const open = new Map<number, ObjectHasher>();

const scope = globalThis as unknown as WorkerScope;
scope.onmessage = (e: MessageEvent<HashJob>): void => {
  const job = e.data;
  let hasher = open.get(job.id);
  try {
    if (hasher === undefined) {
      hasher = new ObjectHasher(job.fd, job.size);
      open.set(job.id, hasher);
    }
    // One turn of HASH_TURN bytes, then the pool gives the Worker to the next job in turn.
    if (!hasher.step(HASH_TURN)) {
      scope.postMessage({ id: job.id, more: true });
      return;
    }
    const digest = hasher.digest();
    open.delete(job.id);
    // The mapping is unmapped after the answer is posted: the broker replies meanwhile.
    scope.postMessage({ id: job.id, digest });
    void hasher.close();
  } catch (err) {
    open.delete(job.id);
    void hasher?.close();
    scope.postMessage({ id: job.id, ...hashFailure(err, job.fd) });
  }
};
