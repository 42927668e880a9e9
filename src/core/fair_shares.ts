/**
 * Fair shares: how much of each shared budget one peer uid may hold, so that one local user can
 * use most of the broker but never all of it. Pure: the broker counts, this module decides.
 *
 * Budgets per uid, each by default 3/4 of the broker-wide limit (rounded down, at least 1):
 * - connections open (`--max-clients`), configured as `peerLimits.connections`;
 * - GET --wait requests parked (`--max-waiters`), `peerLimits.waits`;
 * - watch streams open (`--max-watchers`), `peerLimits.watchers`;
 * - unread replies (`peerLimits.replyBytes`, 16 MiB, and `peerLimits.replyFds`, 64): reply bytes
 *   queued but not yet sent (a LIST's snapshot counts 8 bytes per object) and replies carrying a
 *   descriptor not yet sent, summed over the uid's connections; a uid at either bound is not
 *   read from (no new requests start) until its replies drain;
 * - objects and bytes stored (`--max-objects`, `--max-total-bytes`): these are the governance
 *   module's per-uid quotas (`quotas.perUid`, `quotas.uids`); when the config sets none, the
 *   3/4 share applies;
 * - object metadata held (`--max-metadata-bytes`), configured as `peerLimits.metadataBytes`:
 *   the summed metadata charges (name, owner and allowed job bytes plus a fixed per-object
 *   overhead, `metadataCost` in src/core/store.ts) of the objects the uid published. Contents
 *   are shared by dedup but names are not, so without it a uid could fill the broker's heap with
 *   tiny deduplicated objects under long names.
 *
 * Jobs the policy binds (`jobs`) hold shares too, whoever claims them: objects and bytes (3/4 of
 * `--max-objects` and `--max-total-bytes` unless `quotas.jobs` names the job; refused by the
 * governance module's job quota, see {@link withJobShares}) and parked waits (3/4 of
 * `--max-waiters`, {@link jobWaitShare}). A connection has no job of its own (each request
 * claims one), so connections are shared per uid only.
 *
 * Root and the broker's own uid are exempt by default: they are trusted (root can read the
 * broker's memory anyway, and the broker's uid is its operator), and a broker used by one user,
 * as the C broker's conformance suite uses it, behaves exactly as before. A uid listed in
 * `quotas.uids` is held to its entry, exempt or not.
 *
 * @module
 */

import type { QuotaLimits, Quotas } from "./governance.ts";

/** The share of each broker-wide limit one uid may hold by default. */
export const DEFAULT_SHARE = 3 / 4;

/** Per-uid limits on connections and parked waits (config `peerLimits`). */
export interface PeerLimits {
  /** Connections one uid may have open, or null for the default share of `maxClients`. */
  readonly connections: number | null;
  /** GET --wait requests one uid may have parked, or null for the share of `maxWaiters`. */
  readonly waits: number | null;
  /** Watch streams one uid may have open, or null for the share of `maxWatchers`. */
  readonly watchers?: number | null;
  /** Unsent reply bytes one uid may hold before it is not read from (null: 16 MiB). */
  readonly replyBytes?: number | null;
  /** Unsent replies with a descriptor one uid may hold before it is not read from (null: 64). */
  readonly replyFds?: number | null;
  /** Metadata bytes one uid's objects may be charged, or null for 3/4 of `maxMetadataBytes`. */
  readonly metadataBytes?: bigint | null;
}

/** Default of `peerLimits.replyBytes`. */
export const DEFAULT_REPLY_BYTES = 16 * 1024 * 1024;
/** Default of `peerLimits.replyFds`. */
export const DEFAULT_REPLY_FDS = 64;

/** No explicit per-uid limits: the default shares apply. */
export const DEFAULT_PEER_LIMITS: PeerLimits = {
  connections: null,
  waits: null,
  watchers: null,
  replyBytes: null,
  replyFds: null,
  metadataBytes: null,
};

/** The broker-wide limits the default shares are taken from. */
export interface GlobalLimits {
  /** --max-clients. */
  readonly maxClients: number;
  /** --max-waiters. */
  readonly maxWaiters: number;
  /** --max-watchers (absent: watchers are not limited per uid). */
  readonly maxWatchers?: number;
  /** --max-objects. */
  readonly maxObjects: bigint;
  /** --max-total-bytes. */
  readonly maxTotalBytes: bigint;
  /** --max-metadata-bytes (absent: metadata is not limited per uid). */
  readonly maxMetadataBytes?: bigint;
}

/** The default share of a limit: 3/4, rounded down, at least 1. */
export function shareOf(limit: number): number {
  return Math.max(1, Math.floor(limit * DEFAULT_SHARE));
}

/** The largest 64-bit limit, which means none. */
const NO_LIMIT = 18446744073709551615n;

/** {@link shareOf} for 64-bit limits; no limit (2^64 - 1) shares as no limit. */
export function shareOfBig(limit: bigint): bigint {
  if (limit >= NO_LIMIT) return NO_LIMIT;
  const s = limit / 4n * 3n + (limit % 4n) * 3n / 4n;
  return s < 1n ? 1n : s;
}

/** The limits in force for one uid. */
export interface UidShare {
  /** Connections. */
  readonly connections: number;
  /** Parked waits. */
  readonly waits: number;
  /** Watch streams open. */
  readonly watchers: number;
  /** Unsent reply bytes before reading stops. */
  readonly replyBytes: number;
  /** Unsent replies with a descriptor before reading stops. */
  readonly replyFds: number;
  /** Objects and bytes, or null for none (an exempt uid without a quota entry). */
  readonly store: QuotaLimits | null;
  /** Metadata bytes ({@link storeShareProblem}), or null for none (exempt uids). */
  readonly metadataBytes: bigint | null;
  /** The config key of the store limit, for refusal texts. */
  readonly storeKey: string;
}

