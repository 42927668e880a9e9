/**
 * Errors of the cluster tier that the broker tells apart.
 *
 * @module
 */

import type { ClusterVersion } from "./model.ts";

/** The engine cannot be reached right now (disconnected, or a request ran out of time). */
export class ClusterUnavailableError extends Error {
  /**
   * @param what the step that could not run, for example `resolve`
   * @param cause the underlying error, if any
   */
  constructor(what: string, cause?: unknown) {
    super(`cluster unavailable: ${what}`, cause === undefined ? undefined : { cause });
    this.name = "ClusterUnavailableError";
  }
}

/** Pulled data does not match the digest the name entry promised; nothing was kept. */
export class ClusterCorruptError extends Error {
  /** The digest the entry named (`sha256:<hex>`). */
  readonly expected: string;
  /** What arrived: a digest, or a description such as a size mismatch. */
  readonly actual: string;

  /**
   * @param expected the digest of the entry
   * @param actual what the data hashed to, or what else was wrong
   */
  constructor(expected: string, actual: string) {
    super(`cluster object corrupt: expected ${expected}, got ${actual}`);
    this.name = "ClusterCorruptError";
    this.expected = expected;
    this.actual = actual;
  }
}

/** A value read from the engine is not a well-formed entry (another writer, or damage). */
export class ClusterDataError extends Error {
  /**
   * @param message what was wrong
   */
  constructor(message: string) {
    super(`cluster data invalid: ${message}`);
    this.name = "ClusterDataError";
  }
}

/** The upload queue is full; the object stays local only. */
export class ClusterQueueFullError extends Error {
  /** Objects waiting when it was refused. */
  readonly entries: number;
  /** Bytes waiting when it was refused. */
  readonly bytes: number;

  /**
   * @param entries objects waiting
   * @param bytes bytes waiting
   */
  constructor(entries: number, bytes: number) {
    super(`cluster upload queue full: ${entries} objects, ${bytes} bytes waiting`);
    this.name = "ClusterQueueFullError";
    this.entries = entries;
    this.bytes = bytes;
  }
}

/**
 * A drop expected a name's newest version to be one revision, and it is another: something was
 * published (or dropped) after the caller's policy check. Nothing was dropped; check the policy
 * against `newest` and try again.
 */
export class ClusterChangedError extends Error {
  /** The revision the caller checked. */
  readonly expected: number;
  /** The name's newest live version now. */
  readonly newest: ClusterVersion;

  /**
   * @param expected the revision the caller checked
   * @param newest the newest live version now
   */
  constructor(expected: number, newest: ClusterVersion) {
    super(`cluster name changed: expected revision ${expected}, newest is ${newest.revision}`);
    this.name = "ClusterChangedError";
    this.expected = expected;
    this.newest = newest;
  }
}

/** The tier was closed while the operation waited. */
export class ClusterClosedError extends Error {
  constructor() {
    super("cluster tier closed");
    this.name = "ClusterClosedError";
  }
}
