/**
 * What a USAGE request is answered with, and who sees what. Pure: the broker passes its
 * governor, store and the caller's identity.
 *
 * Visibility:
 * - the broker's totals (objects, unique bytes, metadata bytes, --max-objects,
 *   --max-total-bytes, --max-metadata-bytes): everyone;
 * - jobs: a caller with a job sees that job only (its usage and quota, even when it holds
 *   nothing); a caller without a job sees every job that holds something or has a quota, as an
 *   unscoped LIST shows every object;
 * - uids: the operator (root or the broker's own uid, asking without a job) sees every uid that
 *   holds something or has an entry in `quotas.uids`; anyone else sees only their own uid.
 *
 * @module
 */

import type { Governor, QuotaLimits } from "./governance.ts";
import type { Store } from "./store.ts";
import type { JobUsageEntry, UidUsageEntry, UsageReport } from "../protocol/usage.ts";

/** The largest limit, which means none. */
const NO_LIMIT = 18446744073709551615n;

/** Who asks. */
export interface UsageViewer {
  /** The job the caller claims (already checked against the policy), or null. */
  readonly caller: string | null;
  /** The caller's uid (SO_PEERCRED), when known. */
  readonly uid: number | undefined;
  /** True for root and the broker's own uid. */
  readonly operator: boolean;
}

/**
 * The USAGE report for `viewer`.
 *
 * @param governor the per-job and per-uid accounting and the rules
 * @param store the broker's store (its totals)
 * @param viewer who asks
 * @param uidQuota the store limit in force for a uid (its quota or fair share), or null
 * @param uidMetadataLimit the metadata limit in force for a uid (its share), or null for none;
 *   absent: uid entries carry no metadata keys
 */
export function usageReport(
  governor: Governor,
  store: Store,
  viewer: UsageViewer,
  uidQuota: (uid: number) => QuotaLimits | null,
  uidMetadataLimit?: (uid: number) => bigint | null,
): UsageReport {
  const rules = governor.rules;
  const limit = (v: bigint | null | undefined): bigint | null =>
    v === null || v === undefined || v >= NO_LIMIT ? null : v;
  const jobNames = viewer.caller !== null
    ? [viewer.caller]
    : [...new Set([...[...governor.jobs()].map(([j]) => j), ...rules.quotas.jobs.keys()])]
      .sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const jobs = jobNames.map((job): JobUsageEntry => {
    const q = rules.quotas.jobs.get(job);
    return {
      job,
      ...governor.jobUsage(job),
      maxObjects: limit(q?.objects),
      maxBytes: limit(q?.bytes),
    };
  });
  const all = viewer.operator && viewer.caller === null;
  const uidList = all
    ? [...new Set([...[...governor.uids()].map(([u]) => u), ...rules.quotas.uids.keys()])]
      .sort((a, b) => a - b)
    : viewer.uid === undefined
    ? []
    : [viewer.uid];
  const uids = uidList.map((uid): UidUsageEntry => {
    const q = uidQuota(uid);
    return {
      uid,
      ...governor.uidUsage(uid),
      maxObjects: limit(q?.objects),
      maxBytes: limit(q?.bytes),
      ...(uidMetadataLimit === undefined ? {} : {
        metadataBytes: governor.uidMetadata(uid),
        maxMetadataBytes: limit(uidMetadataLimit(uid)),
      }),
    };
  });
  return {
    scope: all ? "all" : "own",
    broker: {
      objects: store.count,
      bytes: store.uniqueBytes,
      maxObjects: limit(rules.maxObjects),
      maxBytes: limit(rules.maxTotalBytes),
      metadataBytes: store.metadataBytes,
      maxMetadataBytes: limit(store.maxMetadataBytes),
    },
    jobs,
    uids,
  };
}
