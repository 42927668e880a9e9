/**
 * The descriptor work request handlers ask the broker for (they make no system calls): checking a
 * PUT's sealed memfd, reading a stored object's seals, reopening an object for a consumer, and
 * releasing a dropped object's descriptor.
 *
 * @module
 */

import type { SealedCheck } from "../core/handlers.ts";
import { cachesOf, type StoredObject } from "../core/store.ts";
import { closeQuietly, cstr, strerror } from "../ffi.ts";
import { tryDup, tryOpen, tryOpenAt, trySeals } from "../sys/fd.ts";
import { O_DIRECTORY, O_RDONLY, O_RDWR } from "../sys/linux.ts";
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
    const caches = cachesOf(obj);
    let path = caches.fdPath;
    if (path === null) {
      path = cstr(String(obj.fd));
      caches.fdPath = path;
    }
    return tryOpenAt(this.#procDirFd, path, this.#readOnly ? O_RDONLY : O_RDWR);
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
