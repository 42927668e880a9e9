/**
 * Memory governance: how many versions of a name the broker keeps (retention), how much each
 * job and each peer uid may hold (quotas), which superseded versions go when the broker is full
 * (eviction), and how shared contents are charged (dedup). Pure decisions over a {@link Store};
 * the broker carries them out (closes descriptors, writes audit records, pushes watch events).
 *
 * Order of a PUT, once its digest is verified:
 * 1. {@link Governor.admitPut} decides: refuse (a text naming the quota), or admit with the ids
 *    to release (retention of the new object's name) and to evict (pressure, opt-in).
 * 2. The broker adds the object (on the shared memfd when `sharedFd` is set), then removes the
 *    released and evicted objects, calling {@link Governor.removed} for each, and
 *    {@link Governor.added} for the new one.
 *
 * Memory is charged by content: an object that shares its memfd with another costs the broker
 * nothing more, and costs a job or uid nothing more when that job or uid already holds the
 * content. A job or uid is charged the full size of every content it holds, once.
 *
 * @module
 */

import type { StoredObject } from "./store.ts";
import { metadataCost, type Store } from "./store.ts";

/** A limit on what one holder (a job, a uid, the broker) may store; null: unlimited. */
export interface QuotaLimits {
  /** Most bytes (unique content), or null. */
  readonly bytes: bigint | null;
  /** Most objects, or null. */
  readonly objects: bigint | null;
}

/** One retention rule: how many versions of matching names to keep. */
export interface RetentionRule {
  /** The name (binary string) or, when {@link RetentionRule.prefix} is set, the name prefix. */
  readonly pattern: string;
  /** True for a prefix rule (`model/*` in the config), false for an exact name. */
  readonly prefix: boolean;
  /** Versions kept, or null for all of them (exempts matching names from `keepVersions`). */
  readonly keep: number | null;
}

/** A pinned name or name prefix (config `pin`): eviction never releases its versions. */
export interface PinRule {
  /** The name (binary string) or, when {@link PinRule.prefix} is set, the name prefix. */
  readonly pattern: string;
  /** True for a prefix (`model/*` in the config), false for an exact name. */
  readonly prefix: boolean;
}

/** Per-job and per-uid quotas. */
export interface Quotas {
  /** The quota of every uid without an entry in {@link Quotas.uids}, or null for none. */
  readonly perUid: QuotaLimits | null;
  /** Quotas of particular uids. */
  readonly uids: ReadonlyMap<number, QuotaLimits>;
  /** Quotas of particular jobs (binary strings); other jobs have none. */
  readonly jobs: ReadonlyMap<string, QuotaLimits>;
}

/** Everything that governs memory, as the options and config set it. */
export interface GovernanceRules {
  /** Versions of each name kept (--keep-versions), or null for all (the C broker's behaviour). */
  readonly keepVersions: number | null;
  /** Rules per name or prefix; the longest matching pattern wins (an exact name beats any). */
  readonly retention: readonly RetentionRule[];
  /** Per-job and per-uid quotas. */
  readonly quotas: Quotas;
  /** `superseded`: over a limit, release superseded versions instead of refusing (--evict). */
  readonly evict: "none" | "superseded";
  /** Store identical contents (equal verified digests) once. */
  readonly dedup: boolean;
  /**
   * Names and prefixes eviction never releases a version of (config `pin`). Retention is not
   * affected: it is the operator's explicit choice per name (give a pinned prefix the retention
   * `"unlimited"` to keep all of its versions). Absent: nothing is pinned.
   */
  readonly pins?: readonly PinRule[];
  /** Most objects stored (--max-objects). */
  readonly maxObjects: bigint;
  /** Most bytes stored, counted by unique content (--max-total-bytes). */
  readonly maxTotalBytes: bigint;
  /**
   * Most bytes of object metadata held, summed over `metadataCost` (--max-metadata-bytes).
   * Absent: no limit.
   */
  readonly maxMetadataBytes?: bigint;
}

/** No quotas at all. */
export const NO_QUOTAS: Quotas = { perUid: null, uids: new Map(), jobs: new Map() };

/**
 * Longest error text a C client shows whole: its message buffer holds 255 bytes, of which
 * `broker error: ` takes 14.
 */
export const MAX_ERROR_TEXT = 241;

