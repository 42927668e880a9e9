/**
 * The broker's object store: ids in ascending order, O(1) lookup by id and by newest name, and
 * the object-count, total-byte and metadata quotas, the shared contents (several objects on one memfd when
 * their verified digests are equal) and when each object was last fetched. Pure bookkeeping;
 * descriptors are opened and closed by the caller.
 *
 * @module
 */

import type { Owned } from "./policy.ts";

/** One stored object. Strings are binary strings of the raw bytes. */
export interface StoredObject extends Owned {
  /** Its id, unique for the broker's lifetime. */
  readonly id: number;
  /** Size in bytes. */
  readonly size: number;
  /** The broker's descriptor of the sealed memfd. */
  readonly fd: number;
  /** `sha256:<hex>` of the contents, verified by the broker. */
  readonly digest: string;
  /** The object name. */
  readonly name: string;
  /** When the PUT committed, CLOCK_REALTIME nanoseconds. */
  readonly createdNs: bigint;
  /** The publisher's uid (kernel-reported), when the broker knew it; used by uid quotas. */
  readonly uid?: number | undefined;
  /** Where an object pulled from the cluster tier was published (absent for local objects). */
  readonly origin?: ObjectOrigin | undefined;
  /**
   * The cluster state an object published on this host had when a shadow or an old broker
   * handed it over (see {@link ClusterShare}); the cluster bridge tracks it from then on.
   */
  readonly cluster?: ClusterShare | undefined;
}

/**
 * The cluster state of an object published on this host: kept on this host only (`"local"`),
 * waiting for (or not known to have finished) its upload (`"queued"`), or committed under this
 * cluster revision.
 */
export type ClusterShare = "local" | "queued" | number;

/** The cluster-wide identity of an object published on another host. */
export interface ObjectOrigin {
  /** The host id of the broker that published it. */
  readonly host: string;
  /** Its object id on that host. */
  readonly id: number;
  /** The cluster revision that committed it (cluster-wide order of publishes). */
  readonly revision: number;
}

/**
 * One memfd and the objects stored on it. Objects share a content when the broker stored a
 * published object on the memfd of an earlier one with the same verified digest; the broker
 * closes the memfd only when its last object goes ({@link Store.remove} says when).
 */
export interface Content {
  /** The broker's descriptor of the memfd. */
  readonly fd: number;
  /** Its size in bytes. */
  readonly size: number;
  /** The digest of its bytes. */
  readonly digest: string;
  /** How many stored objects use it. */
  readonly refs: number;
}

interface MutableContent {
  fd: number;
  size: number;
  digest: string;
  refs: number;
  /** The publisher uid of the object that brought it ({@link contentUid}). */
  uid: number;
}

/**
 * Contents are shared only among objects of one publisher uid: a content another uid holds
 * shared with a newcomer would hand the newcomer that memfd (its owner uid, its memfd name) and
 * tell it that someone stores those exact bytes (a guess-and-confirm oracle across users). The
 * digest index is one map per uid, keyed by the digest string the object already holds, so
 * the separation costs no string per content. -1 stands for "no uid".
 */
function contentUid(uid: number | null | undefined): number {
  return uid === null || uid === undefined ? -1 : uid;
}

/** The fields a new object is added with; the store assigns the id. */
export type NewObject = Omit<StoredObject, "id">;

/** Quotas the store enforces. */
export interface StoreQuota {
  /** Most objects stored at once (--max-objects). */
  readonly maxObjects: bigint;
  /** Most bytes stored at once, summed over object sizes (--max-total-bytes). */
  readonly maxTotalBytes: bigint;
  /**
   * Most bytes of object metadata held at once, summed over {@link metadataCost}
   * (--max-metadata-bytes). Absent: no limit.
   */
  readonly maxMetadataBytes?: bigint;
}

/**
 * The broker heap one stored object takes besides its name and job ids, in bytes: its record,
 * its entries in the store's maps, its digest string and the per-name version list. Measured
 * with bench/memory.ts (an in-process broker; heap after forced garbage collections, before and
 * after storing N deduplicated 16-byte objects; `deno run -A --v8-flags=--expose-gc
 * bench/memory.ts N [NAME_BYTES]`): 345 B retained per object with 9-byte names (336 B besides
 * the name), 1,355 B with 1,024-byte names (331 B besides) and 66,001 B with 65,536-byte names
 * (465 B besides); before the per-uid digest index stopped building a key string per content,
 * 432 to 438, 1,454 and 66,083 to 66,255 B (up to 719 B besides). Rounded up to cover every run.
 */
export const OBJECT_OVERHEAD_BYTES = 768;

