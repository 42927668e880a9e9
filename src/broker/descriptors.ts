/**
 * The descriptor work request handlers ask the broker for (they make no system calls): checking a
 * PUT's sealed memfd, reading a stored object's seals, reopening an object for a consumer, and
 * releasing a dropped object's descriptor.
 *
 * @module
 */

import type { SealedCheck } from "../core/handlers.ts";
import type { StoredObject } from "../core/store.ts";
import { closeQuietly, strerror } from "../ffi.ts";
import { tryDup, tryOpen, tryOpenAt, trySeals } from "../sys/fd.ts";
import { ENOENT, O_DIRECTORY, O_RDONLY, O_RDWR } from "../sys/linux.ts";
import { inspectSealedFd, isFdProblem } from "../sys/memfd.ts";
import { fdRejectionText } from "../protocol/fd_problem.ts";
import type { ObjectEvents } from "./events.ts";

/** Check that `fd` is a sealed memfd of `size` bytes, with the broker's wording of a problem. */
export function checkSealedFd(fd: number, size: bigint): SealedCheck {
  const info = inspectSealedFd(fd, size);
  return isFdProblem(info) ? { problem: fdRejectionText(info, size, strerror) } : info;
}

/** The seal bits of a stored object's descriptor, or a negated errno. */
export function sealsOf(obj: StoredObject): number {
  return trySeals(obj.fd);
}

// The name of a descriptor in /proc/self/fd, NUL-terminated, written into one reused buffer
// (a fresh C string per GET cost an encoder call and a typed array).
const fdNameBuf = new Uint8Array(16);

function fdName(fd: number): Uint8Array<ArrayBuffer> {
  let n = fd;
  let len = 1;
  while (n >= 10) {
    n = Math.floor(n / 10);
    len++;
  }
  n = fd;
  for (let i = len - 1; i >= 0; i--) {
    fdNameBuf[i] = 0x30 + (n % 10);
    n = Math.floor(n / 10);
  }
  fdNameBuf[len] = 0;
  return fdNameBuf;
}

/** Descriptor services of one broker; owns a descriptor of /proc/self/fd. */
export class ObjectDescriptors {
  readonly #procDirFd: number;
  readonly #readOnly: boolean;
  readonly #events: ObjectEvents;

  /**
   * @param readOnly hand consumers O_RDONLY descriptors (--read-only-fds)
   * @param events where releases are announced
   */
  constructor(readOnly: boolean, events: ObjectEvents) {
    this.#readOnly = readOnly;
    this.#events = events;
    this.#procDirFd = tryOpen("/proc/self/fd", O_RDONLY | O_DIRECTORY);
  }

  /**
   * A fresh descriptor for a consumer: a new open file description of the same memfd (its own
   * offset), by opening /proc/self/fd/N relative to a held directory descriptor. O_RDWR like the
   * C broker (the seals refuse writes with EPERM, which C programs check), or O_RDONLY with
   * --read-only-fds. Without /proc it falls back to a duplicate, which shares the file offset.
   * Returns the descriptor or a negated errno.
   */
  reopen(obj: StoredObject): number {
    if (this.#procDirFd < 0) return tryDup(obj.fd);
    // No such name in /proc/self/fd (an object without a descriptor, in tests).
    if (obj.fd < 0) return -ENOENT;
    return tryOpenAt(this.#procDirFd, fdName(obj.fd), this.#readOnly ? O_RDONLY : O_RDWR);
  }

  /** Close the broker's descriptor of an object that left the store. */
  release(obj: StoredObject): void {
    closeQuietly(obj.fd);
    this.#events.emit("release", obj);
  }

  /** Close the /proc/self/fd descriptor. */
  close(): void {
    closeQuietly(this.#procDirFd);
  }
}
