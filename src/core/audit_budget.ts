/**
 * The per-uid audit budget: a token bucket of audit bytes per peer uid, so that one local user
 * cannot fill the disk through the audit log (one kept-alive connection sending GETs of missing
 * 64 KiB names wrote about 26 MiB of records a second). Pure: the broker passes the time in (the
 * event loop's one `performance.now()` reading per turn, in ms) and the byte length of each
 * record; this module decides.
 *
 * Each uid that is not exempt (root and the broker's own uid, as for the fair shares in
 * `fair_shares.ts`) has a bucket that holds at most `burst` bytes and refills at `rate` bytes a
 * second (`--audit-uid-rate`, config `auditUidRate`, 1 MiB/s by default; `--audit-uid-burst`,
 * config `auditUidBurst`, {@link AUDIT_BURST_FACTOR} times the rate by default). A record is
 * written when the bucket holds its length (or, for a record longer than the whole burst, when
 * the bucket is full: it then runs into debt that the rate pays back first), and its length is
 * taken from the bucket. Otherwise the record is dropped and counted for its uid.
 *
 * Dropped records are summed up in one summary record per uid, written before that uid's next
 * record that fits, and at most once a second per uid (drops go on being summed in between); the
 * broker's periodic sweep writes the summaries of uids that went quiet (the broker keeps sweeping
 * while any are owed, see {@link AuditBudget.owing}), and a stopping broker writes every summary
 * still owed. Summary records are not charged to the bucket (at most one a
 * second per uid).
 *
 * Over a long run, the bytes written for one uid in `t` seconds are at most
 * `burst + rate × t`, plus one record longer than the burst, plus the summaries.
 *
 * @module
 */

import type { AuditPeer } from "./audit.ts";

/** Default of `--audit-uid-rate`: 1 MiB of audit records a second per uid. */
export const DEFAULT_AUDIT_UID_RATE = 1 << 20;

/** The default burst is this many seconds of the rate (16 MiB at the default rate). */
export const AUDIT_BURST_FACTOR = 16;

/** The least time between two summary records of one uid (ms). */
export const SUMMARY_INTERVAL_MS = 1000;

/** The burst of a rate when none is configured: {@link AUDIT_BURST_FACTOR} times the rate. */
export function defaultAuditBurst(rate: number): number {
  return Math.min(Number.MAX_SAFE_INTEGER, rate * AUDIT_BURST_FACTOR);
}

/** How the budget is configured. */
export interface AuditBudgetRules {
  /** Bytes of audit records a second per uid. */
  readonly rate: number;
  /** Most bytes a uid may have written at once after a quiet spell. */
  readonly burst: number;
  /** Uids without a budget (root and the broker's own). */
  readonly exempt: readonly number[];
}

/** What {@link AuditBudget.charge} decides about one record. */
export const Charge = {
  /** Over the uid's budget: do not write it (it is counted). */
  DROP: 0,
  /** Write it. */
  WRITE: 1,
  /** Write the uid's summary ({@link AuditBudget.takeSummary}) first, then the record. */
  SUMMARY_FIRST: 2,
} as const;

/** One of {@link Charge}. */
export type ChargeResult = typeof Charge[keyof typeof Charge];

/** Records of one uid that were not written, for its summary record. */
export interface DroppedSummary {
  /** The uid over its budget. */
  readonly uid: number;
  /** Records dropped since its last summary. */
  readonly records: number;
  /** Their bytes. */
  readonly bytes: number;
  /** The peer of the uid's last charged record (for `--audit-peer`), if any. */
  readonly peer: AuditPeer | undefined;
}

/** One uid's bucket. */
class Bucket {
  tokens: number;
  at: number;
  dropped = 0;
  droppedBytes = 0;
  lastSummary = -Infinity;
  /** The last peer charged (kept by reference, for the summary's peer fields). */
  peer: AuditPeer | undefined = undefined;

  constructor(tokens: number, at: number) {
    this.tokens = tokens;
    this.at = at;
  }
}

/**
 * The audit budget of every uid.
 *
 * @example A 1 KiB/s budget with a 2 KiB burst
 * ```ts
 * import { AuditBudget, Charge } from "./audit_budget.ts";
 * const budget = new AuditBudget({ rate: 1024, burst: 2048, exempt: [0] });
 * console.log(budget.charge(1000, 2000, 0) === Charge.WRITE); // true: the burst
 * console.log(budget.charge(1000, 1000, 100) === Charge.DROP); // true: 148 bytes left
 * console.log(budget.charge(1000, 1000, 1200) === Charge.SUMMARY_FIRST); // true
 * console.log(budget.takeSummary(1000)?.records); // 1
 * ```
 */
export class AuditBudget {
  readonly #rate: number;
  readonly #burst: number;
  readonly #exempt0: number;
  readonly #exempt: readonly number[];
  readonly #buckets = new Map<number, Bucket>();
  /** Uids with drops not yet summed up in a summary. */
  #owing = 0;

