/**
 * Governance rules for the pure governance tests: nothing limited unless the test says so.
 */

import { type GovernanceRules, NO_QUOTAS } from "../../src/core/governance.ts";

const U64_MAX = 18446744073709551615n;

/**
 * Rules with no retention, no quotas, no eviction, dedup on and no broker-wide limits, then
 * `extra` over them.
 *
 * @param extra the rules a test sets
 */
export function openRules(extra: Partial<GovernanceRules> = {}): GovernanceRules {
  return {
    keepVersions: null,
    retention: [],
    quotas: NO_QUOTAS,
    evict: "none",
    dedup: true,
    maxObjects: U64_MAX,
    maxTotalBytes: U64_MAX,
    ...extra,
  };
}
