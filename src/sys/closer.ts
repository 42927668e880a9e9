/**
 * Closing descriptors that peers sent and the broker does not keep, without ever blocking the
 * event loop.
 *
 * close(2) can block: the last close of a TCP socket with SO_LINGER waits until its send queue
 * drains or the linger time (chosen by the sender) ends; a file on FUSE or NFS flushes to a
 * server the sender may control; a tty drains its output. The one kind of descriptor whose close
 * never blocks and that the broker receives all the time is a memfd, recognised by F_GET_SEALS
 * (which only shmem and hugetlbfs files answer, without calling into any file system). Those are
 * closed at once; every other descriptor is closed on Deno's blocking pool, at most
 * {@link MAX_ASYNC_CLOSES} at a time (the pool has 32 threads and the broker's own epoll_wait
 * needs one), the rest queued in order.
 *
 * @module
 */

import { libc } from "../ffi.ts";
import { F_GET_SEALS } from "./linux.ts";

/** Closes run on the blocking pool at once, at most. */
export const MAX_ASYNC_CLOSES = 8;

let running = 0;
const queue: number[] = [];
let idle: (() => void)[] = [];

function pump(): void {
  while (running < MAX_ASYNC_CLOSES && queue.length > 0) {
    const fd = queue.shift() ?? -1;
    running++;
    void libc.symbols.close_async(fd).finally(() => {
      running--;
      pump();
      if (running === 0 && queue.length === 0) {
        const waiting = idle;
        idle = [];
        for (const done of waiting) done();
      }
    });
  }
}

/**
 * Close a descriptor received from a peer: a memfd at once, anything else off the event loop.
 *
 * @param fd the descriptor (ignored when negative); it must not be used afterwards
 */
export function closeDropped(fd: number): void {
  if (fd < 0) return;
  if (libc.symbols.fcntl(fd, F_GET_SEALS, 0) >= 0) {
    libc.symbols.close(fd);
    return;
  }
  queue.push(fd);
  pump();
}

/** {@link closeDropped} for each descriptor. */
export function closeAllDropped(fds: readonly number[]): void {
  for (const fd of fds) closeDropped(fd);
}

/** Descriptors waiting to be closed or being closed off the event loop. */
export function pendingCloses(): number {
  return running + queue.length;
}

/** Resolves once no close is pending (a broker waits for it when it stops). */
export function closesSettled(): Promise<void> {
  if (running === 0 && queue.length === 0) return Promise.resolve();
  return new Promise((resolve) => idle.push(resolve));
}
