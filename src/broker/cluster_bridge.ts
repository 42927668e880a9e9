/**
 * The broker's side of the cluster tier (`broker --cluster`): it turns the sessions' requests
 * into {@link ClusterTier} calls and the tier's watch into changes of the local store. The
 * broker imports this module (and with it the NATS client) dynamically, only with `--cluster`.
 *
 * - PUT: a named object is queued for upload after its reply (from the broker's sealed memfd),
 *   or, with `--cluster-sync`, its reply waits for the commit. `put --local` (the LOCAL bit) and
 *   unnamed (content-addressed) objects stay on this host.
 * - GET/STAT by name: when nothing here has the name, or the cluster's latest version is newer
 *   than the local newest, the latest version is pulled into a sealed memfd (verified) and
 *   stored as a local object carrying its origin; one pull per version at a time, every request
 *   for it waits on that pull. Content this host already holds is not pulled again. A copy is
 *   admitted by the governor like a PUT of its name: quotas apply, and retention and eviction
 *   release older versions (pulled or not) exactly as a local publish would.
 * - DROP by name drops the cluster's newest version (and this host's copy of it).
 * - The watch keeps "the cluster's latest version of each name" current, wakes `get --wait`
 *   requests parked for a name published elsewhere, removes local copies of versions dropped
 *   elsewhere, and announces remote publishes and drops through {@link ObjectEvents} (as objects
 *   with `id` 0, `fd` -1 and an `origin`: they are not stored here).
 *
 * Everything runs on the JavaScript thread between loop turns; nothing here blocks.
 *
 * @module
 */

import type { Governor, PutRequest, Release } from "../core/governance.ts";
import { blankRecord } from "../core/audit.ts";
import { droppable, visible } from "../core/policy.ts";
import type { ClusterView, RemoteAnswer, RemoteStep, RemoteVersion } from "../core/remote.ts";
import type { ClusterShare, Store, StoredObject } from "../core/store.ts";
import { closeQuietly } from "../ffi.ts";
import { Text } from "../protocol/wire.ts";
import { tryDup } from "../sys/fd.ts";
import type { ClusterOptions } from "../cluster/options.ts";
import type { ClusterEntry, ClusterVersion } from "../cluster/model.ts";
import {
  type ClusterDropResult,
  type ClusterEvent,
  ClusterTier,
  type ClusterWatch,
} from "../cluster/tier.ts";
import {
  ClusterChangedError,
  ClusterClosedError,
  ClusterQueueFullError,
} from "../cluster/errors.ts";
import type { AuditOutput, Diagnostics } from "./audit_sink.ts";
import type { ClusterSeam, PublishResult } from "./cluster_seam.ts";
import type { ObjectDescriptors } from "./descriptors.ts";
import type { ObjectEvents } from "./events.ts";

/** What the bridge works on. */
export interface BridgeParts {
  /** The broker's store. */
  readonly store: Store;
  /** Where publishes, drops and releases are announced. */
  readonly events: ObjectEvents;
  /** Releases descriptors of objects that leave the store. */
  readonly descriptors: ObjectDescriptors;
  /** The audit output (queue overflows are audited). */
  readonly audit: AuditOutput;
  /** Operator diagnostics (connection up and down). */
  readonly diagnostics: Diagnostics;
  /** Answer requests parked for `name` (a remote publish arrived). */
  readonly wake: (name: string) => void;
  /**
   * Governance: a pulled copy is admitted like a PUT of its name (quotas, retention of the
   * name's older versions, eviction under pressure) and counted like a local object.
   */
  readonly governor?: Governor;
  /** Carry out the releases and evictions an admitted copy causes (the broker's GovernorHooks). */
  readonly retire?: (list: readonly Release[], causeId: number) => void;
  /** Mirror a pulled copy to the shadow (so it survives a recovery with its origin). */
  readonly mirrorAdd?: (id: number) => void;
  /** Tell the shadow an object is gone (a copy of a version dropped on another host). */
  readonly mirrorRemove?: (id: number) => void;
}

