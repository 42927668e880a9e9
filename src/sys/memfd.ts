/**
 * Anonymous memory-backed files (memfd_create(2)) with file sealing, usable on their own.
 *
 * @example Publishing-ready memfd: write once, seal, map
 * ```ts
 * import { Memfd, Seal } from "@memfdbus/memfdbus";
 * using memfd = Memfd.create("greeting");
 * memfd.writeAll(new TextEncoder().encode("hello"));
 * memfd.seal();
 * console.log(memfd.seals() & Seal.WRITE ? "immutable" : "writable");
 * using map = memfd.map();
 * console.log(new TextDecoder().decode(map.bytes)); // "hello"
 * ```
 *
 * @module
 */

import { copyFd, type CopyLabels, type CopyResult } from "./copy.ts";
import { check, checkBig, cstr, errno, lastError, libc } from "../ffi.ts";
import { fstat, isRegular, seek, tryFstat, tryFstatCached, trySeals, writeAll } from "./fd.ts";
import {
  EBADF,
  EINVAL,
  ENOSYS,
  F_ADD_SEALS,
  F_GET_SEALS,
  F_SEAL_FUTURE_WRITE,
  F_SEAL_GROW,
  F_SEAL_SEAL,
  F_SEAL_SHRINK,
  F_SEAL_WRITE,
  MFD_ALLOW_SEALING,
  MFD_CLOEXEC,
  MFD_HUGETLB,
  MFD_NOEXEC_SEAL,
  SEALS_IMMUTABLE,
  SEEK_SET,
  SYS_memfd_create,
} from "./linux.ts";
import { ReadOnlyMapping } from "./mapping.ts";
import type { FdProblem } from "../errors.ts";

/**
 * File seals (fcntl(2) F_ADD_SEALS). Combine them with `|`.
 *
 * @example A file that may still be appended to, but never shrink
 * ```ts
 * import { Memfd, Seal } from "@memfdbus/memfdbus";
 * using memfd = Memfd.create("log");
 * memfd.addSeals(Seal.SHRINK);
 * console.log((memfd.seals() & Seal.SHRINK) !== 0, (memfd.seals() & Seal.IMMUTABLE) === Seal.IMMUTABLE); // true false
 * ```
 */
export const Seal = {
  /** No more seals can be added. */
  SEAL: F_SEAL_SEAL,
  /** The file cannot shrink. */
  SHRINK: F_SEAL_SHRINK,
  /** The file cannot grow. */
  GROW: F_SEAL_GROW,
  /** The contents cannot change, not even through existing shared mappings. */
  WRITE: F_SEAL_WRITE,
  /** No new writable access; existing writable mappings keep working (Linux 5.1+). */
  FUTURE_WRITE: F_SEAL_FUTURE_WRITE,
  /** The four seals memfdbus requires of a published object. */
  IMMUTABLE: SEALS_IMMUTABLE,
} as const;

/**
 * Options for {@link Memfd.create}.
 *
 * @example Non-executable where the kernel supports it
 * ```ts
 * import { Memfd } from "@memfdbus/memfdbus";
 * using memfd = Memfd.create("data", { noexecSeal: "auto", closeOnExec: true });
 * console.log(memfd.size); // 0
 * ```
 */
export interface MemfdOptions {
  /** Set close-on-exec (default true). */
  readonly closeOnExec?: boolean;
  /** Allow adding seals (default true). */
  readonly allowSealing?: boolean;
  /** Back the file with huge pages (the size must then be a multiple of the huge page size). */
  readonly hugetlb?: boolean;
  /**
   * Create it non-executable with the exec seal set (MFD_NOEXEC_SEAL, Linux 6.3+).
   * `"auto"` uses it where the kernel has it and quietly omits it elsewhere; the default is false.
   */
  readonly noexecSeal?: boolean | "auto";
}