/** The fields of an object its metadata charge is taken from. */
export interface MetadataFields {
  /** The object name (binary string). */
  readonly name: string;
  /** The owner job (binary string), or null. */
  readonly owner: string | null;
  /** The allowed job (binary string), or null. */
  readonly allowed: string | null;
}

/**
 * What one object is charged against `--max-metadata-bytes` and the per-uid metadata shares:
 * its name bytes, owner and allowed job bytes, plus {@link OBJECT_OVERHEAD_BYTES}. Contents are
 * shared by dedup, names never are: a deduplicated object costs its full metadata charge. For
 * example a 3-byte name without jobs costs 3 + 768 bytes.
 */
export function metadataCost(obj: MetadataFields): number {
  return obj.name.length + (obj.owner?.length ?? 0) + (obj.allowed?.length ?? 0) +
    OBJECT_OVERHEAD_BYTES;
}

/**
 * Objects by id (a Map, whose insertion order is ascending id) and by name (each name's versions
 * in ascending id order, so the newest is last).
 */
export class Store {
  readonly #byId = new Map<number, StoredObject>();
  readonly #byName = new Map<string, StoredObject[]>();
  readonly #quota: StoreQuota;
  // Contents by descriptor (non-negative descriptors only: each object with fd < 0, as in unit
  // tests, counts as a content of its own), and the first content of each digest.
  readonly #contents = new Map<number, MutableContent>();
  /** Per publisher uid ({@link contentUid}): the first stored content of each digest. */
  readonly #byDigest = new Map<number, Map<string, MutableContent>>();
  // Fetch order: a counter, not a clock, so "least recently fetched" is exact and deterministic.
  readonly #lastFetch = new Map<number, number>();
  #fetches = 0;
  #nextId = 1;
  #totalBytes = 0;
  #uniqueBytes = 0;
  #metadataBytes = 0;

  /**
   * @param quota the limits {@link Store.exceedsQuota} checks
   */
  constructor(quota: StoreQuota) {
    this.#quota = quota;
  }

  /** Objects stored. */
  get count(): number {
    return this.#byId.size;
  }

  /** Sum of stored sizes. */
  get totalBytes(): number {
    return this.#totalBytes;
  }

  /**
   * Bytes of memory the stored objects occupy: each shared content counted once. Equals
   * {@link Store.totalBytes} when no object shares its memfd.
   */
  get uniqueBytes(): number {
    return this.#uniqueBytes;
  }

  /** Sum of the stored objects' {@link metadataCost} charges. */
  get metadataBytes(): number {
    return this.#metadataBytes;
  }

  /** The metadata limit (--max-metadata-bytes), or null for none. */
  get maxMetadataBytes(): bigint | null {
    return this.#quota.maxMetadataBytes ?? null;
  }

  /** The id the next PUT will get. */
  get nextId(): number {
    return this.#nextId;
  }

