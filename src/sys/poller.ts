/**
 * epoll with exactly one outstanding wait on Deno's blocking pool, woken by an eventfd.
 *
 * Readiness is collected either synchronously ({@link Poller.poll}, never blocks) or by awaiting
 * {@link Poller.wait}, which runs epoll_wait on a pool thread. All other system calls happen on
 * the JavaScript thread against nonblocking descriptors.
 *
 * @module
 */

import { check, closeQuietly, errno, errnoErrorOf, libc } from "../ffi.ts";
import {
  EFD_CLOEXEC,
  EFD_NONBLOCK,
  EINTR,
  EPOLL_CLOEXEC,
  EPOLL_CTL_ADD,
  EPOLL_CTL_DEL,
  EPOLL_CTL_MOD,
  EPOLL_EVENT_DATA,
  EPOLL_EVENT_SIZE,
  EPOLLIN,
} from "./linux.ts";

/** The token reported for the poller's own wake-up eventfd. */
export const WAKE_TOKEN = 0xffffffff;

/** One readiness event: the token given at registration and the epoll event bits. */
export interface PollEvent {
  /** The token (by convention the descriptor number). */
  token: number;
  /** EPOLLIN, EPOLLOUT, EPOLLHUP, ... */
  events: number;
}

/**
 * An epoll instance plus a wake-up eventfd.
 *
 * @example Waiting off-thread, woken early
 * ```ts
 * import { Poller } from "./poller.ts";
 * using poller = new Poller();
 * setTimeout(() => poller.wake(), 10);
 * const events = await poller.wait(5000); // register descriptors with poller.add(fd, EPOLLIN)
 * console.log(events.length); // 0: the wake-up is not reported as an event
 * ```
 */
export class Poller implements Disposable {
  readonly #epfd: number;
  readonly #wakeFd: number;
  readonly #capacity: number;
  // The async wait writes into its own buffer on another thread; sync polls use a second one.
  readonly #asyncBuf: Uint8Array<ArrayBuffer>;
  readonly #asyncView: DataView;
  readonly #syncBuf: Uint8Array<ArrayBuffer>;
  readonly #syncView: DataView;
  readonly #ctlBuf = new Uint8Array(16);
  readonly #ctlView = new DataView(this.#ctlBuf.buffer);
  readonly #wakeBuf = new Uint8Array(8);
  #waiting = false;
  #closed = false;

  /**
   * @param capacity events collected per call
   */
  constructor(capacity = 256) {
    this.#capacity = capacity;
    this.#epfd = check(libc.symbols.epoll_create1(EPOLL_CLOEXEC), "epoll_create1");
    const wake = libc.symbols.eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (wake < 0) {
      closeQuietly(this.#epfd);
      check(wake, "eventfd");
    }
    this.#wakeFd = wake;
    this.#asyncBuf = new Uint8Array(capacity * EPOLL_EVENT_SIZE);
    this.#asyncView = new DataView(this.#asyncBuf.buffer);
    this.#syncBuf = new Uint8Array(capacity * EPOLL_EVENT_SIZE);
    this.#syncView = new DataView(this.#syncBuf.buffer);
    this.add(this.#wakeFd, EPOLLIN, WAKE_TOKEN);
  }

  /** True while an asynchronous wait is outstanding. */
  get waiting(): boolean {
    return this.#waiting;
  }

  #ctl(op: number, fd: number, events: number, token: number): number {
    this.#ctlView.setUint32(0, events >>> 0, true);
    this.#ctlView.setUint32(EPOLL_EVENT_DATA, token >>> 0, true);
    this.#ctlView.setUint32(EPOLL_EVENT_DATA + 4, 0, true);
    return libc.symbols.epoll_ctl(this.#epfd, op, fd, this.#ctlBuf);
  }

  /** Register a descriptor. Throws ErrnoError on failure. */
  add(fd: number, events: number, token: number = fd): void {
    check(this.#ctl(EPOLL_CTL_ADD, fd, events, token), "epoll_ctl", "epoll_ctl ADD");
  }

  /** Change the events of a registered descriptor. */
  modify(fd: number, events: number, token: number = fd): void {
    check(this.#ctl(EPOLL_CTL_MOD, fd, events, token), "epoll_ctl", "epoll_ctl MOD");
  }

  /** Unregister a descriptor; errors (already gone) are ignored. */
  remove(fd: number): void {
    this.#ctl(EPOLL_CTL_DEL, fd, 0, 0);
  }

  #collect(view: DataView, n: number, out: PollEvent[]): PollEvent[] {
    out.length = 0;
    let woken = false;
    for (let i = 0; i < n; i++) {
      const base = i * EPOLL_EVENT_SIZE;
      const token = view.getUint32(base + EPOLL_EVENT_DATA, true);
      if (token === WAKE_TOKEN) {
        woken = true;
        continue;
      }
      out.push({ token, events: view.getUint32(base, true) });
    }
    if (woken) libc.symbols.read(this.#wakeFd, this.#wakeBuf, 8n);
    return out;
  }

  /**
   * Collect ready events on the calling thread, waiting up to `timeoutMs` (0: not at all). A
   * positive timeout blocks the JavaScript thread; only a process that has nothing else to do
   * meanwhile should use one.
   */
  poll(out: PollEvent[] = [], timeoutMs = 0): PollEvent[] {
    const n = libc.symbols.epoll_wait(this.#epfd, this.#syncBuf, this.#capacity, timeoutMs);
    if (n < 0) {
      // A failing epoll (other than a signal) would otherwise spin the loop forever, silently.
      const e = errno();
      if (e !== EINTR) throw errnoErrorOf("epoll_wait", e);
    }
    return this.#collect(this.#syncView, Math.max(n, 0), out);
  }

  /**
   * Wait up to `timeoutMs` (-1: forever) on a pool thread. Only one wait may be outstanding.
   * A {@link Poller.wake} call ends it early with no events.
   */
  async wait(timeoutMs: number, out: PollEvent[] = []): Promise<PollEvent[]> {
    if (this.#waiting) throw new Error("Poller.wait is already outstanding");
    if (this.#closed) return this.#collect(this.#asyncView, 0, out);
    this.#waiting = true;
    let n: number;
    try {
      n = await libc.symbols.epoll_wait_async(
        this.#epfd,
        this.#asyncBuf,
        this.#capacity,
        Math.trunc(timeoutMs),
      );
    } finally {
      this.#waiting = false;
    }
    // The pool thread's errno is not readable here: ask again on this thread, where a lasting
    // failure (the epoll descriptor gone or replaced) throws with its errno and an EINTR is
    // simply a poll.
    if (n < 0) return this.#closed ? out : this.poll(out, 0);
    return this.#collect(this.#asyncView, n, out);
  }

  /** End an outstanding {@link Poller.wait}. */
  wake(): void {
    const one = new Uint8Array(8);
    one[0] = 1;
    libc.symbols.write(this.#wakeFd, one, 8n);
  }

  /**
   * Close the epoll and eventfd descriptors. An outstanding wait is woken first; the descriptors
   * are closed once it has returned.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.wake();
    const finish = (): void => {
      closeQuietly(this.#epfd);
      closeQuietly(this.#wakeFd);
    };
    if (!this.#waiting) finish();
    else queueMicrotask(() => this.#closeWhenIdle(finish));
  }

  #closeWhenIdle(finish: () => void): void {
    if (!this.#waiting) finish();
    else setTimeout(() => this.#closeWhenIdle(finish), 1);
  }

  /** Same as {@link Poller.close}. */
  [Symbol.dispose](): void {
    this.close();
  }
}
