/**
 * Thin wrappers over the path and descriptor calls the CLI makes on files: open, rename,
 * unlink, fchmod and dup. Failures throw {@link ErrnoError} (`"<context>: <strerror>"`) unless
 * the function says otherwise.
 *
 * @module
 */

import type { ErrnoError } from "../errors.ts";
import { cstr, errno, errnoErrorOf, lastError, libc } from "../ffi.ts";
import { F_DUPFD_CLOEXEC } from "./linux.ts";

/**
 * open(2) `path` with `flags` (O_CLOEXEC is the caller's to add) and `mode`; returns the
 * descriptor or throws `"<context>: <strerror>"`.
 */
export function openPath(path: string, flags: number, mode: number, context = "open"): number {
  const fd = libc.symbols.open(cstr(path), flags, mode);
  if (fd < 0) throw lastError("open", context);
  return fd;
}

/** open(2) that returns the descriptor, or the negative errno on failure. */
export function tryOpenPath(path: string, flags: number, mode: number): number {
  const fd = libc.symbols.open(cstr(path), flags, mode);
  return fd < 0 ? -errno() : fd;
}

/** rename(2); throws `"<context>: <strerror>"`. */
export function renamePath(from: string, to: string, context = "rename"): void {
  if (libc.symbols.rename(cstr(from), cstr(to)) < 0) throw lastError("rename", context);
}

/** unlink(2), ignoring failure (used to clean up). Returns 0 or the negative errno. */
export function unlinkQuietly(path: string): number {
  return libc.symbols.unlink(cstr(path)) < 0 ? -errno() : 0;
}

/** fchmod(2); returns 0 or the negative errno (a copied mode is a nicety, not a must). */
export function tryFchmod(fd: number, mode: number): number {
  return libc.symbols.fchmod(fd, mode) < 0 ? -errno() : 0;
}

/** dup(2) with close-on-exec set on the copy (F_DUPFD_CLOEXEC); throws `"<context>: ..."`. */
export function dupCloexec(fd: number, context = "dup"): number {
  const r = libc.symbols.fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (r < 0) throw lastError("fcntl", context);
  return r;
}

/** An {@link ErrnoError} for `errno` (negative or positive) with the given context. */
export function errnoError(syscall: string, code: number, context?: string): ErrnoError {
  return errnoErrorOf(syscall, Math.abs(code), context);
}
