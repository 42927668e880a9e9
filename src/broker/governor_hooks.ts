/**
 * The broker's side of memory governance: carrying out what the pure {@link Governor} decided
 * for a PUT. Each object that retention releases or pressure evicts leaves the store, is
 * uncharged from its job and uid, gets its own audit record (`op` `release` or `evict`, with the
 * reason and the id of the PUT that caused it), is counted for metrics, is announced as a `drop`
 * with a {@link DropCause} (watchers see `release` or `evict`), leaves the shadow, and has its
 * descriptor closed when no other stored object shares it. A consumer that already holds a
 * descriptor of it keeps its bytes: the memfd lives until the last descriptor closes.
 *
 * @module
 */

import { releaseRecord } from "../core/audit.ts";
import type { Governor, Release } from "../core/governance.ts";
import type { Store } from "../core/store.ts";
import type { AuditOutput } from "./audit_sink.ts";
import type { BrokerCounters } from "./counters.ts";
import type { ObjectDescriptors } from "./descriptors.ts";
import type { ObjectEvents } from "./events.ts";

/** What the hooks work with. */
export interface GovernorParts {
  readonly store: Store;
  readonly governor: Governor;
  readonly descriptors: ObjectDescriptors;
  readonly events: ObjectEvents;
  readonly audit: AuditOutput;
  readonly counters: BrokerCounters;
  /** Tell the shadow (if any) that the object is gone. */
  readonly unmirror: (id: number) => void;
}

/** Carries out releases and evictions. */
export class GovernorHooks {
  readonly #p: GovernorParts;

  /** @param parts what the hooks work with */
  constructor(parts: GovernorParts) {
    this.#p = parts;
  }

  /** Release `list` (in order), caused by the PUT of object `causeId`. */
  retire(list: readonly Release[], causeId: number): void {
    const p = this.#p;
    for (const { obj, reason } of list) {
      if (p.store.byId(obj.id) !== obj) continue;
      const last = p.store.remove(obj);
      p.governor.removed(obj);
      const kind = reason === "retention" ? "release" : "evict";
      p.audit.record(releaseRecord(obj, kind, reason, causeId));
      p.counters.released(reason);
      p.events.emit("drop", obj, { kind, reason, causeId });
      p.unmirror(obj.id);
      if (last) p.descriptors.release(obj);
    }
  }
}