/** Policy checks a DROP makes before giving up while other hosts keep publishing the name. */
const DROP_CHECKS = 5;

/** Revision of an object whose upload is still queued: newer than anything seen. */
const PENDING = Number.MAX_SAFE_INTEGER;

function message(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** The broker's cluster tier: implements the sessions' {@link ClusterSeam}. */
export class ClusterBridge implements ClusterSeam, AsyncDisposable {
  readonly #tier: ClusterTier;
  readonly #p: BridgeParts;
  readonly #sync: boolean;
  /** The cluster's latest version of each name, as last seen (watch, resolve). */
  readonly #latest = new Map<string, ClusterVersion>();
  /** The cluster revision each local object stands for (committed, or provisional). */
  readonly #rev = new Map<number, number>();
  /** Objects kept on this host only (`put --local`, unnamed, or refused by a full queue). */
  readonly #localOnly = new Set<number>();
  /** Pulls in progress, by revision. */
  readonly #inflight = new Map<number, Promise<StoredObject>>();
  #watch: ClusterWatch | null = null;
  #seen = 0;
  /** Requests waiting for the engine. */
  #answering = 0;
  #off: () => void = () => {};
  /** The view handlers consult. */
  readonly view: ClusterView;

  private constructor(tier: ClusterTier, parts: BridgeParts, sync: boolean) {
    this.#tier = tier;
    this.#p = parts;
    this.#sync = sync;
    this.view = {
      stale: (name, local) => this.#stale(name, local),
      shared: (_name, local) => local === undefined || !this.#localOnly.has(local.id),
    };
  }

  /**
   * Connect to the engine (waiting at most one request deadline; the tier goes on trying by
   * itself) and start watching every name.
   *
   * @param options the cluster options
   * @param parts what the bridge works on
   */
  static async open(options: ClusterOptions, parts: BridgeParts): Promise<ClusterBridge> {
    let bridge: ClusterBridge | null = null;
    const tier = await ClusterTier.open(options, {
      onQueueOverflow: (entry, err) => {
        if (bridge !== null) bridge.#overflow(entry, err.message);
      },
      onCommitted: (version) => {
        if (bridge !== null) bridge.#committed(version);
      },
      onConnection: (up) =>
        parts.diagnostics(
          `memfdbus broker: cluster ${up ? "connected" : "disconnected"} (host ${options.hostId})`,
        ),
    });
    bridge = new ClusterBridge(tier, parts, options.sync);
    const b = bridge;
    b.#off = parts.events.on((type, obj) => {
      if (type === "release" && obj.id !== 0) {
        b.#rev.delete(obj.id);
        b.#localOnly.delete(obj.id);
      }
    });
    b.#watch = tier.watch(0, (ev) => b.#event(ev));
    return b;
  }

  /**
   * True while work waits for the engine: a request (lookup, pull, drop, list) or a queued
   * upload. The broker's loop then waits off-thread, so the engine's answers are taken at once.
   */
  get busy(): boolean {
    return this.#answering > 0 || this.#tier.uploading;
  }

  /** True while connected to the engine. */
  get connected(): boolean {
    return this.#tier.connected;
  }

  /** The tier's counters (queue, uploads, dedup hits, pulls). */
  get stats(): ClusterTier["stats"] {
    return this.#tier.stats;
  }

  // ---- the view ----------------------------------------------------------------------------

  #revOf(obj: StoredObject): number {
    return obj.origin?.revision ?? this.#rev.get(obj.id) ?? 0;
  }

  #stale(name: string, local: StoredObject | undefined): boolean {
    if (local === undefined) return true;
    const latest = this.#latest.get(name);
    return latest !== undefined && latest.revision > this.#revOf(local);
  }

  #note(v: ClusterVersion): void {
    const known = this.#latest.get(v.name);
    if (known === undefined || known.revision <= v.revision) this.#latest.set(v.name, v);
  }

  // ---- requests ----------------------------------------------------------------------------

  /** Carry out a handler's remote step; never rejects. */
  async answer(step: RemoteStep): Promise<RemoteAnswer> {
    this.#answering++;
    try {
      switch (step.op) {
        case "fetch":
          return await this.#fetch(step.name, step.caller);
        case "drop":
          return await this.#drop(step.name, step.caller);
        case "list":
          return { kind: "list", versions: await this.#tier.list() };
      }
    } catch (e) {
      return { kind: "error", text: message(e) };
    } finally {
      this.#answering--;
    }
  }

  async #fetch(name: string, caller: string | null): Promise<RemoteAnswer> {
    const local = this.#p.store.newestByName(name);
    let v: ClusterVersion | null | undefined = local === undefined
      ? undefined
      : this.#latest.get(name);
    if (v === undefined) {
      const found = await this.#tier.resolve(name);
      if (found !== null) this.#note(found);
      // The watch may have delivered a publish while the lookup was out; its wake found nobody
      // parked (this request was not yet), so without this a `get --wait` would miss it.
      v = this.#latest.get(name) ?? null;
    }
    if (v === null) return { kind: "none" };
    // Policy travels with the name: a caller that may not read it costs no pull.
    if (!visible(v, caller)) return { kind: "denied", version: v };
    const have = this.#copyOf(v);
    if (have !== undefined) return { kind: "object", obj: have };
    let pull = this.#inflight.get(v.revision);
    if (pull === undefined) {
      const revision = v.revision;
      pull = this.#materialize(v).finally(() => this.#inflight.delete(revision));
      this.#inflight.set(revision, pull);
    }
    return { kind: "object", obj: await pull };
  }

  /** The local object that holds version `v`, if any. */
  #copyOf(v: ClusterVersion): StoredObject | undefined {
    const versions = this.#p.store.versionsOf(v.name);
    for (let i = versions.length - 1; i >= 0; i--) {
      const o = versions[i];
      if (o === undefined || o.digest !== v.digest) continue;
      if (this.#revOf(o) === v.revision) return o;
      if (o.origin === undefined && v.originHost === this.#tier.hostId && v.originId === o.id) {
        return o;
      }
    }
    return undefined;
  }

  /** Pull `v` (or reuse content already here) and store it as a local object. */
  async #materialize(v: ClusterVersion): Promise<StoredObject> {
    const { store, events, governor } = this.#p;
    const put: PutRequest = {
      name: v.name,
      size: v.size,
      digest: v.digest,
      owner: v.owner,
      allowed: v.allowed,
      uid: null,
    };
    // A copy the governor would refuse costs no transfer (it decides again once the bytes are here).
    const early = governor?.admitPut(put);
    if (early !== undefined && !early.ok) throw new Error(early.text);
    let fd: number;
    const content = store.contentOf(v.digest, v.size);
    if (content !== undefined) {
      // This host has the bytes already: a descriptor of its own, no transfer.
      fd = tryDup(content.fd);
      if (fd < 0) throw new Error(Text.reopenFailed);
    } else {
      fd = (await this.#tier.pull(v)).release();
    }
    const again = this.#copyOf(v);
    if (again !== undefined) {
      closeQuietly(fd);
      return again;
    }
    let retire: readonly Release[] = [];
    if (governor === undefined) {
      if (store.exceedsQuota(v.size)) {
        closeQuietly(fd);
        throw new Error(Text.objectQuota);
      }
    } else {
      const admitted = governor.admitPut(put);
      if (!admitted.ok) {
        closeQuietly(fd);
        throw new Error(admitted.text);
      }
      if (admitted.sharedFd >= 0) {
        // Dedup: the copy shares the memfd of identical content already here.
        closeQuietly(fd);
        fd = admitted.sharedFd;
      }
      retire = [...admitted.release, ...admitted.evict];
    }
    const obj = store.add({
      size: v.size,
      fd,
      digest: v.digest,
      name: v.name,
      owner: v.owner,
      allowed: v.allowed,
      createdNs: v.createdNs,
      origin: { host: v.originHost, id: v.originId, revision: v.revision },
    });
    governor?.added(obj);
    this.#p.mirrorAdd?.(obj.id);
    events.emit("publish", obj);
    // Retention of the name and eviction apply to pulled copies as to PUTs; a released copy can
    // always be pulled again.
    if (retire.length > 0) this.#p.retire?.(retire, obj.id);
    return obj;
  }

  async #drop(name: string, caller: string | null): Promise<RemoteAnswer> {
    let newest = await this.#tier.resolve(name);
    let r: ClusterDropResult | null = null;
    // The policy check and the drop are two steps: the drop names the revision that was checked
    // and refuses if another version became newest meanwhile; then the check runs again on it.
    for (let attempt = 1; r === null; attempt++) {
      if (newest === null) return { kind: "none" };
      if (!droppable(newest, caller)) return { kind: "denied", version: newest };
      try {
        r = await this.#tier.drop(name, newest.revision);
        if (r === null) return { kind: "none" };
      } catch (e) {
        if (!(e instanceof ClusterChangedError) || attempt >= DROP_CHECKS) throw e;
        newest = e.newest;
      }
    }
    this.#dropped(name, r.dropped.revision, r.current);
    const local = this.#removeCopies(name, r.dropped.revision);
    return { kind: "dropped", version: r.dropped, local };
  }

  #dropped(name: string, revision: number, current: ClusterVersion | null): void {
    const known = this.#latest.get(name);
    if (known !== undefined && known.revision !== revision) return;
    if (current === null) this.#latest.delete(name);
    else this.#latest.set(name, current);
  }

  /** Remove this host's copies of a dropped version; returns the newest one removed. */
  #removeCopies(name: string, revision: number): StoredObject | undefined {
    const { store, events, descriptors } = this.#p;
    let removed: StoredObject | undefined;
    for (const o of [...store.versionsOf(name)]) {
      if (this.#revOf(o) !== revision) continue;
      const last = store.remove(o);
      this.#p.governor?.removed(o);
      this.#p.mirrorRemove?.(o.id);
      events.emit("drop", o);
      if (last) descriptors.release(o);
      removed = o;
    }
    return removed;
  }

  // ---- publishing --------------------------------------------------------------------------

  /** A PUT stored `obj`: share it with the cluster unless it stays local. */
  published(obj: StoredObject, local: boolean): PublishResult {
    if (local || obj.name === obj.digest) {
      this.#keepLocal(obj);
      return null;
    }
    const entry = this.#entryOf(obj);
    this.#rev.set(obj.id, PENDING);
    if (this.#sync) {
      if (!this.#tier.connected) {
        return Promise.resolve("cluster unavailable: publish: not connected");
      }
      return this.#tier.publish(entry, obj.fd).then(
        (v) => {
          this.#committed(v);
          return null;
        },
        (e) => message(e),
      );
    }
    try {
      if (!this.#tier.enqueue(entry, obj.fd)) this.#keepLocal(obj);
    } catch (e) {
      this.#keepLocal(obj);
      this.#p.diagnostics(`memfdbus broker: cluster: ${message(e)}`);
    }
    return null;
  }

  /**
   * An object's cluster state, handed over and mirrored with it: undefined for pulled copies
   * (their origin travels instead), `"local"`, `"queued"` (not known to be committed), or the
   * revision that committed it (0: handled before, and not to be committed again).
   */
  shareOf(obj: StoredObject): ClusterShare | undefined {
    if (obj.origin !== undefined) return undefined;
    if (this.#localOnly.has(obj.id)) return "local";
    const rev = this.#rev.get(obj.id);
    if (rev === undefined) return obj.cluster;
    return rev === PENDING ? "queued" : rev;
  }

  /**
   * The store was filled from a broker taken over or from the shadow: take on each object's
   * cluster state, and queue again the uploads that were not known to be committed (the tier
   * reads the name's history first, so none is committed twice). Objects that came without a
   * state stay on this host.
   */
  recovered(): void {
    const store = this.#p.store;
    for (const obj of store.values()) {
      if (obj.origin !== undefined || this.#rev.has(obj.id)) continue;
      const share = obj.cluster;
      if (typeof share === "number") {
        this.#rev.set(obj.id, share);
        continue;
      }
      if (share !== "queued" || obj.name === obj.digest) {
        this.#keepLocal(obj);
        continue;
      }
      this.#rev.set(obj.id, PENDING);
      const entry = this.#entryOf(obj);
      this.#tier.requeue(entry, obj.fd).then(
        (v) => {
          if (v !== null) this.#committed(v);
          else if (this.#p.store.byId(obj.id) === obj) this.#rev.set(obj.id, 0);
        },
        (e) => {
          if (this.#p.store.byId(obj.id) !== obj) return;
          this.#keepLocal(obj);
          if (e instanceof ClusterQueueFullError || e instanceof ClusterClosedError) return;
          this.#p.diagnostics(`memfdbus broker: cluster: ${message(e)}`);
        },
      );
    }
  }

  #entryOf(obj: StoredObject): ClusterEntry {
    return {
      name: obj.name,
      digest: obj.digest,
      size: obj.size,
      owner: obj.owner,
      allowed: obj.allowed,
      originHost: this.#tier.hostId,
      originId: obj.id,
      createdNs: obj.createdNs,
    };
  }

  #keepLocal(obj: StoredObject): void {
    this.#localOnly.add(obj.id);
    this.#rev.set(obj.id, this.#seen);
  }

  #committed(v: ClusterVersion): void {
    const obj = this.#p.store.byId(v.originId);
    if (obj !== undefined && obj.digest === v.digest && obj.name === v.name) {
      this.#rev.set(obj.id, v.revision);
    }
    this.#note(v);
  }

  #overflow(entry: ClusterEntry, text: string): void {
    // The object stays on this host; the audit says why it is not in the cluster.
    const rec = blankRecord("put", "error", text);
    rec.name = entry.name;
    rec.objectId = entry.originId;
    rec.size = entry.size;
    rec.digest = entry.digest;
    this.#p.audit.record(rec);
    this.#p.audit.flush();
  }

  // ---- the watch ---------------------------------------------------------------------------

  #event(ev: ClusterEvent): void {
    this.#seen = Math.max(this.#seen, ev.revision);
    const own = this.#tier.hostId;
    if (ev.kind === "publish") {
      const v = ev.version;
      this.#note(v);
      if (v.originHost !== own) {
        this.#announce("publish", v);
        this.#p.wake(v.name);
      }
      return;
    }
    const before = this.#latest.get(ev.name);
    this.#dropped(ev.name, ev.dropped, ev.current);
    const removed = this.#removeCopies(ev.name, ev.dropped);
    if (removed === undefined && ev.byHost !== own && before?.revision === ev.dropped) {
      this.#announce("drop", before);
    }
    this.#p.audit.flush();
  }

  /** Tell the broker's listeners of a change on another host (not stored here). */
  #announce(type: "publish" | "drop", v: RemoteVersion & { readonly createdNs: bigint }): void {
    const events = this.#p.events;
    if (!events.active) return;
    events.emit(type, {
      id: 0,
      fd: -1,
      size: v.size,
      digest: v.digest,
      name: v.name,
      owner: v.owner,
      allowed: v.allowed,
      createdNs: v.createdNs,
      origin: { host: v.originHost, id: v.originId, revision: v.revision },
    });
  }

  /**
   * A successor took this broker's objects over, queued uploads included: write nothing more to
   * the engine (the connection closes with the broker).
   */
  handedOver(): void {
    this.#tier.quiesce();
  }

  /** Stop watching and close the connection (queued uploads are abandoned). */
  async close(): Promise<void> {
    this.#off();
    this.#watch?.stop();
    await this.#tier.close();
  }

  /** Same as {@link ClusterBridge.close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
