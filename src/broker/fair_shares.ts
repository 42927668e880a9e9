/**
 * The broker's {@link PeerLedger}: it counts, per peer uid, the connections open, the GET --wait
 * requests parked and (through the governance module's accounting) the objects and bytes stored,
 * and refuses what would take a uid past its share (`src/core/fair_shares.ts` decides). A
 * connection whose uid is unknown (the peer left before SO_PEERCRED) is not counted; its request
 * fails on its own.
 *
 * @module
 */

import { errorOutcome, type Outcome } from "../core/handlers.ts";
import { blankRecord } from "../core/audit.ts";
import {
  type GlobalLimits,
  jobWaitShare,
  jobWaitText,
  type PeerLimits,
  shareFor,
  shareText,
  storeShareProblem,
  type UidShare,
} from "../core/fair_shares.ts";
import type { Governor } from "../core/governance.ts";
import type { QuotaLimits, Quotas } from "../core/governance.ts";
import { Status } from "../errors.ts";
import type { PeerLedger } from "./admission.ts";
import type { Conn } from "./connection.ts";
import type { Store } from "../core/store.ts";
import { usageReport } from "../core/usage.ts";
import type { UsageReport } from "../protocol/usage.ts";

/** What the ledger is configured with. */
export interface FairShareRules {
  /** Per-uid connection and wait limits (config `peerLimits`). */
  readonly peerLimits: PeerLimits;
  /** Per-uid object and byte quotas (config `quotas`). */
  readonly quotas: Quotas;
  /** The broker-wide limits the default shares derive from. */
  readonly global: GlobalLimits;
  /** Uids without limits unless `quotas.uids` names them (root and the broker's own). */
  readonly exempt: readonly number[];
  /** Jobs the policy binds: each holds at most its share of parked waits. */
  readonly boundJobs?: ReadonlySet<string>;
}

/** Per-uid counts and refusals. */
export class FairShares implements PeerLedger {
  readonly #rules: FairShareRules;
  readonly #governor: Governor;
  readonly #shares = new Map<number, UidShare | null>();
  readonly #connections = new Map<number, number>();
  readonly #waits = new Map<number, number>();
  readonly #watchers = new Map<number, number>();
  #watching = 0;
  // Which connections are counted (by their uid), counted as parked and counted as watchers
  // is marked on the connections themselves (Conn.sharesUid and the fields after it).
  /** Unsent reply bytes and descriptor replies per uid. */
  readonly #replyBytes = new Map<number, number>();
  readonly #replyFds = new Map<number, number>();
  /** Connections not read from because their uid holds its reply share, by uid. */
  readonly #throttled = new Map<number, Set<Conn>>();
  /** Parked waits per bound job, and the job each counted connection is parked for. */
  readonly #jobWaits = new Map<string, number>();

  /**
   * @param rules limits and exemptions
   * @param governor the store accounting per uid (objects, bytes)
   */
  constructor(rules: FairShareRules, governor: Governor) {
    this.#rules = rules;
    this.#governor = governor;
  }

  #share(uid: number): UidShare | null {
    let s = this.#shares.get(uid);
    if (s === undefined) {
      s = shareFor(uid, this.#rules);
      this.#shares.set(uid, s);
    }
    return s;
  }

  /** Connections `uid` has open (for tests and metrics). */
  connectionsOf(uid: number): number {
    return this.#connections.get(uid) ?? 0;
  }

  /** Waits `uid` has parked. */
  waitsOf(uid: number): number {
    return this.#waits.get(uid) ?? 0;
  }

  /** A connection was admitted: count it, or refuse it past the uid's share. */
  opened(conn: Conn): Outcome | null {
    const uid = conn.peer?.uid;
    if (uid === undefined) return null;
    const share = this.#share(uid);
    const held = this.connectionsOf(uid);
    if (share !== null && held >= share.connections) {
      const text = shareText(
        uid,
        "connections",
        { held, max: share.connections },
        "peerLimits.connections",
      );
      return errorOutcome(0, Status.ERR, text, blankRecord("unknown", "error", null));
    }
    this.#connections.set(uid, held + 1);
    conn.sharesUid = uid;
    return null;
  }