/**
 * The bytes memfd_create(2) accepts in a name, excluding the terminating NUL. Longer names are
 * cut to fit (the name is only a label in /proc).
 *
 * @example
 * ```ts
 * import { Memfd, MEMFD_NAME_MAX } from "@memfdbus/memfdbus";
 * using memfd = Memfd.create("n".repeat(MEMFD_NAME_MAX + 10)); // no error: the label is cut
 * console.log(MEMFD_NAME_MAX); // 249
 * ```
 */
export const MEMFD_NAME_MAX = 249;

let wrapperMissing = libc.symbols.memfd_create === null;

function memfdCreateRaw(name: Uint8Array, flags: number): number {
  if (!wrapperMissing) {
    const create = libc.symbols.memfd_create;
    if (create !== null) {
      const fd = create(name, flags);
      if (fd >= 0 || errno() !== ENOSYS) return fd;
    }
    wrapperMissing = true;
  }
  return Number(libc.symbols.syscall_memfd_create(SYS_memfd_create, name, flags));
}

/**
 * Truncate a memfd name to what memfd_create accepts, on a UTF-8 character boundary. The name is
 * only a debugging label (it shows in /proc/PID/fd), so any logical name can be published
 * (defect D13 of the C client).
 */
export function memfdLabel(name: string | Uint8Array): Uint8Array {
  const bytes = typeof name === "string" ? new TextEncoder().encode(name) : name;
  let end = Math.min(bytes.length, MEMFD_NAME_MAX);
  const nul = bytes.indexOf(0);
  if (nul >= 0 && nul < end) end = nul;
  if (end < bytes.length) {
    // Step back over UTF-8 continuation bytes so the label stays valid text.
    while (end > 0 && ((bytes[end] ?? 0) & 0xc0) === 0x80) end--;
  }
  return bytes.subarray(0, end);
}

/** Why a descriptor failed {@link inspectSealedFd} (defined with its wording in the protocol). */
export type { FdProblem };

/**
 * What {@link inspectSealedFd} learned about an acceptable descriptor.
 *
 * @example
 * ```ts
 * import { inspectSealedFd, isFdProblem, Memfd } from "@memfdbus/memfdbus";
 * using memfd = Memfd.create("ok");
 * memfd.writeAll(new Uint8Array(10));
 * memfd.seal();
 * const info = inspectSealedFd(memfd.fd, 10n);
 * if (!isFdProblem(info)) console.log(info.size, info.seals); // 10n 15
 * ```
 */
export interface SealedFdInfo {
  /** The file size. */
  readonly size: bigint;
  /** Its seals (at least {@link Seal.IMMUTABLE}). */
  readonly seals: number;
}

/**
 * Check that a descriptor is a regular file of `expectedSize` bytes (when given) carrying all four
 * immutability seals. The checks run in the order of the C broker and library: fstat, type, size,
 * F_GET_SEALS, seal bits. Returns the problem instead of throwing so callers can word it.
 *
 * @example Checking a descriptor before publishing it
 * ```ts
 * import { describeFdProblem, inspectSealedFd, isFdProblem, Memfd } from "@memfdbus/memfdbus";
 * using memfd = Memfd.create("blob");
 * memfd.writeAll(new Uint8Array(4));
 * const r = inspectSealedFd(memfd.fd, 4n);
 * console.log(isFdProblem(r) ? describeFdProblem(r, 4n) : "ready"); // fd is not fully immutable-sealed
 * ```
 */
