/**
 * The broker's metrics, read from the numbers its parts already keep: {@link BrokerCounters}
 * (requests by operation and result, releases by reason, dedup hits, lost watch events, audit
 * lines dropped when the audit sink counts them, and the live gauges) and the {@link Governor}
 * (what each job holds). Counters are brought up to date when scraped, so the request path only
 * increments integers; the latency histogram is fed by the session as replies go out.
 *
 * @module
 */

import type { Governor } from "../core/governance.ts";
import type { Store } from "../core/store.ts";
import { fromBinary, fromUtf8 } from "../protocol/bytes.ts";
import type { BrokerCounters } from "./counters.ts";
import { BrokerMetrics, type Counter, type Labels } from "./metrics.ts";

/** What the broker's metrics read. */
export interface ObservedParts {
  readonly store: Store;
  readonly governor: Governor;
  readonly counters: BrokerCounters;
}

/** Ops that are the broker's own doing, not requests: counted as releases, not requests. */
const NOT_REQUESTS = new Set(["release", "evict"]);

/** Raise a counter to `value` (counters only grow; the source is monotonic). */
function syncTo(counter: Counter, labels: Labels, value: number): void {
  const now = counter.get(labels);
  if (value > now || now === 0) counter.inc(labels, value - now);
}

/** {@link BrokerMetrics} whose counters follow the broker's {@link BrokerCounters}. */
class ObservedMetrics extends BrokerMetrics {
  readonly #counters: BrokerCounters;

  constructor(p: ObservedParts) {
    const { store, governor, counters } = p;
    super({
      objects: () => store.count,
      storedBytes: () => store.totalBytes,
      uniqueBytes: () => store.uniqueBytes,
      connections: () => counters.snapshot().connections,
      parkedWaits: () => counters.snapshot().parkedWaits,
      watchers: () => counters.snapshot().watchers,
      hashQueueDepth: () => counters.snapshot().hashQueue,
      jobs: () => [...governor.jobs()].map(([job, u]) => [fromUtf8(fromBinary(job)), u] as const),
    });
    this.#counters = counters;
  }

  override render(): string {
    const snap = this.#counters.snapshot();
    for (const [op, row] of Object.entries(snap.requests)) {
      if (NOT_REQUESTS.has(op)) continue;
      for (const [result, n] of Object.entries(row)) {
        if (n > 0) syncTo(this.requests, { op, result }, n);
      }
    }
    for (const [reason, n] of Object.entries(snap.releases)) {
      syncTo(this.releases, { reason }, n);
    }
    syncTo(this.dedupHits, {}, snap.dedupHits);
    syncTo(this.watchLost, {}, snap.watchLost);
    // The audit sink counts lines it had to drop (when it does).
    const dropped = (this.#counters as unknown as { auditDropped?: unknown }).auditDropped;
    syncTo(this.auditDropped, {}, typeof dropped === "number" ? dropped : 0);
    return super.render();
  }
}

/** The broker's metrics over its parts. */
export function brokerMetrics(parts: ObservedParts): BrokerMetrics {
  return new ObservedMetrics(parts);
}
