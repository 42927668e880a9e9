/**
 * The broker announces what happens to objects, whatever brought them in (a PUT, recovery from
 * the shadow, a takeover): `publish` when an object enters the store, `drop` when it leaves it
 * (DROP, or a recovered object whose digest did not match), `release` when the broker closes its
 * descriptor of it. Watch streams, metrics and a cluster tier subscribe here instead of reaching
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

/** A listener: the event type and the object (its descriptor is the broker's; do not close it). */
export type ObjectListener = (type: ObjectEventType, obj: StoredObject) => void;

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
  emit(type: ObjectEventType, obj: StoredObject): void {
    const list = this.#listeners;
    if (list.length === 0) return;
    for (const l of list) {
      try {
        l(type, obj);
      } catch {
        this.off(l);
      }
    }
  }
}
