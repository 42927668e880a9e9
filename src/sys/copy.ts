/**
 * Copying bytes between descriptors inside the kernel where possible: copy_file_range(2) first,
 * then sendfile(2), then a read/write loop through one reused buffer.
 *
 * @module
 */

import { errno, errnoErrorOf, libc } from "../ffi.ts";
import { EAGAIN, EBADF, EINTR, EINVAL, ENOSYS, EOPNOTSUPP, EXDEV } from "./linux.ts";

/**
 * How a copy labels its failures (the first word of `"<what>: <strerror>"`).
 *
 * @example
 * ```ts
 * import { FileDescriptor, Memfd } from "@memfdbus/memfdbus";
 * using src = FileDescriptor.open("/etc/hostname");
 * using memfd = Memfd.create("copy");
 * memfd.copyFrom(src.fd, undefined, { read: "read hostname", write: "write copy" });
 * ```
 */
export interface CopyLabels {
  /** Label for a failing read, e.g. `read input`. */
  readonly read: string;
  /** Label for a failing write, e.g. `write output`. */
  readonly write: string;
  /** Label for a failing copy_file_range other than the fallback errors. */
  readonly copyFileRange?: string;
}

/**
 * Which mechanism moved the bytes; reported for benchmarks and tests.
 *
 * @example
 * ```ts
 * import { type CopyMethod, FileDescriptor, Memfd } from "@memfdbus/memfdbus";
 * using src = FileDescriptor.open("/etc/hostname");
 * using memfd = Memfd.create("copy");
 * const method: CopyMethod = memfd.copyFrom(src.fd).method;
 * console.log(method === "read/write" ? "copied through user space" : `${method} in the kernel`);
 * ```
 */
export type CopyMethod = "copy_file_range" | "sendfile" | "read/write" | "none";

/**
 * The result of a copy (for example {@link Memfd.copyFrom}).
 *
 * @example
 * ```ts
 * import { FileDescriptor, Memfd } from "@memfdbus/memfdbus";
 * using src = FileDescriptor.open("/etc/hostname");
 * using memfd = Memfd.create("copy");
 * const { bytes, method } = memfd.copyFrom(src.fd);
 * console.log(bytes, method);
 * ```
 */
export interface CopyResult {
  /** Bytes copied. */
  readonly bytes: number;
  /** The mechanism that moved the last bytes. */
  readonly method: CopyMethod;
}

const CHUNK = 1 << 20;
const BIG_CHUNK = 1 << 30;
let scratch: Uint8Array | null = null;

/** Errors after which copy_file_range or sendfile is abandoned for the next mechanism. */
function isFallbackErrno(e: number): boolean {
  return e === ENOSYS || e === EXDEV || e === EINVAL || e === EOPNOTSUPP || e === EBADF;
}

/**
 * Copy from `src` to `dst`, `length` bytes or until end of file when `length` is undefined.
 * Reads start at `srcOffset` when given (the source's file offset is then left alone), else at
 * the source's current offset; writes go to the destination's current offset. Returns what was
 * copied. Both descriptors must be blocking.
 *
 * copy_file_range is tried only when `regularBoth` says both ends are regular files; EBADF from
 * it (an O_APPEND destination) falls back instead of failing, unlike the C CLI (defect D14).
 */
export function copyFd(
  src: number,
  dst: number,
  length: number | undefined,
  labels: CopyLabels,
  regularBoth = false,
  srcOffset?: number,
): CopyResult {
  let done = 0;
  // With an explicit offset the kernel advances this cell instead of the file offset.
  const offCell = srcOffset === undefined ? null : new BigInt64Array([BigInt(srcOffset)]);
  const offPtr = offCell === null ? null : new Uint8Array(offCell.buffer);
  let method: CopyMethod = "none";
  const want = (): number => length === undefined ? BIG_CHUNK : Math.min(BIG_CHUNK, length - done);
  const finished = (): boolean => length !== undefined && done >= length;

  if (regularBoth && libc.symbols.copy_file_range !== null) {
    while (!finished()) {
      const n = libc.symbols.copy_file_range(src, offPtr, dst, null, BigInt(want()), 0);
      if (n > 0) {
        done += Number(n);
        method = "copy_file_range";
        continue;
      }
      if (n === 0n) return { bytes: done, method };
      const e = errno();
      if (e === EINTR) continue;
      if (isFallbackErrno(e)) break;
      throw errnoErrorOf("copy_file_range", e, labels.copyFileRange ?? "copy_file_range");
    }
  }

  while (!finished()) {
    const n = libc.symbols.sendfile(dst, src, offPtr, BigInt(want()));
    if (n > 0) {
      done += Number(n);
      method = "sendfile";
      continue;
    }
    if (n === 0n) return { bytes: done, method };
    const e = errno();
    if (e === EINTR) continue;
    if (isFallbackErrno(e) || e === EAGAIN) break;
    // sendfile cannot tell which side failed; report it as a write, the usual culprit.
    throw errnoErrorOf("sendfile", e, labels.write);
  }

  scratch ??= new Uint8Array(CHUNK);
  const buf = scratch;
  while (!finished()) {
    const ask = length === undefined ? CHUNK : Math.min(CHUNK, length - done);
    const view = ask === CHUNK ? buf : buf.subarray(0, ask);
    const n = offCell === null
      ? libc.symbols.read(src, view, BigInt(ask))
      : libc.symbols.pread(src, view, BigInt(ask), offCell[0] ?? 0n);
    if (n < 0) {
      const e = errno();
      if (e === EINTR) continue;
      throw errnoErrorOf("read", e, labels.read);
    }
    if (n === 0n) break;
    let off = 0;
    const got = Number(n);
    while (off < got) {
      const w = libc.symbols.write(dst, view.subarray(off, got), BigInt(got - off));
      if (w < 0) {
        const e = errno();
        if (e === EINTR) continue;
        throw errnoErrorOf("write", e, labels.write);
      }
      off += Number(w);
    }
    done += got;
    if (offCell !== null) offCell[0] = (offCell[0] ?? 0n) + BigInt(got);
    method = "read/write";
  }
  return { bytes: done, method };
}