/** Why the broker released an object on its own (never a client's DROP). */
export type ReleaseReason =
  | "retention"
  | "broker_bytes"
  | "broker_objects"
  | "job_bytes"
  | "job_objects"
  | "uid_bytes"
  | "uid_objects";

/** One object the broker is to release, and why. */
export interface Release {
  /** The object. */
  readonly obj: StoredObject;
  /** Retention, or the limit whose pressure evicted it. */
  readonly reason: ReleaseReason;
}

/** What a PUT asks for, as the governor sees it. */
export interface PutRequest {
  /** The object name (binary string). */
  readonly name: string;
  /** Size in bytes. */
  readonly size: number;
  /** The verified digest. */
  readonly digest: string;
  /** The owner job, or null. */
  readonly owner: string | null;
  /** The allowed job, or null (absent: null). */
  readonly allowed?: string | null;
  /** The publisher's uid, or null when the broker did not look it up. */
  readonly uid: number | null;
}

/** An admitted PUT: what to do besides adding the object. */
export interface Admitted {
  /** Always true. */
  readonly ok: true;
  /** Store the object on this existing memfd (close the published one), or -1. */
  readonly sharedFd: number;
  /** Versions of the name that retention releases once the object is added, oldest first. */
  readonly release: readonly Release[];
  /** Superseded versions evicted to make room, least recently fetched first. */
  readonly evict: readonly Release[];
}

/** A refused PUT. */
export interface Refused {
  /** Always false. */
  readonly ok: false;
  /** The limit that refused it. */
  readonly limit: "job" | "uid" | "broker";
  /** The error text for the reply (status 1) and the audit record. */
  readonly text: string;
}

/** The decision on a PUT. */
export type Admission = Admitted | Refused;

/** What one job or uid holds. */
export interface Usage {
  /** Objects held. */
  objects: number;
  /** Bytes of the distinct contents held. */
  bytes: number;
}

/** The texts of refusals and audit reasons. */
export const GovText = {
  /** A broker limit: the C broker's text, kept byte for byte. */
  brokerQuota: "broker object quota exceeded",
} as const;

// Holder accounting: objects, and references per content so shared bytes are charged once.
interface Account {
  objects: number;
  bytes: number;
  refs: Map<number | StoredObject, number>;
}

function contentKey(obj: StoredObject): number | StoredObject {
  return obj.fd >= 0 ? obj.fd : obj;
}

function shortJob(job: string): string {
  // Job ids are up to 256 bytes; the text must fit MAX_ERROR_TEXT.
  let visible = "";
  for (let i = 0; i < job.length; i++) {
    const c = job.charCodeAt(i);
    visible += c < 0x20 || c === 0x7f ? "?" : job[i];
  }
  return visible.length > 48 ? visible.slice(0, 45) + "..." : visible;
}

/** Does the name match a rule? */
function matches(rule: RetentionRule | PinRule, name: string): boolean {
  return rule.prefix ? name.startsWith(rule.pattern) : name === rule.pattern;
}

/**
 * The number of versions of `name` to keep, or null for all: the longest matching rule (an exact
 * name beats every prefix), else `keepVersions`.
 * With rules `model/*: 2` and `model/big/*: 1`, `model/big/a` keeps 1 and `logs/x` keeps
 * `keepVersions`.
 */
export function keepFor(
  rules: readonly RetentionRule[],
  keepVersions: number | null,
  name: string,
): number | null {
  let best: RetentionRule | undefined;
  for (const r of rules) {
    if (!matches(r, name)) continue;
    if (
      best === undefined || (!r.prefix && best.prefix) ||
      (r.prefix === best.prefix && r.pattern.length > best.pattern.length)
    ) {
      best = r;
    }
  }
  return best === undefined ? keepVersions : best.keep;
}

/**
 * Applies {@link GovernanceRules} to a {@link Store}: admission of PUTs, retention, eviction
 * order, and per-job and per-uid usage. The broker tells it about every object added and removed
 * ({@link Governor.added}, {@link Governor.removed}), including objects restored after a restart.
 */
export class Governor {
  readonly #store: Store;
  readonly #jobs = new Map<string, Account>();
  readonly #uids = new Map<number, Account>();
  /** Metadata charges ({@link metadataCost}) per publisher uid. */
  readonly #uidMetadata = new Map<number, number>();
  /** The rules in force. */
  readonly rules: GovernanceRules;

