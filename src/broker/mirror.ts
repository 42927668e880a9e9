/**
 * The broker's use of its shadow (`src/shadow/link.ts` holds the link itself): recovery of the
 * shadow's objects at startup (each one checked like a published object, and its digest verified
 * before any client is served), mirroring
 * of every committed PUT and DROP before its reply goes out, and revival of a shadow that died or
 * stopped acknowledging.
 *
 * @module
 */

import { type AuditResult, blankRecord } from "../core/audit.ts";
import type { Outcome } from "../core/handlers.ts";
import type { Governor } from "../core/governance.ts";
import type { Store } from "../core/store.ts";
import { closeQuietly } from "../ffi.ts";
import type { HashPool } from "../hash/verifier.ts";
import { type Refused, verifyRecovered } from "../shadow/admit.ts";
import { type ShadowConfig, ShadowLink, type ShareOf } from "../shadow/link.ts";
import { EPOLLET, EPOLLIN, EPOLLOUT } from "../sys/linux.ts";
import type { Poller } from "../sys/poller.ts";
import type { AuditOutput, Diagnostics } from "./audit_sink.ts";
import type { ObjectEvents } from "./events.ts";
import { SHADOW_TOKEN } from "./loop.ts";
import type { Commit, RunState } from "./session.ts";

/** Longest a PUT or DROP reply waits for the shadow before going out unmirrored. */
const SHADOW_ACK_MS = 5000;
/** Pause between attempts to revive a lost shadow. */
const RETRY_MS = 1000;

/** What the mirror works with. */
export interface MirrorParts {
  readonly store: Store;
  readonly poller: Poller;
  readonly hash: HashPool;
  readonly audit: AuditOutput;
  readonly events: ObjectEvents;
  readonly run: RunState;
  readonly diagnostics: Diagnostics;
  /** Told of recovered objects added and removed. */
  readonly governor?: Governor;
  /** With `--cluster`: each object's cluster state, mirrored with it. */
  readonly share?: ShareOf;
}

/** The shadow mirror; inactive (replies never wait) until {@link ShadowMirror.attach}. */
export class ShadowMirror implements Commit {
  readonly #p: MirrorParts;
  #link: ShadowLink | null = null;
  #nextRetry = 0;

  /** @param parts what the mirror works with */
  constructor(parts: MirrorParts) {
    this.#p = parts;
  }

  /** True once a shadow is attached. */
  get active(): boolean {
    return this.#link !== null;
  }

