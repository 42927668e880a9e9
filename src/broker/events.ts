/**
 * The broker announces what happens to objects, whatever brought them in (a PUT, recovery from
 * the shadow, a takeover): `publish` when an object enters the store, `drop` when it leaves it
 * (DROP, a recovered object whose digest did not match, or the broker's own retention release or
 * eviction, which carry a {@link DropCause}), `release` when the broker closes its descriptor of
 * it (with shared contents, only when the last object on that memfd goes). Watch streams, metrics and a cluster tier subscribe here instead of reaching
 * into the session code.
 *
 * Listeners run synchronously on the event loop: they must not block, and a listener that throws
 * is removed (the broker keeps serving). With no listener, emitting costs one length check.
 *
 * @module
 */

import type { StoredObject } from "../core/store.ts";

/** What happened to an object. */
export type ObjectEventType = "publish" | "drop" | "release";

/** Why the broker itself let an object go: retention, or eviction under a limit's pressure. */
export interface DropCause {
  /** `release` (retention kept newer versions) or `evict` (room was needed). */
  readonly kind: "release" | "evict";
  /** The retention or limit reason (see `ReleaseReason` in `src/core/governance.ts`). */
  readonly reason: string;
  /** The id of the PUT that caused it. */
  readonly causeId: number;
}

/**
 * A listener: the event type, the object (its descriptor is the broker's; do not close it) and,
 * for a `drop` the broker made on its own, why.
 */
export type ObjectListener = (
  type: ObjectEventType,
  obj: StoredObject,
  cause?: DropCause,
) => void;

/** A typed listener list. */
export class ObjectEvents {
  #listeners: ObjectListener[] = [];

  /** True when someone listens (check before looking up an object only to announce it). */
  get active(): boolean {
    return this.#listeners.length > 0;
  }

  /** Add a listener; returns a function that removes it. */
  on(listener: ObjectListener): () => void {
    this.#listeners = [...this.#listeners, listener];
    return () => this.off(listener);
  }

  /** Remove a listener. */
  off(listener: ObjectListener): void {
    this.#listeners = this.#listeners.filter((l) => l !== listener);
  }

  /** Tell every listener. */
  emit(type: ObjectEventType, obj: StoredObject, cause?: DropCause): void {
    const list = this.#listeners;
    if (list.length === 0) return;
    for (const l of list) {
      try {
        l(type, obj, cause);
      } catch {
        this.off(l);
      }
    }
  }
}
