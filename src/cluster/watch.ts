/**
 * Watching the KV bucket: every change of a name after a revision, in revision order, as
 * {@link ClusterEvent}s; a watch survives disconnects and resumes after the last revision it
 * delivered. Loaded only with `--cluster`.
 *
 * @module
 */

import { type KvEntry, KvWatchInclude } from "@nats-io/kv";
import { type ClusterVersion, decodeRecord } from "./model.ts";
import { ClusterDataError } from "./errors.ts";
import type { EngineLink } from "./link.ts";

/** A remote (or local) change of a name, as a watch delivers it. */
export type ClusterEvent =
  | { readonly kind: "publish"; readonly revision: number; readonly version: ClusterVersion }
  | {
    readonly kind: "drop";
    readonly revision: number;
    /** The name. */
    readonly name: string;
    /** The revision of the version that was dropped. */
    readonly dropped: number;
    /** The host that dropped it. */
    readonly byHost: string;
    /** The version that is latest now, or null. */
    readonly current: ClusterVersion | null;
  };

/** A running watch; stop it with `stop()` or `using`. */
export interface ClusterWatch extends Disposable {
  /** The last revision delivered (where a restart resumes). */
  readonly lastRevision: number;
  /** Stop delivering events. */
  stop(): void;
}

/** The tier's watches. */
export class ClusterWatches {
  readonly #link: EngineLink;
  readonly #watches = new Set<() => void>();

  /** @param link the engine link */
  constructor(link: EngineLink) {
    this.#link = link;
  }

  /** Stop every watch. */
  stopAll(): void {
    for (const stop of [...this.#watches]) stop();
  }

  /**
   * Deliver every change after `fromRevision` (see `ClusterTier.watch`).
   *
   * @param fromRevision the last revision already seen (0: only changes from now on)
   * @param cb called once per event
   */
  watch(fromRevision: number, cb: (event: ClusterEvent) => void): ClusterWatch {
    const link = this.#link;
    let last = fromRevision;
    let stopped = false;
    let stopIter: (() => void) | null = null;
    const stop = (): void => {
      stopped = true;
      stopIter?.();
      this.#watches.delete(stop);
    };
    this.#watches.add(stop);
    const run = async (): Promise<void> => {
      let backoff = 50;
      while (!stopped && !link.closed) {
        try {
          await link.waitConnected();
          const { kv } = link.bound("watch");
          const iter = await link.deadline(
            "watch",
            last === 0
              ? kv.watch({ include: KvWatchInclude.UpdatesOnly })
              : kv.watch({ resumeFromRevision: last + 1 }),
          );
          stopIter = () => iter.stop();
          if (stopped) iter.stop();
          for await (const e of iter) {
            if (e.revision <= last) continue;
            last = e.revision;
            backoff = 50;
            const ev = toEvent(e);
            if (ev instanceof Error) link.hooks.onRetry?.("watch", ev);
            else cb(ev);
          }
        } catch (e) {
          if (stopped || link.closed) return;
          link.hooks.onRetry?.("watch", e);
        }
        if (stopped || link.closed) return;
        await link.sleep(backoff);
        backoff = Math.min(backoff * 2, 2000);
      }
    };
    link.track(run());
    return {
      get lastRevision() {
        return last;
      },
      stop,
      [Symbol.dispose]: stop,
    };
  }
}

function toEvent(e: KvEntry): ClusterEvent | Error {
  if (e.operation !== "PUT") return new ClusterDataError(`unexpected ${e.operation} of ${e.key}`);
  try {
    const r = decodeRecord(e.value);
    if (r.op === "put") {
      return {
        kind: "publish",
        revision: e.revision,
        version: { ...r.entry, revision: e.revision },
      };
    }
    return {
      kind: "drop",
      revision: e.revision,
      name: r.name,
      dropped: r.target,
      byHost: r.byHost,
      current: r.current,
    };
  } catch (err) {
    return err as Error;
  }
}