export function inspectSealedFd(
  fd: number,
  expectedSize?: bigint,
): SealedFdInfo | FdProblem {
  if (fd < 0) return { kind: "bad-fd" };
  // F_GET_SEALS first: it answers at once for any descriptor (EINVAL for what is not a memfd),
  // where fstat of a FUSE or network file may wait for its server. A memfd's fstat never blocks;
  // anything else is looked at through the kernel's cached attributes only, to word the same
  // problem as before (not a regular file, size mismatch, F_GET_SEALS failed).
  const seals = trySeals(fd);
  const st = seals < 0 ? tryFstatCached(fd) : tryFstat(fd);
  if (typeof st === "number") {
    return st === -EBADF ? { kind: "bad-fd" } : { kind: "fstat", errno: -st };
  }
  if (!isRegular(st.mode)) return { kind: "not-regular" };
  if (expectedSize !== undefined && st.size !== expectedSize) {
    return { kind: "size", actual: st.size };
  }
  if (seals < 0) return { kind: "get-seals", errno: -seals };
  if ((seals & SEALS_IMMUTABLE) !== SEALS_IMMUTABLE) return { kind: "seals", seals };
  return { size: st.size, seals };
}

/**
 * Type guard for the failure side of {@link inspectSealedFd}.
 *
 * @example
 * ```ts
 * import { inspectSealedFd, isFdProblem } from "@memfdbus/memfdbus";
 * console.log(isFdProblem(inspectSealedFd(-1))); // true: { kind: "bad-fd" }
 * ```
 */
export function isFdProblem(r: SealedFdInfo | FdProblem): r is FdProblem {
  return "kind" in r;
}

/**
 * An owned memfd. Closing it (or leaving a `using` scope) closes the descriptor; mappings made
 * from it stay valid until they are closed themselves.
 *
 * @example Copying a file into a sealed memfd
 * ```ts
 * import { FileDescriptor, Memfd } from "@memfdbus/memfdbus";
 * using src = FileDescriptor.open("/etc/hostname");
 * using memfd = Memfd.create("hostname");
 * memfd.copyFrom(src.fd);
 * memfd.seal();
 * console.log(memfd.size);
 * ```
 */
export class Memfd implements Disposable {
  #fd: number;

  private constructor(fd: number) {
    this.#fd = fd;
  }

  /**
   * Create a memfd.
   *
   * @example
   * ```ts
   * import { Memfd } from "@memfdbus/memfdbus";
   * using memfd = Memfd.create("model.bin"); // shows as /memfd:model.bin in /proc/PID/fd
   * console.log(memfd.fd >= 0, memfd.size); // true 0
   * ```
   *
   * @param name a label shown in /proc (cut to 249 bytes; it does not need to be unique)
   * @param options creation flags; sealing is allowed and close-on-exec set by default
   */
  static create(name: string | Uint8Array = "memfdbus", options: MemfdOptions = {}): Memfd {
    let flags = 0;
    if (options.closeOnExec ?? true) flags |= MFD_CLOEXEC;
    if (options.allowSealing ?? true) flags |= MFD_ALLOW_SEALING;
    if (options.hugetlb ?? false) flags |= MFD_HUGETLB;
    const noexec = options.noexecSeal ?? false;
    const label = cstr(memfdLabel(name));
    let fd = memfdCreateRaw(label, noexec === false ? flags : flags | MFD_NOEXEC_SEAL);
    if (fd < 0 && noexec === "auto" && errno() === EINVAL) fd = memfdCreateRaw(label, flags);
    if (fd < 0) throw lastError("memfd_create");
    return new Memfd(fd);
  }

  /**
   * Adopt an existing descriptor (for example one received from the broker). The Memfd closes it.
   *
   * @example
   * ```ts
   * import { Memfd } from "@memfdbus/memfdbus";
   * const raw = Memfd.create("raw").release(); // a bare descriptor number
   * using memfd = Memfd.adopt(raw); // closed again at the end of the scope
   * console.log(memfd.fd === raw); // true
   * ```
   *
   * @param fd an open descriptor of a memfd
   */
  static adopt(fd: number): Memfd {
    if (!Number.isInteger(fd) || fd < 0) throw new RangeError(`Invalid descriptor "${fd}"`);
    return new Memfd(fd);
  }

