/**
 * The per-job access policy of protocol v1. Pure functions of an object's owner and allowed job
 * and the caller's job (null for an unscoped caller).
 *
 * @module
 */

/** The policy-relevant part of a stored object. */
export interface Owned {
  /** The publishing job, or null for an unowned object. */
  readonly owner: string | null;
  /** The one other job that may read it, or null. */
  readonly allowed: string | null;
}

/**
 * May `caller` see (GET, LIST, exec) the object? Yes when the caller is unscoped, the object is
 * unowned, or the caller is its owner or its allowed job.
 */
export function visible(obj: Owned, caller: string | null): boolean {
  return caller === null || obj.owner === null || obj.owner === caller || obj.allowed === caller;
}

/**
 * May `caller` drop the object? Yes when it is unowned, the caller is unscoped, or the caller
 * owns it. The allowed job cannot drop.
 */
export function droppable(obj: Owned, caller: string | null): boolean {
  return obj.owner === null || caller === null || obj.owner === caller;
}

/**
 * Which peers may claim a job id: any listed uid or any listed gid.
 *
 * @example
 * ```ts
 * import type { JobBinding } from "@memfdbus/memfdbus";
 * const trainer: JobBinding = { uids: [1001], gids: [] }; // only uid 1001 may say "trainer"
 * console.log(trainer.uids);
 * ```
 */
export interface JobBinding {
  /** User ids allowed to claim the job. */
  readonly uids: readonly number[];
  /** Group ids allowed to claim the job. */
  readonly gids: readonly number[];
}

/**
 * Identity rules beyond protocol v1, all off by default: job ids bound to kernel-reported
 * credentials, a job required on every request, and names reserved for their first publisher.
 *
 * @example A broker whose "trainer" job only uid 1001 may claim
 * ```ts
 * import { Broker, type IdentityPolicy } from "@memfdbus/memfdbus";
 * const policy: IdentityPolicy = {
 *   requireJob: false,
 *   protectNames: true,
 *   jobs: new Map([["trainer", { uids: [1001], gids: [] }]]),
 * };
 * const dir = Deno.makeTempDirSync();
 * const broker = await Broker.start({ socket: `${dir}/bus.sock`, policy, audit: null });
 * await broker.close();
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export interface IdentityPolicy {
  /** Refuse requests that carry no job id. */
  readonly requireJob: boolean;
  /**
   * Job id (binary string) to the credentials allowed to claim it. Whether jobs not listed here
   * may be claimed is `unlistedJobs`.
   */
  readonly jobs: ReadonlyMap<string, JobBinding>;
  /** Once a job has published under a name, only that job may publish newer versions. */
  readonly protectNames: boolean;
  /**
   * May a peer claim a job id that `jobs` does not list? `"allow"`: anyone may (protocol v1);
   * `"deny"`: nobody may. Unset: `"deny"` as soon as `jobs` binds any job, `"allow"` when it binds
   * none (see {@link unlistedJobsRule}).
   */
  readonly unlistedJobs?: "allow" | "deny";
  /**
   * Names and name prefixes reserved for a job whatever versions exist (the policy file's
   * `reserve`): only that job may publish under them.
   */
  readonly reserve?: readonly Reservation[];
}

/**
 * A name, or a name prefix, that only one job may publish under.
 *
 * @example `"model/": "trainer"` in the policy file
 * ```ts
 * import type { Reservation } from "@memfdbus/memfdbus";
 * const r: Reservation = { pattern: "model/", prefix: true, job: "trainer", source: "model/" };
 * console.log(r.job);
 * ```
 */
export interface Reservation {
  /** The name, or the prefix without its trailing `*` (binary string of UTF-8 bytes). */
  readonly pattern: string;
  /** Whether every name starting with `pattern` is reserved (`/` or `*` at the end). */
  readonly prefix: boolean;
  /** The job allowed to publish (binary string). */
  readonly job: string;
  /** The key as written in the policy (binary string), for refusal texts. */
  readonly source: string;
}

