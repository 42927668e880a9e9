/**
 * Reading and changing names in the KV bucket: the cluster's latest version of a name (one
 * direct get of the key's newest message), every name's latest version, and a drop of a name's
 * newest version, a tombstone written as a compare-and-set on the key's last revision after
 * folding its history. A drop names the revision its caller's policy check saw, so a publish
 * landing between that check and the drop cannot be dropped unchecked. Loaded only with
 * `--cluster`.
 *
 * @module
 */

import { JetStreamApiError } from "@nats-io/jetstream";
import {
  type ClusterVersion,
  decodeRecord,
  encodeDrop,
  type KeyRecord,
  latestOf,
  nameKey,
  replay,
} from "./model.ts";
import { ClusterChangedError, ClusterDataError, ClusterUnavailableError } from "./errors.ts";
import type { EngineLink } from "./link.ts";

/** JetStream's error code for a compare-and-set whose expected last revision is stale. */
const WRONG_LAST_SEQUENCE = 10071;

/** How often a drop looks again when a write raced with its compare-and-set. */
const DROP_TRIES = 10;

/** What {@link ClusterNames.drop} did. */
export interface ClusterDropResult {
  /** The version that was newest and is now dropped. */
  readonly dropped: ClusterVersion;
  /** The version that is latest now, or null when none is left. */
  readonly current: ClusterVersion | null;
  /** The revision of the tombstone. */
  readonly revision: number;
}

/** Names in the KV bucket. */
export class ClusterNames {
  readonly #link: EngineLink;

  /** @param link the engine link */
  constructor(link: EngineLink) {
    this.#link = link;
  }

  /**
   * The cluster's latest version of a name, or null (see `ClusterTier.resolve`).
   *
   * @param name the name (binary string of its bytes)
   */
  async resolve(name: string): Promise<ClusterVersion | null> {
    const key = nameKey(name);
    const e = await this.#link.interactive("resolve", ({ kv }) => kv.get(key));
    if (e === null || e.operation !== "PUT") return null;
    const v = latestOf(e.revision, decodeRecord(e.value));
    if (v !== null && v.name !== name) throw new ClusterDataError(`key ${key} names another name`);
    return v;
  }

  /**
   * Drop the cluster's newest version of a name (see `ClusterTier.drop`).
   *
   * @param name the name (binary string of its bytes)
   * @param expected the revision of the newest version the caller checked; when the newest is
   *   another one, nothing is dropped and ClusterChangedError says which it is
   */
  async drop(name: string, expected?: number): Promise<ClusterDropResult | null> {
    const key = nameKey(name);
    const link = this.#link;
    for (let attempt = 1;; attempt++) {
      const history = await link.interactive("drop", async ({ kv }) => {
        const out: { revision: number; record: KeyRecord }[] = [];
        for await (const e of await kv.history({ key })) {
          if (e.operation === "PUT") {
            out.push({ revision: e.revision, record: decodeRecord(e.value) });
          }
        }
        return out;
      });
      const last = history.at(-1);
      const live = replay(history);
      const dropped = live.pop();
      if (last === undefined || dropped === undefined) return null;
      if (dropped.name !== name) throw new ClusterDataError(`key ${key} names another name`);
      if (expected !== undefined && dropped.revision !== expected) {
        throw new ClusterChangedError(expected, dropped);
      }
      const current = live.at(-1) ?? null;
      try {
        const revision = await link.interactive(
          "drop",
          ({ kv }) =>
            kv.update(
              key,
              encodeDrop(name, dropped.revision, link.options.hostId, current),
              last.revision,
            ),
          1,
        );
        return { dropped, current, revision };
      } catch (e) {
        const cause = e instanceof ClusterUnavailableError ? e.cause : e;
        const raced = cause instanceof JetStreamApiError && cause.code === WRONG_LAST_SEQUENCE;
        if (!raced || attempt >= DROP_TRIES) throw e;
      }
    }
  }

  /** The latest live version of every name in the cluster, sorted by name bytes. */
  async list(): Promise<ClusterVersion[]> {
    return await this.#link.interactive("list", async ({ kv }) => {
      const keys: string[] = [];
      for await (const k of await kv.keys()) keys.push(k);
      const out: ClusterVersion[] = [];
      for (const k of keys) {
        const e = await kv.get(k);
        if (e === null || e.operation !== "PUT") continue;
        const v = latestOf(e.revision, decodeRecord(e.value));
        if (v !== null) out.push(v);
      }
      return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    });
  }
}
