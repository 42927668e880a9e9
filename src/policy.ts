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