/**
 * The limits of `uid`, or null when it is exempt from every one (root and the broker's uid,
 * unless `quotas.uids` names it).
 *
 * @param uid the peer's uid
 * @param rules the configured limits and quotas, and the broker-wide limits
 */
export function shareFor(
  uid: number,
  rules: {
    peerLimits: PeerLimits;
    quotas: Quotas;
    global: GlobalLimits;
    exempt: readonly number[];
  },
): UidShare | null {
  const own = rules.quotas.uids.get(uid);
  const exempt = rules.exempt.includes(uid);
  if (exempt && own === undefined) return null;
  const g = rules.global;
  const store: QuotaLimits | null = own ?? rules.quotas.perUid ?? {
    objects: shareOfBig(g.maxObjects),
    bytes: shareOfBig(g.maxTotalBytes),
  };
  const storeKey = own !== undefined ? "quotas.uids" : "quotas.perUid";
  if (exempt) {
    return {
      connections: Infinity,
      waits: Infinity,
      watchers: Infinity,
      replyBytes: Infinity,
      replyFds: Infinity,
      store,
      storeKey,
      metadataBytes: null,
    };
  }
  return {
    connections: rules.peerLimits.connections ?? shareOf(g.maxClients),
    waits: rules.peerLimits.waits ?? shareOf(g.maxWaiters),
    watchers: rules.peerLimits.watchers ??
      (g.maxWatchers === undefined ? Infinity : shareOf(g.maxWatchers)),
    replyBytes: rules.peerLimits.replyBytes ?? DEFAULT_REPLY_BYTES,
    replyFds: rules.peerLimits.replyFds ?? DEFAULT_REPLY_FDS,
    store,
    storeKey,
    metadataBytes: rules.peerLimits.metadataBytes ??
      (g.maxMetadataBytes === undefined ? null : shareOfBig(g.maxMetadataBytes)),
  };
}

/**
 * The refusal when a uid holds its whole share, naming the limit, e.g.
 * `uid 1001 has 96 of 96 connections (the per-uid limit, peerLimits.connections)`.
 *
 * @param uid the peer's uid
 * @param what the budget, as in `connections`, `parked waits`, `objects`, `bytes`
 * @param counts what it holds and its limit
 * @param key the config key that sets the limit
 */
export function shareText(
  uid: number,
  what: string,
  counts: { held: number | bigint; max: number | bigint },
  key: string,
): string {
  return `uid ${uid} has ${counts.held} of ${counts.max} ${what} (the per-uid limit, ${key})`;
}

/**
 * Would storing one more object of `size` bytes, charged `cost` metadata bytes, exceed the
 * store share? Returns the refusal text, or null. The metadata refusal reads e.g.
 * `uid 65534 has 196608 of 200000 metadata bytes (the per-uid limit, peerLimits.metadataBytes);
 * this put needs 66304`.
 *
 * @param uid the publisher
 * @param share its limits
 * @param usage what it holds now (objects, bytes, metadata charges), and the new object's size
 *   and metadata charge (absent: 0)
 */
export function storeShareProblem(
  uid: number,
  share: UidShare,
  usage: {
    readonly objects: number;
    readonly bytes: number;
    readonly size: number;
    readonly metadata?: number;
    readonly cost?: number;
  },
): string | null {
  const size = usage.size;
  const m = share.metadataBytes;
  const held = usage.metadata ?? 0;
  const cost = usage.cost ?? 0;
  if (m !== null && BigInt(held) + BigInt(cost) > m) {
    return shareText(uid, "metadata bytes", { held, max: m }, "peerLimits.metadataBytes") +
      `; this put needs ${cost}`;
  }
  const q = share.store;
  if (q === null) return null;
  if (q.objects !== null && BigInt(usage.objects) + 1n > q.objects) {
    return shareText(uid, "objects", { held: usage.objects, max: q.objects }, share.storeKey);
  }
  if (q.bytes !== null && BigInt(usage.bytes) + BigInt(size) > q.bytes) {
    return shareText(uid, "bytes", { held: usage.bytes, max: q.bytes }, share.storeKey) +
      `; this put needs ${size}`;
  }
  return null;
}

/**
 * `quotas` with a job quota for every job `bound` (the policy's `jobs`) that `quotas.jobs` does
 * not name: the default share of the broker-wide object and byte limits.
 *
 * @param quotas the configured quotas
 * @param bound the job ids the policy binds (binary strings)
 * @param global the broker-wide limits
 */
export function withJobShares(
  quotas: Quotas,
  bound: Iterable<string>,
  global: GlobalLimits,
): Quotas {
  const jobs = new Map(quotas.jobs);
  for (const job of bound) {
    if (!jobs.has(job)) {
      jobs.set(job, {
        objects: shareOfBig(global.maxObjects),
        bytes: shareOfBig(global.maxTotalBytes),
      });
    }
  }
  return jobs.size === quotas.jobs.size ? quotas : { ...quotas, jobs };
}

/** The parked waits one bound job may hold: the default share of `--max-waiters`. */
export function jobWaitShare(global: GlobalLimits): number {
  return shareOf(global.maxWaiters);
}

/**
 * The refusal when a bound job holds its whole share of parked waits, e.g.
 * `job trainer has 768 of 768 parked waits (the per-job limit, 3/4 of --max-waiters)`.
 */
export function jobWaitText(job: string, held: number, max: number): string {
  return `job ${job} has ${held} of ${max} parked waits (the per-job limit, 3/4 of --max-waiters)`;
}
