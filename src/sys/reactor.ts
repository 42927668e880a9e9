/**
 * Waiting for descriptor readiness from client code without blocking the caller's event loop.
 *
 * One process-wide {@link Poller} serves every client connection. Its single pool-thread wait is
 * outstanding only while somebody is waiting, so an idle process can exit normally.
 *
 * @module
 */

import { TimeoutError } from "../errors.ts";
import { EPOLLERR, EPOLLHUP, EPOLLONESHOT } from "./linux.ts";
import { Poller, type PollEvent } from "./poller.ts";

interface Waiter {
  resolve: (events: number) => void;
  reject: (e: Error) => void;
  timer: ReturnType<typeof setTimeout> | undefined;
}

const MAX_TIMER_MS = 2_147_483_647;
let poller: Poller | null = null;
const waiters = new Map<number, Waiter>();
let looping = false;

async function loop(p: Poller): Promise<void> {
  looping = true;
  const events: PollEvent[] = [];
  try {
    while (waiters.size > 0) {
      await p.wait(-1, events);
      for (const ev of events) {
        const w = waiters.get(ev.token);
        if (w === undefined) continue;
        waiters.delete(ev.token);
        p.remove(ev.token);
        if (w.timer !== undefined) clearTimeout(w.timer);
        w.resolve(ev.events);
      }
    }
  } finally {
    looping = false;
  }
}

/**
 * Resolve with the ready events once `fd` reports any of `events` (plus errors and hang-ups), or
 * reject with {@link TimeoutError} after `timeoutMs` milliseconds. One wait per descriptor.
 *
 * @param fd a nonblocking descriptor
 * @param events EPOLLIN and/or EPOLLOUT
 * @param timeoutMs how long to wait; Infinity for no limit
 * @param what the step being waited for, used in the timeout message
 */
export function waitReady(
  fd: number,
  events: number,
  timeoutMs: number,
  what: string,
): Promise<number> {
  if (waiters.has(fd)) return Promise.reject(new Error(`Descriptor ${fd} already has a waiter`));
  poller ??= new Poller(64);
  const p = poller;
  return new Promise<number>((resolve, reject) => {
    const w: Waiter = { resolve, reject, timer: undefined };
    try {
      p.add(fd, events | EPOLLERR | EPOLLHUP | EPOLLONESHOT, fd);
    } catch (e) {
      reject(e as Error);
      return;
    }
    if (Number.isFinite(timeoutMs)) {
      // setTimeout takes at most 2^31-1 ms; longer waits re-arm until the deadline.
      const deadline = performance.now() + timeoutMs;
      const fire = (): void => {
        if (waiters.get(fd) !== w) return;
        const left = deadline - performance.now();
        if (left > 1) {
          w.timer = setTimeout(fire, Math.min(MAX_TIMER_MS, left));
          return;
        }
        waiters.delete(fd);
        p.remove(fd);
        // Let the outstanding wait return so an idle process is free to exit.
        if (waiters.size === 0) p.wake();
        reject(new TimeoutError(what, timeoutMs));
      };
      w.timer = setTimeout(fire, Math.min(MAX_TIMER_MS, Math.max(0, timeoutMs)));
    }
    waiters.set(fd, w);
    if (!looping) void loop(p);
  });
}