  /**
   * Connect to the shadow (starting one if needed). With `recover`, its objects become the
   * store's (before any client is served), each one checked like a published object and its
   * digest verified first; otherwise the store (taken over) is authoritative and the shadow is
   * seeded with it. `connected` runs once the shadow has accepted this broker, before any record
   * of the recovery is written (a shadow that serves another broker throws before it).
   */
  async attach(config: ShadowConfig, recover: boolean, connected?: () => void): Promise<void> {
    const p = this.#p;
    const store = p.store;
    // Taking over, the old broker lets go of the shadow just before this: wait for that.
    const attached = ShadowLink.attach(config, recover ? 0 : 5_000);
    connected?.();
    const { link, started } = attached;
    link.share = p.share;
    let { objects, nextId } = attached;
    let refused: Refused[] = attached.refused;
    if (recover) {
      // No recovered object is served before its digest is verified.
      const checked = await verifyRecovered(objects, (fd, size) => p.hash.digest(fd, size));
      objects = checked.kept;
      refused = [...refused, ...checked.refused];
    } else {
      for (const obj of objects) closeQuietly(obj.fd);
      objects = [];
      nextId = store.nextId;
      link.seed(store.values(), nextId, () => {});
    }
    this.#link = link;
    link.onReconnect = (oldFd, newFd) => {
      if (oldFd >= 0) p.poller.remove(oldFd);
      if (newFd >= 0) p.poller.add(newFd, EPOLLIN | EPOLLOUT | EPOLLET, SHADOW_TOKEN);
    };
    link.onTrouble = (message) => this.#recoverRecord("error", message, store.count);
    p.poller.add(link.fd, EPOLLIN | EPOLLOUT | EPOLLET, SHADOW_TOKEN);
    let bytes = 0;
    for (const recovered of objects) {
      // Objects that shared a memfd before the restart come back on separate descriptors: with
      // dedup on, share them again so the bytes charged to the broker, jobs and uids stay the same.
      const shared = p.governor?.rules.dedup === true
        ? store.contentOf(recovered.digest, recovered.size, recovered.uid)
        : undefined;
      let obj = recovered;
      if (shared !== undefined) {
        closeQuietly(recovered.fd);
        obj = { ...recovered, fd: shared.fd };
      }
      store.restore(obj, nextId);
      p.governor?.added(obj);
      p.events.emit("publish", obj);
      bytes += obj.size;
    }
    store.restore(null, nextId);
    if (!recover) return;
    if (started) {
      this.#recoverRecord(
        "not_found",
        `no shadow state at ${config.path}: started a new shadow, no objects recovered`,
        0,
      );
      p.diagnostics(
        `memfdbus broker: no shadow was running on ${config.path}; started one, nothing to recover`,
      );
    } else {
      this.#recoverRecord("ok", null, objects.length, bytes);
    }
    for (const r of refused) {
      if (r.id > 0) link.remove(r.id, () => {});
      const rec = blankRecord("recover", "error", `${r.reason}: object removed`);
      rec.objectId = r.id;
      rec.name = r.name;
      p.audit.record(rec);
    }
  }

  /**
   * Let go of the shadow (a broker handing over, so that its successor can attach). Should the
   * handover fail, the sweep reconnects and seeds it again.
   */
  release(): void {
    this.#link?.release();
  }

  #recoverRecord(result: AuditResult, error: string | null, count: number, size = 0): void {
    const rec = blankRecord("recover", result, error);
    rec.count = count;
    rec.size = size;
    this.#p.audit.record(rec);
  }

  /** Mirror a committed PUT or DROP; `done` sends the reply once the shadow acknowledged. */
  commit(o: Outcome, done: () => void): void {
    const link = this.#link;
    if (link === null) {
      done();
      return;
    }
    const store = this.#p.store;
    const id = Number(o.audit.objectId ?? 0);
    const obj = o.keptFd ? store.byId(id) : undefined;
    if (obj !== undefined) link.add(obj, store.nextId, done);
    else link.remove(id, done);
    if (link.lost) this.#revive();
  }

  /** An object entered the store without a PUT (a copy pulled from the cluster tier). */
  added(id: number): void {
    const link = this.#link;
    const obj = this.#p.store.byId(id);
    if (link === null || obj === undefined) return;
    link.add(obj, this.#p.store.nextId, () => {});
    if (link.lost) this.#revive();
  }

  /** An object left the store without a request of its own (retention, eviction). */
  removed(id: number): void {
    this.#link?.remove(id, () => {});
  }

  /** The shadow link's socket is ready. */
  event(): void {
    this.#link?.onEvent();
    if (this.#link?.lost) this.#revive();
  }

  /** Timer work: give up on a shadow that stopped acknowledging, retry a lost one. */
  sweep(now: number): void {
    const link = this.#link;
    if (link === null) return;
    if (link.stalled(now, SHADOW_ACK_MS)) {
      link.abandon(`did not acknowledge within ${SHADOW_ACK_MS} ms`);
    }
    if (link.fd < 0 && now >= this.#nextRetry) this.#revive();
  }

  #revive(): void {
    const link = this.#link;
    if (link === null || this.#p.run.stopping) return;
    this.#nextRetry = performance.now() + RETRY_MS;
    const store = this.#p.store;
    link.revive(() => store.values(), store.nextId);
  }

  /** Close the link (the shadow keeps running and keeps its objects). */
  close(): void {
    this.#link?.close();
    this.#link = null;
  }
}
