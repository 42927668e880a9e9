/**
 * Numbers a metrics module can read without touching the broker's internals: requests by
 * operation and result (one count per audit record, written or not), connections accepted and
 * refused, and live gauges (open connections, parked waits, digests queued for Workers).
 *
 * Counting is a few integer increments on objects built once, so the request path does not
 * allocate for it.
 *
 * @module
 */

import type { AuditOp, AuditRecord, AuditResult } from "../core/audit.ts";

const OPS: readonly AuditOp[] = [
  "put",
  "get",
  "list",
  "drop",
  "stat",
  "recover",
  "takeover",
  "release",
  "evict",
  "watch",
  "usage",
  "unknown",
];
const RESULTS: readonly AuditResult[] = ["ok", "bad_request", "not_found", "forbidden", "error"];

/** Requests by operation, then by result. */
export type RequestCounts = Record<AuditOp, Record<AuditResult, number>>;

/** The live values {@link BrokerCounters} reads from the parts that own them. */
export interface Gauges {
  /** Connections open now (including lingering and parked ones). */
  connections(): number;
  /** GET --wait requests parked now. */
  parkedWaits(): number;
  /** Digests handed to Workers and not answered yet. */
  hashQueue(): number;
  /** Watch streams open now. */
  watchers?(): number;
}

/** A point-in-time copy of the counters. */
export interface CounterSnapshot {
  /** Requests by operation and result. */
  readonly requests: RequestCounts;
  /** Connections accepted since start. */
  readonly accepted: number;
  /** Connections refused at the door (client quota, descriptor limit). */
  readonly refused: number;
  /** Connections open now. */
  readonly connections: number;
  /** Parked waits now. */
  readonly parkedWaits: number;
  /** Digests queued for Workers now. */
  readonly hashQueue: number;
  /** Watch streams open now. */
  readonly watchers: number;
  /** Objects the broker released on its own, by reason (retention, or the limit that evicted). */
  readonly releases: Readonly<Record<string, number>>;
  /** PUTs stored on the memfd of identical content. */
  readonly dedupHits: number;
  /** Watch events slow watchers did not receive one by one. */
  readonly watchLost: number;
  /** Audit records dropped since start because the audit output stalled. */
  readonly auditDropped: number;
  /** Audit records not written since start because their uid exceeded its audit budget. */
  readonly auditUidDropped: number;
}

function zeroCounts(): RequestCounts {
  const out = {} as RequestCounts;
  for (const op of OPS) {
    const row = {} as Record<AuditResult, number>;
    for (const r of RESULTS) row[r] = 0;
    out[op] = row;
  }
  return out;
}

/** The broker's counters. */
export class BrokerCounters {
  /** Requests by operation and result, counted as their audit record is made. */
  readonly requests: RequestCounts = zeroCounts();
  /** Connections accepted since start. */
  accepted = 0;
  /** Connections refused at the door. */
  refused = 0;
  /** Objects released by the broker on its own, by reason. */
  readonly releases: Record<string, number> = {};
  /** PUTs stored on the memfd of identical content. */
  dedupHits = 0;
  /** Watch events slow watchers lost. */
  watchLost = 0;
  /** Audit records dropped because the audit output did not keep up (see `audit_sink.ts`). */
  auditDropped = 0;
  /** Audit records not written because their uid exceeded its budget (`audit_budget.ts`). */
  auditUidDropped = 0;
  #gauges: Gauges | null = null;

  /** Connect the live gauges (the facade does, once its parts exist). */
  attach(gauges: Gauges): void {
    this.#gauges = gauges;
  }

  /** Count one audit record. */
  count(rec: AuditRecord): void {
    this.requests[rec.op][rec.result]++;
  }

  /** Count an object released by retention or evicted, by its reason. */
  released(reason: string): void {
    this.releases[reason] = (this.releases[reason] ?? 0) + 1;
  }

  /** A copy of every counter and gauge. */
  snapshot(): CounterSnapshot {
    const requests = zeroCounts();
    for (const op of OPS) Object.assign(requests[op], this.requests[op]);
    const g = this.#gauges;
    return {
      requests,
      accepted: this.accepted,
      refused: this.refused,
      auditDropped: this.auditDropped,
      auditUidDropped: this.auditUidDropped,
      connections: g?.connections() ?? 0,
      parkedWaits: g?.parkedWaits() ?? 0,
      hashQueue: g?.hashQueue() ?? 0,
      watchers: g?.watchers?.() ?? 0,
      releases: { ...this.releases },
      dedupHits: this.dedupHits,
      watchLost: this.watchLost,
    };
  }
}