  /**
   * True when adding an object of `size` bytes would pass --max-objects or --max-total-bytes,
   * or, with `metadata` (its {@link metadataCost}), --max-metadata-bytes (a size or charge
   * exactly filling the remaining room fits).
   */
  exceedsQuota(size: number, metadata = 0): boolean {
    return BigInt(this.#byId.size) >= this.#quota.maxObjects ||
      BigInt(size) > this.#quota.maxTotalBytes - BigInt(this.#totalBytes) ||
      this.exceedsMetadata(metadata);
  }

  /**
   * True when `metadata` more bytes of metadata charges would pass --max-metadata-bytes once
   * charges of `freed` bytes are released (retention, eviction).
   */
  exceedsMetadata(metadata: number, freed = 0): boolean {
    const max = this.#quota.maxMetadataBytes;
    return max !== undefined && BigInt(this.#metadataBytes - freed + metadata) > max;
  }

  /** Add an object under the next id. The caller checked {@link Store.exceedsQuota}. */
  add(fields: NewObject): StoredObject {
    const obj: StoredObject = { id: this.#nextId++, ...fields };
    this.#insert(obj);
    return obj;
  }

  /**
   * Put back an object with a known id (recovery), or only advance the next id (null). Ids must
   * arrive in ascending order; the next id becomes at least `nextId`.
   */
  restore(obj: StoredObject | null, nextId: number): void {
    if (obj !== null) {
      if (this.#byId.has(obj.id)) throw new RangeError(`Object ${obj.id} is already stored`);
      this.#insert(obj);
      this.#nextId = Math.max(this.#nextId, obj.id + 1);
    }
    this.#nextId = Math.max(this.#nextId, nextId);
  }

  #insert(obj: StoredObject): void {
    this.#byId.set(obj.id, obj);
    const versions = this.#byName.get(obj.name);
    if (versions === undefined) this.#byName.set(obj.name, [obj]);
    else versions.push(obj);
    this.#totalBytes += obj.size;
    this.#metadataBytes += metadataCost(obj);
    const shared = obj.fd >= 0 ? this.#contents.get(obj.fd) : undefined;
    if (shared !== undefined) {
      shared.refs++;
      return;
    }
    this.#uniqueBytes += obj.size;
    if (obj.fd < 0) return;
    const uid = contentUid(obj.uid);
    const content = { fd: obj.fd, size: obj.size, digest: obj.digest, refs: 1, uid };
    this.#contents.set(obj.fd, content);
    let digests = this.#byDigest.get(uid);
    if (digests === undefined) this.#byDigest.set(uid, digests = new Map());
    if (!digests.has(obj.digest)) digests.set(obj.digest, content);
  }

  /**
   * The stored content with this digest and size, whose memfd a new object with the same
   * verified digest may share (pass its `fd` to {@link Store.add} and close the new memfd).
   * Only a content first stored by `uid` is found (contents are shared within one uid);
   * without a uid, only one stored by an object without one.
   */
  contentOf(digest: string, size: number, uid?: number | null): Content | undefined {
    const c = this.#byDigest.get(contentUid(uid))?.get(digest);
    return c !== undefined && c.size === size ? c : undefined;
  }

  /** The content on this descriptor, if stored. */
  content(fd: number): Content | undefined {
    return this.#contents.get(fd);
  }

  /** The content an object is stored on (undefined for an object with fd < 0). */
  contentFor(obj: StoredObject): Content | undefined {
    return obj.fd >= 0 ? this.#contents.get(obj.fd) : undefined;
  }

  /** True when the object shares its memfd with at least one other stored object. */
  isShared(obj: StoredObject): boolean {
    return (this.contentFor(obj)?.refs ?? 1) > 1;
  }

  /** Note that the object was just fetched (GET, exec): eviction prefers the least recent. */
  touch(obj: StoredObject): void {
    if (this.#byId.get(obj.id) === obj) this.#lastFetch.set(obj.id, ++this.#fetches);
  }

  /**
   * When the object was last fetched, as a position in the broker's fetch order (0: never).
   * Larger is more recent.
   */
  lastFetched(obj: StoredObject): number {
    return this.#lastFetch.get(obj.id) ?? 0;
  }

  /** Every version of a name, oldest first (empty when none). */
  versionsOf(name: string): readonly StoredObject[] {
    return this.#byName.get(name) ?? [];
  }

  /** Every stored name with its versions, oldest first. */
  names(): IterableIterator<[string, readonly StoredObject[]]> {
    return this.#byName.entries();
  }

  /** The object with this id, if stored. */
  byId(id: bigint | number): StoredObject | undefined {
    if (typeof id === "bigint") {
      if (id > BigInt(Number.MAX_SAFE_INTEGER)) return undefined;
      return this.#byId.get(Number(id));
    }
    return this.#byId.get(id);
  }

  /** The newest object with exactly this name, if any. */
  newestByName(name: string): StoredObject | undefined {
    const versions = this.#byName.get(name);
    return versions === undefined ? undefined : versions[versions.length - 1];
  }

  /** The oldest object with exactly this name, if any. */
  oldestByName(name: string): StoredObject | undefined {
    return this.#byName.get(name)?.[0];
  }

  /**
   * Remove an object. Returns true when the caller should close its descriptor: the object was
   * stored and no other stored object shares its memfd.
   */
  remove(obj: StoredObject): boolean {
    if (this.#byId.get(obj.id) !== obj) return false;
    this.#byId.delete(obj.id);
    this.#lastFetch.delete(obj.id);
    this.#totalBytes -= obj.size;
    this.#metadataBytes -= metadataCost(obj);
    const lastRef = this.#release(obj);
    this.#unlinkName(obj);
    return lastRef;
  }

  #release(obj: StoredObject): boolean {
    const c = obj.fd >= 0 ? this.#contents.get(obj.fd) : undefined;
    if (c === undefined) {
      this.#uniqueBytes -= obj.size;
      return true;
    }
    if (--c.refs > 0) return false;
    this.#contents.delete(c.fd);
    this.#uniqueBytes -= c.size;
    const digests = this.#byDigest.get(c.uid);
    if (digests?.get(c.digest) === c) {
      digests.delete(c.digest);
      if (digests.size === 0) this.#byDigest.delete(c.uid);
    }
    return true;
  }

  #unlinkName(obj: StoredObject): void {
    const versions = this.#byName.get(obj.name);
    if (versions === undefined) return;
    if (versions.length === 1) {
      this.#byName.delete(obj.name);
    } else if (versions[versions.length - 1] === obj) {
      versions.pop();
    } else {
      versions.splice(versions.indexOf(obj), 1);
    }
  }

  /** Every object, in ascending id order. */
  values(): IterableIterator<StoredObject> {
    return this.#byId.values();
  }
}