  /**
   * @param rules rate, burst and exempt uids
   */
  constructor(rules: AuditBudgetRules) {
    this.#rate = rules.rate;
    this.#burst = rules.burst;
    this.#exempt = rules.exempt;
    this.#exempt0 = rules.exempt[0] ?? -1;
  }

  /** The rate, in bytes a second. */
  get rate(): number {
    return this.#rate;
  }

  /** The burst, in bytes. */
  get burst(): number {
    return this.#burst;
  }

  /** True for a uid without a budget. */
  exempt(uid: number): boolean {
    return uid === this.#exempt0 || this.#exempt.includes(uid);
  }

  #refill(b: Bucket, now: number): void {
    const elapsed = now - b.at;
    if (elapsed > 0) {
      b.tokens = Math.min(this.#burst, b.tokens + elapsed * this.#rate / 1000);
      b.at = now;
    }
  }

  /**
   * Charge a record of `bytes` bytes to `uid` at `now` (ms, a monotonic clock): whether to write
   * it, and whether a summary of earlier drops goes first. Exempt uids are not asked here.
   *
   * @param uid the peer's uid
   * @param bytes the record's length in bytes
   * @param now the time in ms
   * @param peer the record's peer, kept for the summary's peer fields
   */
  charge(uid: number, bytes: number, now: number, peer?: AuditPeer): ChargeResult {
    let b = this.#buckets.get(uid);
    if (b === undefined) {
      b = new Bucket(this.#burst, now);
      this.#buckets.set(uid, b);
    } else this.#refill(b, now);
    b.peer = peer;
    if (b.tokens < bytes && b.tokens < this.#burst) {
      if (b.dropped === 0) this.#owing++;
      b.dropped++;
      b.droppedBytes += bytes;
      return Charge.DROP;
    }
    b.tokens -= bytes;
    if (b.dropped > 0 && now - b.lastSummary >= SUMMARY_INTERVAL_MS) {
      b.lastSummary = now;
      return Charge.SUMMARY_FIRST;
    }
    return Charge.WRITE;
  }

  /** The drops of `uid` to write in its summary record (and forget), or null for none. */
  takeSummary(uid: number): DroppedSummary | null {
    const b = this.#buckets.get(uid);
    if (b === undefined || b.dropped === 0) return null;
    const out = { uid, records: b.dropped, bytes: b.droppedBytes, peer: b.peer };
    this.#owing--;
    b.dropped = 0;
    b.droppedBytes = 0;
    return out;
  }

  /**
   * At the broker's sweep: the summaries owed by uids whose budget allows again (the bucket is
   * not in debt) and whose last summary is at least a second old; or, with `all` (the broker
   * stops), every summary owed. Buckets that are full again and owe nothing are forgotten.
   *
   * @param now the time in ms
   * @param all every summary owed, whatever the budget and the interval
   */
  sweep(now: number, all = false): DroppedSummary[] {
    const out: DroppedSummary[] = [];
    for (const [uid, b] of this.#buckets) {
      this.#refill(b, now);
      const due = all || (b.tokens > 0 && now - b.lastSummary >= SUMMARY_INTERVAL_MS);
      if (b.dropped > 0 && due) {
        b.lastSummary = now;
        const s = this.takeSummary(uid);
        if (s !== null) out.push(s);
      }
      if (
        b.dropped === 0 && b.tokens >= this.#burst && now - b.lastSummary >= SUMMARY_INTERVAL_MS
      ) {
        this.#buckets.delete(uid);
      }
    }
    return out;
  }

  /**
   * Uids whose dropped records are not summed up yet: while there are any, the broker keeps
   * sweeping (it does not sleep without a timeout) so that their summaries are written.
   */
  get owing(): number {
    return this.#owing;
  }

  /** Uids with a bucket now (for tests). */
  get size(): number {
    return this.#buckets.size;
  }
}

/** A byte rate as the summary says it: `1 MiB/s`, `64 KiB/s` or `1000 B/s`. */
export function rateText(rate: number): string {
  if (rate >= 1 << 30 && rate % (1 << 30) === 0) return `${rate / (1 << 30)} GiB/s`;
  if (rate >= 1 << 20 && rate % (1 << 20) === 0) return `${rate / (1 << 20)} MiB/s`;
  if (rate >= 1024 && rate % 1024 === 0) return `${rate / 1024} KiB/s`;
  return `${rate} B/s`;
}

/**
 * The error text of a summary record, also the stderr report's:
 * `uid 65534 exceeded its audit share (1 MiB/s): 2570 records dropped`.
 */
export function droppedText(s: DroppedSummary, rate: number): string {
  return `uid ${s.uid} exceeded its audit share (${rateText(rate)}): ${s.records} records dropped`;
}
