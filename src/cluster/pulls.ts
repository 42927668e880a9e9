/**
 * The tier's transfers from the engine: a blob streamed from the object store into a new memfd,
 * its size and SHA-256 checked against the name entry's digest, sealed. Concurrent pulls of one
 * digest share one transfer; each caller gets its own descriptor. Loaded only with `--cluster`.
 *
 * @module
 */

import { Memfd } from "../sys/memfd.ts";
import { dupCloexec } from "../sys/fd.ts";
import { type ClusterEntry, toObjectDigest } from "./model.ts";
import { ClusterCorruptError, ClusterDataError, ClusterUnavailableError } from "./errors.ts";
import { ATTEMPTS, type EngineLink, transient } from "./link.ts";

/** Counters of the transfers. */
export interface PullStats {
  /** Blobs pulled into memfds. */
  readonly pulls: number;
  /** Bytes pulled. */
  readonly pulledBytes: number;
}

interface Pull {
  readonly promise: Promise<Memfd>;
  refs: number;
}

/** Pulls blobs into sealed memfds, one transfer per digest at a time. */
export class Puller {
  readonly #link: EngineLink;
  readonly #pulls = new Map<string, Pull>();
  #stats = { pulls: 0, pulledBytes: 0 };

  /** @param link the engine link */
  constructor(link: EngineLink) {
    this.#link = link;
  }

  /** Counters. */
  get stats(): PullStats {
    return { ...this.#stats };
  }

  /**
   * Stream a version's blob into a new sealed memfd (see `ClusterTier.pull`).
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
    const link = this.#link;
    for (let attempt = 1;; attempt++) {
      if (!link.connected) throw new ClusterUnavailableError("pull: not connected");
      try {
        return await this.#pullOnce(v);
      } catch (e) {
        if (!transient(e) || attempt >= ATTEMPTS || link.closed) throw link.wrap("pull", e);
      }
    }
  }

  async #pullOnce(v: Pick<ClusterEntry, "digest" | "size">): Promise<Memfd> {
    const link = this.#link;
    const { os } = link.bound("pull");
    const r = await link.deadline("object get", os.get(v.digest));
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
      // The SHA-256 is checked by the object store client as the chunks arrive (native, see
      // tier.ts), against the object's digest, which is the entry's (checked above): its stream
      // ends (`done`) only when the bytes hash to it, and fails ("corrupt") otherwise. Hashing
      // here again cost a second pass over every byte on the same thread (a fifth of the pull).
      let n = 0;
      for (;;) {
        let chunk: ReadableStreamReadResult<Uint8Array>;
        try {
          chunk = await link.deadline("object chunk", reader.read());
        } catch (e) {
          if (e instanceof Error && /corrupt/.test(e.message)) {
            throw new ClusterCorruptError(v.digest, "a chunk that does not hash to it");
          }
          throw e;
        }
        if (chunk.done) break;
        n += chunk.value.length;
        if (n > v.size) throw new ClusterCorruptError(v.digest, `more than ${v.size} bytes`);
        mfd.writeAll(chunk.value);
      }
      if (n !== v.size) throw new ClusterCorruptError(v.digest, `${n} of ${v.size} bytes`);
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
}
