/**
 * The slow-watcher rule: each watcher has a bounded queue of events not yet written to its
 * socket, so a watcher that reads slowly (or not at all) costs the broker a fixed amount of
 * memory and never delays it or anyone else. Pure.
 *
 * What a slow watcher loses, in order of preference:
 * 1. While the queue has room (fewer than `events` entries and `bytes` of names), every event
 *    is queued in order.
 * 2. When it is full, a new event replaces the newest queued event of the same name; the new
 *    entry goes to the tail (it is the newest) and its `missed` counts the events of that name
 *    it stands for. The watcher still learns the latest state of every name it has queued.
 * 3. When it is full and nothing of that name is queued, the event is dropped and counted; as
 *    soon as an entry leaves the queue, a `missed` event with an empty name (any name) and that
 *    count takes the free slot. Further drops while it is queued add to its count.
 *
 * A watcher that sees `missed` should re-read what it follows (LIST or STAT) to resynchronise.
 *
 * @module
 */

import type { WatchEvent } from "../protocol/watch.ts";

/** Bounds of one watcher's queue. */
export interface WatchQueueLimits {
  /** Most events queued. At least 2. */
  readonly events: number;
  /** Most bytes queued, counting each event as 64 bytes plus its name. */
  readonly bytes: number;
}

/** The broker's default bounds: 1024 events, 1 MiB. */
export const DEFAULT_WATCH_QUEUE: WatchQueueLimits = { events: 1024, bytes: 1 << 20 };

interface Node {
  ev: WatchEvent;
  readonly cost: number;
  prev: Node | null;
  next: Node | null;
  readonly marker: boolean;
}

const costOf = (ev: WatchEvent): number => 64 + ev.name.length;

/**
 * A bounded FIFO of watch events that coalesces per name when full (see the module text).
 *
 * With room for 2 events: after a1, b1, a2 the queue holds b1 then a2 (missed 1).
 */
export class WatchQueue {
  readonly #limits: WatchQueueLimits;
  readonly #newest = new Map<string, Node>();
  #head: Node | null = null;
  #tail: Node | null = null;
  #length = 0;
  #bytes = 0;
  #dropped = 0;
  #droppedAt = 0n;
  #marker: Node | null = null;
  #lost = 0;

  /**
   * @param limits the bounds; `events` below 2 is raised to 2
   */
  constructor(limits: WatchQueueLimits = DEFAULT_WATCH_QUEUE) {
    this.#limits = { events: Math.max(2, limits.events), bytes: limits.bytes };
  }

  /** Events queued (including a queued `missed` event). */
  get length(): number {
    return this.#length;
  }

  /** Bytes queued, as counted against the limit. */
  get bytes(): number {
    return this.#bytes;
  }

  /** Events this watcher did not receive one by one (coalesced or dropped), since it began. */
  get lost(): number {
    return this.#lost;
  }

  #fits(cost: number): boolean {
    return this.#length === 0 ||
      (this.#length < this.#limits.events && this.#bytes + cost <= this.#limits.bytes);
  }

  #append(ev: WatchEvent, marker = false): Node {
    const node: Node = { ev, cost: costOf(ev), prev: this.#tail, next: null, marker };
    if (this.#tail === null) this.#head = node;
    else this.#tail.next = node;
    this.#tail = node;
    this.#length++;
    this.#bytes += node.cost;
    if (!marker) this.#newest.set(ev.name, node);
    return node;
  }

  #unlink(node: Node): void {
    if (node.prev === null) this.#head = node.next;
    else node.prev.next = node.next;
    if (node.next === null) this.#tail = node.prev;
    else node.next.prev = node.prev;
    node.prev = node.next = null;
    this.#length--;
    this.#bytes -= node.cost;
    if (node.marker) this.#marker = null;
    else if (this.#newest.get(node.ev.name) === node) this.#newest.delete(node.ev.name);
  }

  /** Queue an event, coalescing or dropping it when the queue is full. */
  push(ev: WatchEvent): void {
    if (this.#fits(costOf(ev))) {
      this.#append(ev);
      return;
    }
    this.#lost++;
    const same = this.#newest.get(ev.name);
    if (same !== undefined) {
      this.#unlink(same);
      this.#append({ ...ev, missed: ev.missed + same.ev.missed + 1 });
      return;
    }
    if (this.#marker !== null) {
      const m = this.#marker.ev;
      this.#marker.ev = { ...m, missed: m.missed + 1, timeNs: ev.timeNs };
      return;
    }
    this.#dropped++;
    this.#droppedAt = ev.timeNs;
  }

  /** Take the oldest queued event, or undefined when none. */
  shift(): WatchEvent | undefined {
    const node = this.#head;
    if (node === null) return undefined;
    this.#unlink(node);
    if (this.#dropped > 0) {
      const marker: WatchEvent = {
        kind: "missed",
        id: 0,
        name: "",
        size: 0,
        digest: null,
        timeNs: this.#droppedAt,
        missed: this.#dropped,
      };
      this.#dropped = 0;
      this.#marker = this.#append(marker, true);
    }
    return node.ev;
  }

  /** Forget everything queued (the watcher went away). */
  clear(): void {
    while (this.#head !== null) this.#unlink(this.#head);
    this.#dropped = 0;
  }
}
