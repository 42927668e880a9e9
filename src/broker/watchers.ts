/**
 * Watch streams on the broker side. A connection whose WATCH request was accepted becomes a
 * watcher: the session keeps it (state `Watch`, no deadline) and hands its readiness events here.
 * Watchers subscribe to {@link ObjectEvents}, so an event looks the same whatever brought the
 * object in or took it out (a PUT, a DROP, retention, eviction, a takeover, a cluster tier).
 *
 * Each watcher has a bounded {@link WatchQueue}: events are written to its socket with
 * nonblocking sends as soon as they happen; what the socket does not take waits in the queue,
 * which coalesces per name and counts what it lost when full (see `src/core/watch_queue.ts`). A
 * watcher that reads slowly, or not at all, never delays the broker or another client.
 *
 * Policy: a watcher with a job sees the events of objects that job may list (owner or allowed
 * job, or unowned objects); an unscoped watcher sees every event.
 *
 * A watcher sends nothing after its request: bytes from it, or its end of stream, end the watch.
 * When the broker stops (or hands over with `--takeover`), queued events are written if the
 * socket takes them at once and the connection is closed; the client library reconnects after a
 * takeover and reports a `missed` event when it cannot tell that it lost nothing.
 *
 * @module
 */

import type { StoredObject } from "../core/store.ts";
import { visible } from "../core/policy.ts";
import { DEFAULT_WATCH_QUEUE, WatchQueue, type WatchQueueLimits } from "../core/watch_queue.ts";
import {
  encodeWatchEvent,
  selectorMatches,
  type WatchKindName,
  type WatchSelector,
} from "../protocol/watch.ts";
import { EAGAIN } from "../sys/linux.ts";
import { closeAll, recvMsg, sendSome } from "../sys/unix_socket.ts";
import type { Conn } from "./connection.ts";
import type { DropCause, ObjectEvents, ObjectEventType } from "./events.ts";

/** Most bytes of frames put together for one send. */
const BATCH_BYTES = 64 * 1024;

interface Watcher {
  readonly conn: Conn;
  readonly selector: WatchSelector;
  readonly caller: string | null;
  readonly queue: WatchQueue;
  out: Uint8Array;
  outOff: number;
  lostCounted: number;
}

/** What watchers work with. */
export interface WatcherParts {
  /** Where object events come from. */
  readonly events: ObjectEvents;
  /** CLOCK_REALTIME in ns, for event times. */
  readonly clock: () => bigint;
  /** Per-watcher queue bounds. */
  readonly limits?: WatchQueueLimits;
  /** Count events a slow watcher lost (coalesced or dropped). */
  readonly lost?: (n: number) => void;
}

const EMPTY = new Uint8Array(0);

/** The broker's watchers. */
export class Watchers {
  readonly #p: WatcherParts;
  readonly #limits: WatchQueueLimits;
  readonly #all = new Map<Conn, Watcher>();
  readonly #scratch = new Uint8Array(512);
  #unsubscribe: (() => void) | null = null;

  /** @param parts events, clock, queue bounds */
  constructor(parts: WatcherParts) {
    this.#p = parts;
    this.#limits = parts.limits ?? DEFAULT_WATCH_QUEUE;
  }

  /** Watchers open now. */
  get count(): number {
    return this.#all.size;
  }

  /** The queue length announced in WATCH replies. */
  get queueLength(): number {
    return Math.max(2, this.#limits.events);
  }

  /** Make `conn` (its WATCH reply sent) a watcher. */
  add(conn: Conn, selector: WatchSelector, caller: string | null): void {
    this.#all.set(conn, {
      conn,
      selector,
      caller,
      queue: new WatchQueue(this.#limits),
      out: EMPTY,
      outOff: 0,
      lostCounted: 0,
    });
    this.#unsubscribe ??= this.#p.events.on((type, obj, cause) => this.#event(type, obj, cause));
  }

  /** Forget a watcher (its connection is being closed). */
  remove(conn: Conn): void {
    const w = this.#all.get(conn);
    if (w === undefined) return;
    w.queue.clear();
    this.#all.delete(conn);
    if (this.#all.size === 0 && this.#unsubscribe !== null) {
      this.#unsubscribe();
      this.#unsubscribe = null;
    }
  }

  /**
   * The watcher's socket is ready: write what is queued and look for its end of stream.
   * Returns false when the watch is over (the caller closes the connection).
   */
  pump(conn: Conn): boolean {
    const w = this.#all.get(conn);
    if (w === undefined) return false;
    if (!this.#readSide(w)) return false;
    return this.#flush(w);
  }

  /** Write what each watcher's socket takes now, without waiting (the broker is stopping). */
  flushAll(): void {
    for (const w of this.#all.values()) this.#flush(w);
  }

  /** True while the peer only reads; false at its end of stream, an error, or any bytes. */
  #readSide(w: Watcher): boolean {
    const conn = w.conn;
    if (conn.hup || conn.eof || conn.len > 0) return false;
    const r = recvMsg(conn.fd, this.#scratch);
    if (typeof r === "number") return r === -EAGAIN;
    closeAll(r.fds);
    return false;
  }

  #event(type: ObjectEventType, obj: StoredObject, cause: DropCause | undefined): void {
    if (type === "release") return; // the broker closed a descriptor: not an object event
    const kind: WatchKindName = type === "publish" ? "publish" : cause?.kind ?? "drop";
    let timeNs: bigint | null = null;
    for (const w of this.#all.values()) {
      if (!selectorMatches(w.selector, obj.name) || !visible(obj, w.caller)) continue;
      timeNs ??= this.#p.clock();
      w.queue.push({
        kind,
        id: obj.id,
        name: obj.name,
        size: obj.size,
        digest: obj.digest,
        timeNs,
        missed: 0,
      });
      if (!this.#flush(w)) this.#fail(w);
    }
  }

  /** A watcher whose socket failed: stop writing to it; its session closes it at its next event. */
  #fail(w: Watcher): void {
    w.queue.clear();
    w.out = EMPTY;
    w.conn.hup = true;
  }

  /** Send queued frames until the socket is full; false on a send error. */
  #flush(w: Watcher): boolean {
    const fd = w.conn.fd;
    if (fd < 0 || w.conn.hup) return false;
    for (;;) {
      if (w.outOff >= w.out.length) {
        const batch = this.#batch(w);
        if (batch === null) return true;
        w.out = batch;
        w.outOff = 0;
      }
      const n = sendSome(fd, w.outOff === 0 ? w.out : w.out.subarray(w.outOff));
      if (n === -EAGAIN) return true;
      if (n <= 0) return false;
      w.outOff += n;
    }
  }

  /** The next frames to send, put together, or null when nothing is queued. */
  #batch(w: Watcher): Uint8Array | null {
    const lost = w.queue.lost;
    if (lost > w.lostCounted) {
      this.#p.lost?.(lost - w.lostCounted);
      w.lostCounted = lost;
    }
    const first = w.queue.shift();
    if (first === undefined) return null;
    const frames = [encodeWatchEvent(first)];
    let bytes = frames[0]?.length ?? 0;
    while (bytes < BATCH_BYTES) {
      const ev = w.queue.shift();
      if (ev === undefined) break;
      const f = encodeWatchEvent(ev);
      frames.push(f);
      bytes += f.length;
    }
    if (frames.length === 1) return frames[0] ?? null;
    const out = new Uint8Array(bytes);
    let off = 0;
    for (const f of frames) {
      out.set(f, off);
      off += f.length;
    }
    return out;
  }
}