  /**
   * @param rules the rules
   * @param store the broker's store (read only: the broker adds and removes)
   */
  constructor(rules: GovernanceRules, store: Store) {
    this.rules = rules;
    this.#store = store;
    for (const obj of store.values()) this.added(obj);
  }

  /** Is the object pinned by the config (`pin`), so that eviction never releases it? */
  isPinned(obj: StoredObject): boolean {
    const pins = this.rules.pins;
    if (pins === undefined || pins.length === 0) return false;
    return pins.some((r) => matches(r, obj.name));
  }

  /** What a job holds (zero when nothing). */
  jobUsage(job: string): Usage {
    const a = this.#jobs.get(job);
    return { objects: a?.objects ?? 0, bytes: a?.bytes ?? 0 };
  }

  /** What a uid holds (zero when nothing). */
  uidUsage(uid: number): Usage {
    const a = this.#uids.get(uid);
    return { objects: a?.objects ?? 0, bytes: a?.bytes ?? 0 };
  }

  /** The metadata charges ({@link metadataCost}) of the objects a uid published (0: none). */
  uidMetadata(uid: number): number {
    return this.#uidMetadata.get(uid) ?? 0;
  }

  /** Every job holding something, with its usage. */
  jobs(): IterableIterator<[string, Usage]> {
    return this.#jobs.entries();
  }

  /** Every uid holding something, with its usage. */
  uids(): IterableIterator<[number, Usage]> {
    return this.#uids.entries();
  }

  /** The quota of a uid: its own entry, else the per-uid default, else none. */
  uidQuota(uid: number): QuotaLimits | null {
    return this.rules.quotas.uids.get(uid) ?? this.rules.quotas.perUid;
  }

