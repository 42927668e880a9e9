/**
 * The broker's metrics, read from the numbers its parts already keep: {@link BrokerCounters}
 * (requests by operation and result, releases by reason, dedup hits, lost watch events, audit
 * lines dropped when the audit sink counts them, and the live gauges) and the {@link Governor}
 * (what each job holds). Counters are brought up to date when scraped, so the request path only
 * increments integers; the latency histogram is fed by the session as replies go out.
 *
 * With `--cluster`, the `memfdbus_cluster_*` families read the cluster bridge's counters (upload
 * queue depth and overflows, uploads, pulls, the connection); this module only knows their
 * shape ({@link ClusterCounts}), so a broker without `--cluster` still loads nothing of NATS.
 *
 * @module
 */

import type { Governor } from "../core/governance.ts";
import type { Store } from "../core/store.ts";
import { fromBinary, fromUtf8 } from "../protocol/bytes.ts";
import type { BrokerCounters } from "./counters.ts";
import { BrokerMetrics, type Counter, type Labels } from "./metrics.ts";

/** The cluster tier's counters, as `ClusterBridge` exposes them (see `src/cluster/tier.ts`). */
export interface ClusterCounts {
  /** True while connected to the engine. */
  readonly connected: boolean;
  /** The tier's counters. */
  readonly stats: {
    /** Objects waiting for upload. */
    readonly queueEntries: number;
    /** Bytes waiting for upload. */
    readonly queueBytes: number;
    /** Objects refused by a full upload queue (kept on this host only). */
    readonly overflows: number;
    /** Blobs uploaded. */
    readonly uploads: number;
    /** Bytes uploaded. */
    readonly uploadedBytes: number;
    /** Publishes whose blob the engine already had. */
    readonly dedupHits: number;
    /** Blobs pulled into memfds. */
    readonly pulls: number;
    /** Bytes pulled. */
    readonly pulledBytes: number;
  };
}

/** What the broker's metrics read. */
export interface ObservedParts {
  readonly store: Store;
  readonly governor: Governor;
  readonly counters: BrokerCounters;
  /**
   * With `--cluster`: the cluster bridge, or null while it is not open yet. Without it, no
   * `memfdbus_cluster_*` family is registered.
   */
  readonly cluster?: () => ClusterCounts | null;
}

/** The `memfdbus_cluster_*` counter families, by the stats field they follow. */
const CLUSTER_COUNTERS = [
  [
    "overflows",
    "memfdbus_cluster_queue_overflows_total",
    "Objects a full upload queue refused (kept on this host only).",
  ],
  ["uploads", "memfdbus_cluster_uploads_total", "Blobs uploaded to the cluster's object store."],
  [
    "uploadedBytes",
    "memfdbus_cluster_uploaded_bytes_total",
    "Bytes uploaded to the cluster's object store.",
  ],
  [
    "dedupHits",
    "memfdbus_cluster_dedup_hits_total",
    "Publishes whose blob the cluster already had (no upload).",
  ],
  ["pulls", "memfdbus_cluster_pulls_total", "Blobs pulled from the cluster into sealed memfds."],
  [
    "pulledBytes",
    "memfdbus_cluster_pulled_bytes_total",
    "Bytes pulled from the cluster into sealed memfds.",
  ],
] as const;

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
  readonly #cluster: (() => ClusterCounts | null) | undefined;
  readonly #clusterCounters: [keyof ClusterCounts["stats"], Counter][] = [];

  constructor(p: ObservedParts) {
    const { store, governor, counters } = p;
    super({
      objects: () => store.count,
      storedBytes: () => store.totalBytes,
      uniqueBytes: () => store.uniqueBytes,
      metadataBytes: () => store.metadataBytes,
      maxMetadataBytes: () => {
        const max = store.maxMetadataBytes;
        return max === null ? null : Number(max);
      },
      connections: () => counters.snapshot().connections,
      parkedWaits: () => counters.snapshot().parkedWaits,
      watchers: () => counters.snapshot().watchers,
      hashQueueDepth: () => counters.snapshot().hashQueue,
      jobs: () => [...governor.jobs()].map(([job, u]) => [fromUtf8(fromBinary(job)), u] as const),
    });
    this.#counters = counters;
    const cluster = this.#cluster = p.cluster;
    if (cluster === undefined) return;
    const r = this.registry;
    const stat = (key: keyof ClusterCounts["stats"]) => (): number => cluster()?.stats[key] ?? 0;
    r.gauge(
      "memfdbus_cluster_connected",
      "1 while the broker is connected to the cluster engine, else 0.",
      () => (cluster()?.connected === true ? 1 : 0),
    );
    r.gauge(
      "memfdbus_cluster_queue_objects",
      "Objects waiting for upload to the cluster.",
      stat("queueEntries"),
    );
    r.gauge(
      "memfdbus_cluster_queue_bytes",
      "Bytes of objects waiting for upload to the cluster.",
      stat("queueBytes"),
    );
    for (const [key, name, help] of CLUSTER_COUNTERS) {
      this.#clusterCounters.push([key, r.counter(name, help)]);
    }
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
    syncTo(this.auditUidDropped, {}, snap.auditUidDropped);
    const stats = this.#cluster?.()?.stats;
    for (const [key, counter] of this.#clusterCounters) syncTo(counter, {}, stats?.[key] ?? 0);
    return super.render();
  }
}

/** The broker's metrics over its parts. */
export function brokerMetrics(parts: ObservedParts): BrokerMetrics {
  return new ObservedMetrics(parts);
}