  /** The USAGE report for `conn`'s peer asking as `caller` (see `src/core/usage.ts`). */
  usage(conn: Conn, caller: string | null, store: Store): UsageReport {
    const uid = conn.peer?.uid;
    return usageReport(
      this.#governor,
      store,
      {
        caller,
        uid,
        operator: uid !== undefined && this.#rules.exempt.includes(uid),
      },
      (u) => tighter(this.#governor.uidQuota(u), this.#share(u)?.store ?? null),
      (u) => this.#share(u)?.metadataBytes ?? null,
    );
  }

  /** Watch streams `uid` has open. */
  watchersOf(uid: number): number {
    return this.#watchers.get(uid) ?? 0;
  }

  /**
   * A WATCH request asks to become a watch stream: count it, or return the refusal text naming
   * the limit (the broker-wide `--max-watchers`, then the uid's share, `peerLimits.watchers`).
   */
  watching(conn: Conn): string | null {
    if (conn.sharesWatchUid !== null) return null;
    const max = this.#rules.global.maxWatchers;
    if (max !== undefined && this.#watching >= max) {
      return `the broker has ${this.#watching} of ${max} watchers ` +
        `(the broker-wide limit, --max-watchers or maxWatchers)`;
    }
    const uid = conn.peer?.uid;
    if (uid !== undefined) {
      const share = this.#share(uid);
      const held = this.watchersOf(uid);
      if (share !== null && held >= share.watchers) {
        return shareText(uid, "watchers", { held, max: share.watchers }, "peerLimits.watchers");
      }
      this.#watchers.set(uid, held + 1);
    }
    this.#watching++;
    conn.sharesWatchUid = uid ?? -1;
    return null;
  }

  /** A watch stream ended (no effect when it was not counted). */
  unwatched(conn: Conn): void {
    const uid = conn.sharesWatchUid;
    if (uid === null) return;
    conn.sharesWatchUid = null;
    this.#watching--;
    if (uid < 0) return;
    const n = this.watchersOf(uid) - 1;
    if (n > 0) this.#watchers.set(uid, n);
    else this.#watchers.delete(uid);
  }

  /** A connection closed. */
  closed(conn: Conn): void {
    this.unparked(conn);
    this.unwatched(conn);
    this.replying(conn, 0, 0);
    if (conn.throttled) {
      conn.throttled = false;
      const uid = conn.peer?.uid;
      if (uid !== undefined) this.#throttled.get(uid)?.delete(conn);
    }
    const uid = conn.sharesUid;
    if (uid < 0) return;
    conn.sharesUid = -1;
    const n = this.connectionsOf(uid) - 1;
    if (n > 0) this.#connections.set(uid, n);
    else this.#connections.delete(uid);
  }

  /** A request asks to park (GET --wait): count it, or return the refusal text. */
  parking(conn: Conn): string | null {
    const step = conn.step;
    const job = step?.kind === "wait" ? step.job ?? null : null;
    if (job !== null && this.#rules.boundJobs?.has(job) === true && conn.sharesParkedJob === null) {
      const held = this.#jobWaits.get(job) ?? 0;
      const max = jobWaitShare(this.#rules.global);
      if (held >= max) return jobWaitText(shortJob(job), held, max);
      const refusal = this.#parkUid(conn);
      if (refusal !== null) return refusal;
      this.#jobWaits.set(job, held + 1);
      conn.sharesParkedJob = job;
      return null;
    }
    return this.#parkUid(conn);
  }

  #parkUid(conn: Conn): string | null {
    const uid = conn.peer?.uid;
    if (uid === undefined || conn.sharesParked) return null;
    const share = this.#share(uid);
    const held = this.waitsOf(uid);
    if (share !== null && held >= share.waits) {
      return shareText(uid, "parked waits", { held, max: share.waits }, "peerLimits.waits");
    }
    this.#waits.set(uid, held + 1);
    conn.sharesParked = true;
    return null;
  }

  /** A parked request was answered, expired or closed (no effect when it was not counted). */
  unparked(conn: Conn): void {
    const job = conn.sharesParkedJob;
    if (job !== null) {
      conn.sharesParkedJob = null;
      const n = (this.#jobWaits.get(job) ?? 0) - 1;
      if (n > 0) this.#jobWaits.set(job, n);
      else this.#jobWaits.delete(job);
    }
    if (!conn.sharesParked) return;
    conn.sharesParked = false;
    const uid = conn.peer?.uid;
    if (uid === undefined) return;
    const n = this.waitsOf(uid) - 1;
    if (n > 0) this.#waits.set(uid, n);
    else this.#waits.delete(uid);
  }

  /** Unsent reply bytes `uid` holds. */
  replyBytesOf(uid: number): number {
    return this.#replyBytes.get(uid) ?? 0;
  }

  /** Unsent replies with a descriptor `uid` holds. */
  replyFdsOf(uid: number): number {
    return this.#replyFds.get(uid) ?? 0;
  }

  /** True while some uid is throttled (a cheap test for the request path). */
  get throttling(): boolean {
    return this.#throttled.size > 0;
  }

  /**
   * The connection's unsent reply now holds `bytes` bytes and `fds` descriptors (0 or 1). Returns
   * the connections to read from again when this took its uid back under its share, else null.
   */
  replying(conn: Conn, bytes: number, fds: number): Conn[] | null {
    if (bytes === conn.heldBytes && fds === conn.heldFds) return null;
    const uid = conn.peer?.uid;
    const dBytes = bytes - conn.heldBytes;
    const dFds = fds - conn.heldFds;
    conn.heldBytes = bytes;
    conn.heldFds = fds;
    if (uid === undefined) return null;
    add(this.#replyBytes, uid, dBytes);
    add(this.#replyFds, uid, dFds);
    const waiting = this.#throttled.get(uid);
    if (waiting === undefined || this.#overReplies(uid) !== null) return null;
    this.#throttled.delete(uid);
    for (const c of waiting) c.throttled = false;
    return [...waiting];
  }

  /**
   * May a new request be read from `conn`? False (and the connection is remembered, to be
   * handed back by {@link FairShares.replying}) while its uid holds its whole reply share.
   */
  mayRead(conn: Conn): boolean {
    const uid = conn.peer?.uid;
    if (uid === undefined || this.#overReplies(uid) === null) return true;
    let set = this.#throttled.get(uid);
    if (set === undefined) this.#throttled.set(uid, set = new Set());
    set.add(conn);
    conn.throttled = true;
    return false;
  }

  /** The limit `uid` is at ("peerLimits.replyBytes" or "peerLimits.replyFds"), or null. */
  #overReplies(uid: number): string | null {
    const share = this.#share(uid);
    if (share === null) return null;
    if (this.replyBytesOf(uid) >= share.replyBytes) return "peerLimits.replyBytes";
    if (this.replyFdsOf(uid) >= share.replyFds) return "peerLimits.replyFds";
    return null;
  }

  /**
   * Would one more object of `size` bytes, charged `cost` metadata bytes, take `uid` past its
   * store share? The refusal text, or null (also for an unknown uid).
   */
  storing(uid: number | undefined, size: number, cost = 0): string | null {
    if (uid === undefined) return null;
    const share = this.#share(uid);
    if (share === null) return null;
    const metadata = this.#governor.uidMetadata(uid);
    return storeShareProblem(uid, share, { ...this.#governor.uidUsage(uid), size, metadata, cost });
  }
}

/** The tighter of two limits per field (the governor's uid quota and the fair share both hold). */
function tighter(a: QuotaLimits | null, b: QuotaLimits | null): QuotaLimits | null {
  if (a === null) return b;
  if (b === null) return a;
  const min = (x: bigint | null, y: bigint | null): bigint | null =>
    x === null ? y : y === null ? x : x < y ? x : y;
  return { objects: min(a.objects, b.objects), bytes: min(a.bytes, b.bytes) };
}

/** Add `delta` to `uid`'s count, forgetting it at zero. */
function add(m: Map<number, number>, uid: number, delta: number): void {
  if (delta === 0) return;
  const n = (m.get(uid) ?? 0) + delta;
  if (n > 0) m.set(uid, n);
  else m.delete(uid);
}

/** A job id for a refusal text: at most 64 bytes. */
function shortJob(job: string): string {
  return job.length > 64 ? `${job.slice(0, 64)}...` : job;
}