  /** Account for an object the store just took (after {@link Store.add} or a restore). */
  added(obj: StoredObject): void {
    if (obj.owner !== null) charge(this.#jobs, obj.owner, obj);
    if (obj.uid !== undefined) {
      charge(this.#uids, obj.uid, obj);
      this.#uidMetadata.set(obj.uid, this.uidMetadata(obj.uid) + metadataCost(obj));
    }
  }

  /** Account for an object the store just let go (drop, release, eviction). */
  removed(obj: StoredObject): void {
    if (obj.owner !== null) discharge(this.#jobs, obj.owner, obj);
    if (obj.uid !== undefined) {
      discharge(this.#uids, obj.uid, obj);
      const left = this.uidMetadata(obj.uid) - metadataCost(obj);
      if (left > 0) this.#uidMetadata.set(obj.uid, left);
      else this.#uidMetadata.delete(obj.uid);
    }
  }

  /**
   * The versions of `name` that retention releases once one more version is added: the oldest
   * beyond the number kept. Pinned objects are never released (and still count as kept).
   *
   * @param name the name a PUT publishes under
   * @param pinned objects a policy keeps whatever the rules say
   */
  retentionFor(name: string, pinned: (obj: StoredObject) => boolean = () => false): Release[] {
    const keep = keepFor(this.rules.retention, this.rules.keepVersions, name);
    if (keep === null) return [];
    const versions = this.#store.versionsOf(name);
    let excess = versions.length + 1 - keep;
    const out: Release[] = [];
    for (const obj of versions) {
      if (excess <= 0) break;
      if (pinned(obj)) continue;
      out.push({ obj, reason: "retention" });
      excess--;
    }
    return out;
  }

  /**
   * Superseded versions (never the newest of a name, never pinned), least recently fetched
   * first, ties by ascending id. With `name`, the current newest of that name counts as
   * superseded too (the PUT being admitted supersedes it).
   */
  evictionOrder(
    pinned: (obj: StoredObject) => boolean = () => false,
    name?: string,
  ): StoredObject[] {
    const out: StoredObject[] = [];
    for (const [n, versions] of this.#store.names()) {
      const last = n === name ? versions.length : versions.length - 1;
      for (let i = 0; i < last; i++) {
        const obj = versions[i];
        if (obj !== undefined && !pinned(obj)) out.push(obj);
      }
    }
    const store = this.#store;
    return out.sort((a, b) => store.lastFetched(a) - store.lastFetched(b) || a.id - b.id);
  }

  /**
   * Decide on a PUT whose digest the broker verified. Checks, in order: the owner job's quota,
   * the publisher uid's quota, the broker's object and byte limits, then the broker's metadata
   * limit (`maxMetadataBytes`; never relieved by eviction, only by retention). Retention of the name counts
   * as freed room; with `evict: "superseded"` superseded versions are evicted (least recently
   * fetched first) where that makes room, and the PUT is refused only when evicting everything
   * evictable would not. A job's or uid's pressure evicts only its own objects. Objects the
   * config pins ({@link Governor.isPinned}) are never evicted; retention still applies to them.
   *
   * @param put the request
   * @param pinned objects a policy keeps besides the config's pins (kept by retention too)
   */
  admitPut(put: PutRequest, pinned: (obj: StoredObject) => boolean = () => false): Admission {
    const store = this.#store;
    const shared = this.rules.dedup ? store.contentOf(put.digest, put.size, put.uid) : undefined;
    const sharedFd = shared?.fd ?? -1;
    const release = this.retentionFor(put.name, pinned);
    const released = new Set<StoredObject>(release.map((r) => r.obj));
    const gone = new Set<StoredObject>(released);
    const evict: Release[] = [];
    // The eviction order walks and sorts every stored object: built only once a scope is over
    // its quota, not for every PUT (a uid holding many superseded versions made each PUT, anyone's,
    // sort them all while the loop waited).
    let sorted: StoredObject[] | undefined;
    const order = (): readonly StoredObject[] => {
      if (this.rules.evict !== "superseded") return [];
      sorted ??= this.evictionOrder((o) => this.isPinned(o) || pinned(o), put.name)
        .filter((o) => !released.has(o));
      return sorted;
    };

    const scopes: Scope[] = [];
    const jobQuota = put.owner === null ? undefined : this.rules.quotas.jobs.get(put.owner);
    if (put.owner !== null && jobQuota !== undefined) {
      const owner = put.owner;
      scopes.push({
        limit: "job",
        quota: jobQuota,
        account: this.#jobs.get(owner),
        holds: (o) => o.owner === owner,
        reasons: ["job_objects", "job_bytes"],
        text: (what, held, max) =>
          `job quota exceeded: job ${shortJob(owner)} holds ${held} of ${max} ${what}` +
          `${what === "bytes" ? `, this put needs ${put.size}` : ""}; ` +
          `drop old versions or raise quotas.jobs`,
      });
    }
    const uidQuota = put.uid === null ? null : this.uidQuota(put.uid);
    if (put.uid !== null && uidQuota !== null) {
      const uid = put.uid;
      const key = this.rules.quotas.uids.has(uid) ? "quotas.uids" : "quotas.perUid";
      scopes.push({
        limit: "uid",
        quota: uidQuota,
        account: this.#uids.get(uid),
        holds: (o) => o.uid === uid,
        reasons: ["uid_objects", "uid_bytes"],
        text: (what, held, max) =>
          `uid quota exceeded: uid ${uid} holds ${held} of ${max} ${what}` +
          `${what === "bytes" ? `, this put needs ${put.size}` : ""}; ` +
          `drop old versions or raise ${key}`,
      });
    }
    scopes.push({
      limit: "broker",
      quota: { objects: this.rules.maxObjects, bytes: this.rules.maxTotalBytes },
      account: undefined,
      holds: () => true,
      reasons: ["broker_objects", "broker_bytes"],
      text: () => GovText.brokerQuota,
    });

    for (const scope of scopes) {
      const refusal = this.#fit(scope, put, sharedFd, gone, order, evict);
      if (refusal !== null) return { ok: false, limit: scope.limit, text: refusal };
    }
    if (this.rules.maxMetadataBytes !== undefined) {
      let freed = 0;
      for (const obj of gone) freed += metadataCost(obj);
      const cost = metadataCost({ name: put.name, owner: put.owner, allowed: put.allowed ?? null });
      if (BigInt(store.metadataBytes - freed + cost) > this.rules.maxMetadataBytes) {
        return { ok: false, limit: "broker", text: GovText.brokerQuota };
      }
    }
    return { ok: true, sharedFd, release, evict };
  }

  /**
   * Make the PUT fit one scope, evicting the holder's objects from `order` (into `evict` and
   * `gone`) where allowed. Returns the refusal text, or null when it fits.
   */
  #fit(
    scope: Scope,
    put: PutRequest,
    sharedFd: number,
    gone: Set<StoredObject>,
    order: () => readonly StoredObject[],
    evict: Release[],
  ): string | null {
    const { quota } = scope;
    // One projection updated object by object: recomputing it over every tentative removal made
    // a PUT that evicts k objects (or is refused after trying all k) cost k² steps.
    const p = this.#project(scope, gone);
    const over = (): "objects" | "bytes" | null => {
      // The new object's bytes count unless the holder keeps its content anyway.
      const add = sharedFd >= 0 && p.keeps(sharedFd) ? 0 : put.size;
      if (quota.objects !== null && BigInt(p.objects) + 1n > quota.objects) return "objects";
      if (quota.bytes !== null && BigInt(p.bytes) + BigInt(add) > quota.bytes) return "bytes";
      return null;
    };
    let what = over();
    if (what === null) return null;
    const first = what;
    const tentative = new Set(gone);
    const chosen: Release[] = [];
    for (const obj of order()) {
      if (tentative.has(obj) || !scope.holds(obj)) continue;
      tentative.add(obj);
      p.remove(obj);
      chosen.push({ obj, reason: scope.reasons[what === "objects" ? 0 : 1] });
      what = over();
      if (what === null) break;
    }
    if (what !== null) {
      const now = this.#project(scope, []);
      return first === "objects"
        ? scope.text("objects", now.objects, quota.objects ?? 0n)
        : scope.text("bytes", now.bytes, quota.bytes ?? 0n);
    }
    for (const r of chosen) {
      gone.add(r.obj);
      evict.push(r);
    }
    return null;
  }

  /** A holder's objects and content bytes once `gone` are removed, and the contents it keeps. */
  #project(scope: Scope, gone: Iterable<StoredObject>): Projection {
    const store = this.#store;
    const account = scope.account;
    const broker = scope.limit === "broker";
    const refsOf = (key: number | StoredObject): number => {
      if (!broker) return account?.refs.get(key) ?? 0;
      return typeof key === "number" ? store.content(key)?.refs ?? 0 : 1;
    };
    const p = new Projection(
      scope,
      broker ? store.count : account?.objects ?? 0,
      broker ? store.uniqueBytes : account?.bytes ?? 0,
      refsOf,
    );
    for (const obj of gone) p.remove(obj);
    return p;
  }
}

/** A holder's objects and content bytes as objects are taken away one by one. */
class Projection {
  readonly #dropped = new Map<number | StoredObject, number>();

  constructor(
    readonly scope: Scope,
    public objects: number,
    public bytes: number,
    readonly refsOf: (key: number | StoredObject) => number,
  ) {}

  /** Take `obj` away (nothing when the holder does not hold it). */
  remove(obj: StoredObject): void {
    if (!this.scope.holds(obj)) return;
    this.objects--;
    const key = contentKey(obj);
    const n = (this.#dropped.get(key) ?? 0) + 1;
    this.#dropped.set(key, n);
    if (n === this.refsOf(key)) this.bytes -= obj.size;
  }

  /** Does the holder still hold the content on this descriptor after the removals? */
  keeps(fd: number): boolean {
    return this.refsOf(fd) > (this.#dropped.get(fd) ?? 0);
  }
}

interface Scope {
  readonly limit: "job" | "uid" | "broker";
  readonly quota: QuotaLimits;
  readonly account: Account | undefined;
  readonly holds: (obj: StoredObject) => boolean;
  readonly reasons: readonly [ReleaseReason, ReleaseReason];
  readonly text: (what: "bytes" | "objects", held: number, max: bigint) => string;
}

function charge<K>(accounts: Map<K, Account>, key: K, obj: StoredObject): void {
  let a = accounts.get(key);
  if (a === undefined) {
    a = { objects: 0, bytes: 0, refs: new Map() };
    accounts.set(key, a);
  }
  a.objects++;
  const c = contentKey(obj);
  const n = a.refs.get(c) ?? 0;
  if (n === 0) a.bytes += obj.size;
  a.refs.set(c, n + 1);
}

function discharge<K>(accounts: Map<K, Account>, key: K, obj: StoredObject): void {
  const a = accounts.get(key);
  if (a === undefined) return;
  a.objects--;
  const c = contentKey(obj);
  const n = a.refs.get(c) ?? 0;
  if (n <= 1) {
    a.refs.delete(c);
    a.bytes -= obj.size;
  } else {
    a.refs.set(c, n - 1);
  }
  if (a.objects <= 0) accounts.delete(key);
}