  /** The descriptor number; throws once closed. */
  get fd(): number {
    if (this.#fd < 0) throw new TypeError("Memfd is closed");
    return this.#fd;
  }

  /** True once closed or released. */
  get closed(): boolean {
    return this.#fd < 0;
  }

  /**
   * The current size in bytes.
   *
   * @example
   * ```ts
   * import { Memfd } from "@memfdbus/memfdbus";
   * using memfd = Memfd.create("x");
   * memfd.writeAll(new Uint8Array(3));
   * console.log(memfd.size); // 3
   * ```
   */
  get size(): number {
    return Number(fstat(this.fd).size);
  }

  /**
   * Write all of `bytes` at the current offset.
   *
   * @example
   * ```ts
   * import { Memfd } from "@memfdbus/memfdbus";
   * using memfd = Memfd.create("parts");
   * memfd.writeAll(new TextEncoder().encode("head,"));
   * memfd.writeAll(new TextEncoder().encode("tail"));
   * console.log(memfd.size); // 9
   * ```
   */
  writeAll(bytes: Uint8Array): void {
    writeAll(this.fd, bytes, "write memfd");
  }

  /**
   * Copy from another descriptor, at its current offset, until end of file or `length` bytes.
   * Uses copy_file_range where both ends allow it, then sendfile, then read/write.
   *
   * @example Copying a file in the kernel
   * ```ts
   * import { FileDescriptor, Memfd } from "@memfdbus/memfdbus";
   * using src = FileDescriptor.open("/etc/hostname");
   * using memfd = Memfd.create("hostname");
   * const { bytes, method } = memfd.copyFrom(src.fd);
   * console.log(bytes === memfd.size, method); // true, and how: copy_file_range, sendfile...
   * ```
   *
   * @param src the source descriptor (blocking)
   * @param length bytes to copy; everything up to end of file when omitted
   * @param labels how failures are worded
   * @param srcOffset read from this offset without moving the source's file offset
   */
  copyFrom(
    src: number,
    length?: number,
    labels: CopyLabels = { read: "read input", write: "write memfd" },
    srcOffset?: number,
  ): CopyResult {
    const st = fstat(src, "fstat input");
    return copyFd(src, this.fd, length, labels, isRegular(st.mode), srcOffset);
  }

  /**
   * Set the file size (ftruncate); new bytes read as zeros.
   *
   * @example One MiB of zeros without writing them
   * ```ts
   * import { Memfd } from "@memfdbus/memfdbus";
   * using memfd = Memfd.create("zeros");
   * memfd.truncate(1 << 20);
   * memfd.seal();
   * console.log(memfd.size); // 1048576
   * ```
   */
  truncate(size: number): void {
    check(libc.symbols.ftruncate(this.fd, BigInt(size)), "ftruncate");
  }

  /**
   * Move the file offset (lseek); returns the new offset.
   *
   * @example Overwriting the start
   * ```ts
   * import { Memfd } from "@memfdbus/memfdbus";
   * using memfd = Memfd.create("patch");
   * memfd.writeAll(new TextEncoder().encode("hello"));
   * memfd.seek(0);
   * memfd.writeAll(new TextEncoder().encode("J"));
   * memfd.seal();
   * using map = memfd.map();
   * console.log(new TextDecoder().decode(map.bytes)); // "Jello"
   * ```
   */
  seek(offset: number): number {
    return seek(this.fd, offset, SEEK_SET, "lseek memfd");
  }

  /**
   * Add seals, for example `Seal.WRITE | Seal.SHRINK`.
   *
   * @example
   * ```ts
   * import { Memfd, Seal } from "@memfdbus/memfdbus";
   * using memfd = Memfd.create("fixed-size");
   * memfd.truncate(4096);
   * memfd.addSeals(Seal.GROW | Seal.SHRINK); // contents may change, the size may not
   * console.log(memfd.seals() === (Seal.GROW | Seal.SHRINK)); // true
   * ```
   */
  addSeals(seals: number): void {
    const r = libc.symbols.fcntl(this.fd, F_ADD_SEALS, seals);
    if (r < 0) throw lastError("fcntl", "F_ADD_SEALS");
  }

  /**
   * The current seal bits.
   *
   * @example
   * ```ts
   * import { Memfd, Seal } from "@memfdbus/memfdbus";
   * using memfd = Memfd.create("x");
   * console.log(memfd.seals()); // 0
   * memfd.seal();
   * console.log(memfd.seals() === Seal.IMMUTABLE); // true
   * ```
   */
  seals(): number {
    return check(libc.symbols.fcntl(this.fd, F_GET_SEALS, 0), "fcntl", "F_GET_SEALS");
  }

  /**
   * Make the memfd immutable: rewind and add SEAL, SHRINK, GROW and WRITE. This is what the
   * broker requires of a published object.
   *
   * @example
   * ```ts
   * import { Memfd } from "@memfdbus/memfdbus";
   * using memfd = Memfd.create("final");
   * memfd.writeAll(new Uint8Array([1]));
   * memfd.seal();
   * try {
   *   memfd.writeAll(new Uint8Array([2]));
   * } catch (e) {
   *   console.log((e as Error).message); // write memfd: Operation not permitted
   * }
   * ```
   */
  seal(): void {
    this.seek(0);
    this.addSeals(SEALS_IMMUTABLE);
  }

  /**
   * Map the whole file read-only. The file must carry F_SEAL_SHRINK (so the mapping can never
   * fault with SIGBUS) unless `allowUnsealed` is set.
   *
   * @example
   * ```ts
   * import { Memfd } from "@memfdbus/memfdbus";
   * using memfd = Memfd.create("table");
   * memfd.writeAll(new Uint8Array([3, 1, 2]));
   * memfd.seal();
   * using map = memfd.map();
   * console.log(Math.max(...map.bytes)); // 3
   * ```
   *
   * @param allowUnsealed map even without the shrink seal
   */
  map(allowUnsealed = false): ReadOnlyMapping {
    const fd = this.fd;
    if (!allowUnsealed && (this.seals() & F_SEAL_SHRINK) === 0) {
      throw new TypeError("Refusing to map a memfd without F_SEAL_SHRINK");
    }
    return ReadOnlyMapping.of(fd, this.size);
  }

  /**
   * Give up ownership and return the raw descriptor; the caller must close it.
   *
   * @example Handing the descriptor to an owner that closes it
   * ```ts
   * import { FileDescriptor, Memfd } from "@memfdbus/memfdbus";
   * const memfd = Memfd.create("handoff");
   * using owned = new FileDescriptor(memfd.release());
   * console.log(memfd.closed, owned.stat().size); // true 0n
   * ```
   */
  release(): number {
    const fd = this.fd;
    this.#fd = -1;
    return fd;
  }

  /**
   * Close the descriptor. Safe to call more than once; mappings made from it stay valid.
   *
   * @example
   * ```ts
   * import { Memfd } from "@memfdbus/memfdbus";
   * const memfd = Memfd.create("x");
   * memfd.seal();
   * using map = memfd.map();
   * memfd.close();
   * console.log(memfd.closed, map.length); // true 0
   * ```
   */
  close(): void {
    const fd = this.#fd;
    if (fd < 0) return;
    this.#fd = -1;
    libc.symbols.close(fd);
  }

  /** Same as {@link Memfd.close}. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/**
 * The current seal bits of any descriptor (F_GET_SEALS); throws ErrnoError (EINVAL) for a
 * descriptor that cannot be sealed, such as a regular file on disk.
 *
 * @example
 * ```ts
 * import { getSeals, Memfd, Seal } from "@memfdbus/memfdbus";
 * using memfd = Memfd.create("x");
 * memfd.seal();
 * console.log(getSeals(memfd.fd) === Seal.IMMUTABLE); // true
 * ```
 */
export function getSeals(fd: number): number {
  return checkBig(libc.symbols.fcntl(fd, F_GET_SEALS, 0), "fcntl", "F_GET_SEALS");
}
