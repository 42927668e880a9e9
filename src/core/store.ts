/**
 * The broker's object store: ids in ascending order, O(1) lookup by id and by newest name, and
 * the object-count and total-byte quotas. Pure bookkeeping; descriptors are opened and closed by
 * the caller.
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
}

/** The fields a new object is added with; the store assigns the id. */
export type NewObject = Omit<StoredObject, "id">;

/** Quotas the store enforces. */
export interface StoreQuota {
  /** Most objects stored at once (--max-objects). */
  readonly maxObjects: bigint;
  /** Most bytes stored at once, summed over object sizes (--max-total-bytes). */
  readonly maxTotalBytes: bigint;
}

/**
 * Objects by id (a Map, whose insertion order is ascending id) and by name (each name's versions
 * in ascending id order, so the newest is last).
 */
export class Store {
  readonly #byId = new Map<number, StoredObject>();
  readonly #byName = new Map<string, StoredObject[]>();
  readonly #quota: StoreQuota;
  #nextId = 1;
  #totalBytes = 0;

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

  /** The id the next PUT will get. */
  get nextId(): number {
    return this.#nextId;
  }

  /**
   * True when adding an object of `size` bytes would pass --max-objects or --max-total-bytes
   * (a size exactly filling the remaining room fits).
   */
  exceedsQuota(size: number): boolean {
    return BigInt(this.#byId.size) >= this.#quota.maxObjects ||
      BigInt(size) > this.#quota.maxTotalBytes - BigInt(this.#totalBytes);
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

  /** Remove an object (its descriptor is the caller's to close). */
  remove(obj: StoredObject): void {
    if (this.#byId.get(obj.id) !== obj) return;
    this.#byId.delete(obj.id);
    this.#totalBytes -= obj.size;
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
