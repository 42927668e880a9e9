/**
 * Writing command output: plain lines to stdout and stderr, JSON results, and an object's bytes
 * to a file or to stdout without leaving a partial file behind (defect D24).
 *
 * @module
 */

import { copyFd } from "../sys/copy.ts";
import { closeQuietly, cstr, lastError, libc } from "../ffi.ts";
import { isRegular, tryFstat, tryLstat } from "../sys/fd.ts";
import { ENOENT, O_CLOEXEC, O_CREAT, O_EXCL, O_TRUNC, O_WRONLY, S_IFMT } from "../sys/linux.ts";
import { PROGRESS_STEP_BYTES } from "./progress.ts";

const encoder = new TextEncoder();

function writeFd(fd: number, text: string): void {
  const bytes = encoder.encode(text);
  let off = 0;
  while (off < bytes.length) {
    const n = fd === 1
      ? Deno.stdout.writeSync(bytes.subarray(off))
      : Deno.stderr.writeSync(bytes.subarray(off));
    off += n;
  }
}

/** Print to stdout. */
export function out(text: string): void {
  writeFd(1, text);
}

/** Print to stderr. */
export function err(text: string): void {
  writeFd(2, text);
}

/**
 * One JSON value on one line. BigInts (object ids) become JSON numbers when they are at most
 * 2^53-1, where every JSON reader keeps them exact, and decimal strings beyond that.
 */
export function jsonLine(value: unknown): string {
  return `${
    JSON.stringify(value, (_key, v: unknown) =>
      typeof v === "bigint" ? (v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : String(v)) : v)
  }\n`;
}

/** Called with the bytes copied so far while an object is written. */
export type OnProgress = (done: number) => void;

/** S_IFLNK */
const S_IFLNK = 0o120000;

/**
 * Copy `size` bytes of `src` (from offset 0) to `path`, or to stdout for `-`.
 *
 * A regular (or not yet existing) output file is written under a temporary name in the same
 * directory and renamed into place only once complete, so an error never leaves a truncated
 * OUT. Other outputs (a FIFO, /dev/null, a terminal) are written directly.
 *
 * With `onProgress`, the copy runs in steps of {@link PROGRESS_STEP_BYTES} and reports after each.
 */
export function writeObject(
  src: number,
  size: number,
  path: string,
  onProgress?: OnProgress,
): void {
  if (path === "-") {
    copyExact(src, 1, size, onProgress);
    return;
  }
  let target = path;
  const l = tryLstat(path);
  if (typeof l !== "number" && (l.mode & S_IFMT) === S_IFLNK) {
    try {
      target = Deno.realPathSync(path);
    } catch {
      // A dangling link: let open() create its target, as the C CLI would.
      writeDirect(src, size, path, onProgress);
      return;
    }
  }
  const st = tryLstat(target);
  if (typeof st === "number" ? st !== -ENOENT : !isRegular(st.mode)) {
    writeDirect(src, size, target, onProgress);
    return;
  }
  const slash = target.lastIndexOf("/");
  const dir = slash < 0 ? "." : slash === 0 ? "/" : target.slice(0, slash);
  const base = target.slice(slash + 1);
  const tmp = `${dir}/.${base}.memfdbus-${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`;
  const fd = libc.symbols.open(cstr(tmp), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o666);
  if (fd < 0) {
    // No room for a temporary file next to OUT (for example a read-only directory holding a
    // writable file): write in place.
    writeDirect(src, size, target, onProgress);
    return;
  }
  try {
    if (typeof st !== "number") libc.symbols.fchmod(fd, st.mode & 0o7777);
    copyExact(src, fd, size, onProgress);
    if (libc.symbols.rename(cstr(tmp), cstr(target)) < 0) {
      throw lastError("rename", "rename output");
    }
  } catch (e) {
    libc.symbols.unlink(cstr(tmp));
    throw e;
  } finally {
    closeQuietly(fd);
  }
}

function writeDirect(src: number, size: number, path: string, onProgress?: OnProgress): void {
  const fd = libc.symbols.open(cstr(path), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o666);
  if (fd < 0) throw lastError("open", "open output");
  try {
    copyExact(src, fd, size, onProgress);
  } finally {
    closeQuietly(fd);
  }
}

const GET_LABELS = {
  read: "read memfd",
  write: "write output",
  copyFileRange: "copy_file_range",
} as const;

function copyExact(src: number, dst: number, size: number, onProgress?: OnProgress): void {
  const s = tryFstat(dst);
  const regular = typeof s !== "number" && isRegular(s.mode);
  if (onProgress === undefined) {
    const r = copyFd(src, dst, size, GET_LABELS, regular, 0);
    if (r.bytes < size) throw new Error("unexpected EOF from memfd");
    return;
  }
  let done = 0;
  while (done < size) {
    const step = Math.min(PROGRESS_STEP_BYTES, size - done);
    const r = copyFd(src, dst, step, GET_LABELS, regular, done);
    done += r.bytes;
    if (r.bytes < step) throw new Error("unexpected EOF from memfd");
    onProgress(done);
  }
}