/**
 * The policy of protocol v1: nothing beyond the claimed job id.
 *
 * @example Starting from it
 * ```ts
 * import { type IdentityPolicy, OPEN_POLICY } from "@memfdbus/memfdbus";
 * const strict: IdentityPolicy = { ...OPEN_POLICY, requireJob: true };
 * console.log(OPEN_POLICY.requireJob, strict.requireJob); // false true
 * ```
 */
export const OPEN_POLICY: IdentityPolicy = {
  requireJob: false,
  jobs: new Map(),
  protectNames: false,
};

/** The texts of identity refusals (status 4, FORBIDDEN). */
export const PolicyText = {
  jobRequired: "job id required by broker policy",
  jobNotPermitted: "job id not permitted for this peer",
  nameOwned: "object name is owned by another job",
} as const;

/**
 * The refusal text of a PUT under a reserved name (status 4, FORBIDDEN). Reservation keys and jobs
 * come from the policy file and obey the name rule, so the text prints safely.
 *
 * @example
 * ```ts
 * import { reservedText } from "@memfdbus/memfdbus";
 * console.log(reservedText({ pattern: "model/", prefix: true, job: "trainer", source: "model/" }));
 * // object name is reserved for job trainer (policy reserve "model/")
 * ```
 */
export function reservedText(r: Reservation): string {
  return `object name is reserved for job ${r.job} (policy reserve "${r.source}")`;
}

/**
 * The effective rule for job ids that `policy.jobs` does not list: the explicit setting, else
 * `"deny"` when the policy binds any job and `"allow"` when it binds none (an empty or absent
 * policy is fully open, as in the C tool).
 */
export function unlistedJobsRule(policy: IdentityPolicy): "allow" | "deny" {
  return policy.unlistedJobs ?? (policy.jobs.size > 0 ? "deny" : "allow");
}

/**
 * The reservation that governs `name` (binary string): an exact name beats any prefix, and the
 * longest matching prefix wins; undefined when none matches.
 */
export function reservationOf(
  reserve: readonly Reservation[] | undefined,
  name: string,
): Reservation | undefined {
  let best: Reservation | undefined;
  for (const r of reserve ?? []) {
    if (!r.prefix) {
      if (r.pattern === name) return r;
    } else if (
      name.startsWith(r.pattern) && (best === undefined || r.pattern.length > best.pattern.length)
    ) {
      best = r;
    }
  }
  return best;
}

/**
 * Check a publish of `name` by `publisher` (null: unscoped) against the policy's reservations,
 * whatever versions are stored. Returns the refusal text, or null when the name is free or
 * reserved for the publisher.
 */
export function checkReservation(
  policy: IdentityPolicy,
  name: string,
  publisher: string | null,
): string | null {
  const r = reservationOf(policy.reserve, name);
  return r === undefined || r.job === publisher ? null : reservedText(r);
}

/** A peer's identity as the kernel reports it (SO_PEERCRED). */
export interface PeerIdentity {
  /** User id. */
  readonly uid: number;
  /** Group id. */
  readonly gid: number;
}

/**
 * Check a caller's claimed job against the policy. Returns the refusal text, or null when the
 * claim is acceptable. A bound job needs a peer whose uid or gid is listed; without known
 * credentials a bound job is refused. A job the policy does not list follows
 * {@link unlistedJobsRule}.
 */
export function checkJobClaim(
  policy: IdentityPolicy,
  job: string | null,
  peer: PeerIdentity | undefined,
): string | null {
  if (job === null) return policy.requireJob ? PolicyText.jobRequired : null;
  const binding = policy.jobs.get(job);
  if (binding === undefined) {
    return unlistedJobsRule(policy) === "allow" ? null : PolicyText.jobNotPermitted;
  }
  if (peer !== undefined && (binding.uids.includes(peer.uid) || binding.gids.includes(peer.gid))) {
    return null;
  }
  return PolicyText.jobNotPermitted;
}

/**
 * With name protection: may `publisher` add a version under a name whose oldest stored version
 * is owned by `nameOwner` (undefined: no version stored)? An unowned name stays open.
 */
export function mayPublishName(
  policy: IdentityPolicy,
  nameOwner: string | null | undefined,
  publisher: string | null,
): boolean {
  if (!policy.protectNames || nameOwner === undefined || nameOwner === null) return true;
  return nameOwner === publisher;
}
