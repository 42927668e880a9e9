/**
 * The seam between the broker's sessions and its cluster tier. Sessions see only this interface;
 * the implementation (`cluster_bridge.ts`, which loads the NATS client) is imported dynamically
 * by the broker when it runs with `--cluster`, so a broker without it loads nothing of NATS.
 *
 * @module
 */

import type { ClusterView, RemoteAnswer, RemoteStep } from "../core/remote.ts";
import type { StoredObject } from "../core/store.ts";

/** What a committed PUT asks of the cluster tier. */
export type PublishResult =
  /** Nothing to wait for (kept local, or queued for upload after the reply). */
  | null
  /**
   * `--cluster-sync`: the reply waits for this; it resolves with null once the engine
   * committed the name, or with the error text the PUT then fails with.
   */
  | Promise<string | null>;

/** The cluster tier as the sessions use it. */
export interface ClusterSeam {
  /** The view handlers consult (no I/O). */
  readonly view: ClusterView;
  /**
   * Carry out a handler's remote step. Never rejects: failures come back as
   * `{ kind: "error", text }`. Runs off the event loop (the session parks meanwhile).
   */
  answer(step: RemoteStep): Promise<RemoteAnswer>;
  /**
   * A PUT stored `obj` (and its audit record is written): share it with the cluster unless
   * `local` (the request's LOCAL bit) or it is unnamed (content-addressed).
   */
  published(obj: StoredObject, local: boolean): PublishResult;
}
