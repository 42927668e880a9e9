/**
 * Writing command output: plain lines to stdout and stderr, JSON results, and an object's bytes
 * to a file or to stdout without leaving a partial file behind (defect D24).
 *
 * @module
 */

import { ErrnoError } from "../errors.ts";
import { copyFd } from "../sys/copy.ts";
import { closeQuietly } from "../ffi.ts";
import { isRegular, tryFstat, tryLstat } from "../sys/fd.ts";
import { openPath, renamePath, tryFchmod, tryOpenPath, unlinkQuietly } from "../sys/file.ts";
import { Interrupted } from "./exit.ts";
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

/**
 * `s` with its control characters (U+0000-U+001F, U+007F-U+009F) written as `\xHH` (or
 * `\u00HH` past 0x7f), except those in `keep`: names and job ids from a C broker, which accepts
 * any bytes, cannot move the cursor, recolour or retitle the terminal that shows them.
 */
export function escapeControls(s: string, keep = ""): string {
  // deno-lint-ignore no-control-regex
  return s.replace(/[\u0000-\u001f\u007f-\u009f]/g, (c) => {
    if (keep.includes(c)) return c;
    const code = c.charCodeAt(0);
    return code < 0x80 ? `\\x${code.toString(16).padStart(2, "0")}` : `\\u00${code.toString(16)}`;
  });
}

/** Called with the bytes copied so far while an object is written. */
export type OnProgress = (done: number) => void;

/** What {@link writeObject} needs besides the object and the path. */
export interface WriteOptions {
  /** Called after each step with the bytes copied so far. */
  readonly onProgress?: OnProgress | undefined;
  /**
   * Signals that stop a write through a temporary file: while one is under way they are caught,
   * and the next step removes the file and throws {@link Interrupted}. Other outputs (stdout, a
   * pipe, a FIFO, a terminal) leave nothing to clean up, and a write to a pipe nobody reads
   * blocks this thread, where no handler could run: there the signals keep their default
   * action and end the process at once.
   */
  readonly stopSignals?: readonly Deno.Signal[];
}

/** Catch `signals` until the returned function is called; `first()` names the first caught. */
function catchSignals(
  signals: readonly Deno.Signal[],
): { first: () => string | null; release: () => void } {
  let caught: string | null = null;
  const listeners = signals.map((sig) => {
    const fn = (): void => {
      caught ??= sig;
    };
    Deno.addSignalListener(sig, fn);
    return [sig, fn] as const;
  });
  return {
    first: () => caught,
    release: () => {
      for (const [sig, fn] of listeners) Deno.removeSignalListener(sig, fn);
    },
  };
}

/** S_IFLNK */
const S_IFLNK = 0o120000;

/** Bytes copied between two looks at {@link WriteOptions.interrupted}. */
const STEP_BYTES = PROGRESS_STEP_BYTES;

/**
 * Copy `size` bytes of `src` (from offset 0) to `path`, or to stdout for `-`.
 *
 * A regular (or not yet existing) output file is written under a temporary name in the same
 * directory and renamed into place only once complete, so an error or an interruption never
 * leaves a truncated OUT nor the temporary file. Other outputs (a FIFO, /dev/null, a terminal)
 * are written directly. The copy runs in steps of {@link PROGRESS_STEP_BYTES}, letting signal
 * handlers run between them; a closed output pipe (EPIPE) ends it with `Interrupted("SIGPIPE")`.
 */
export async function writeObject(
  src: number,
  size: number,
  path: string,
  options: WriteOptions = {},
): Promise<void> {
  if (path === "-") {
    await copyExact(src, 1, size, path, options.onProgress);
    return;
  }
  let target = path;
  const l = tryLstat(path);
  if (typeof l !== "number" && (l.mode & S_IFMT) === S_IFLNK) {
    try {
      target = Deno.realPathSync(path);
    } catch {
      // A dangling link: let open() create its target, as the C CLI would.
      await writeDirect(src, size, path, options);
      return;
    }
  }
  const st = tryLstat(target);
  if (typeof st === "number" ? st !== -ENOENT : !isRegular(st.mode)) {
    await writeDirect(src, size, target, options);
    return;
  }
  const slash = target.lastIndexOf("/");
  const dir = slash < 0 ? "." : slash === 0 ? "/" : target.slice(0, slash);
  const base = target.slice(slash + 1);
  const tmp = `${dir}/.${base}.memfdbus-${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`;
  // Caught from before the temporary file exists: a signal in between would leave it behind.
  const signals = catchSignals(options.stopSignals ?? []);
  const fd = tryOpenPath(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o666);
  if (fd < 0) {
    signals.release();
    const stop = signals.first();
    if (stop !== null) throw new Interrupted(stop);
    // No room for a temporary file next to OUT (for example a read-only directory holding a
    // writable file): write in place.
    await writeDirect(src, size, target, options);
    return;
  }
  try {
    if (typeof st !== "number") tryFchmod(fd, st.mode & 0o7777);
    await copyExact(src, fd, size, path, options.onProgress, signals.first);
    renamePath(tmp, target, `rename output: ${path}`);
  } catch (e) {
    unlinkQuietly(tmp);
    throw e;
  } finally {
    closeQuietly(fd);
    signals.release();
  }
}

async function writeDirect(
  src: number,
  size: number,
  path: string,
  options: WriteOptions,
): Promise<void> {
  const fd = openPath(
    path,
    O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
    0o666,
    `open output: ${path}`,
  );
  try {
    await copyExact(src, fd, size, path, options.onProgress);
  } finally {
    closeQuietly(fd);
  }
}

/** The copy's error contexts; a file's path is named in them (`write output: out.bin: ...`). */
function labelsFor(path: string): { read: string; write: string; copyFileRange: string } {
  const named = path === "-" ? "" : `: ${path}`;
  return {
    read: "read memfd",
    write: `write output${named}`,
    copyFileRange: `copy_file_range${named}`,
  };
}

/** Let pending signal handlers run. */
function turn(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

async function copyExact(
  src: number,
  dst: number,
  size: number,
  path: string,
  onProgress: OnProgress | undefined,
  interrupted: () => string | null = () => null,
): Promise<void> {
  const labels = labelsFor(path);
  const s = tryFstat(dst);
  const regular = typeof s !== "number" && isRegular(s.mode);
  let done = 0;
  while (done < size) {
    if (done > 0) await turn();
    const signal = interrupted();
    if (signal !== null) throw new Interrupted(signal);
    const step = Math.min(STEP_BYTES, size - done);
    let r;
    try {
      r = copyFd(src, dst, step, labels, regular, done);
    } catch (e) {
      if (e instanceof ErrnoError && e.code === "EPIPE") throw new Interrupted("SIGPIPE");
      throw e;
    }
    done += r.bytes;
    if (r.bytes < step) throw new Error("unexpected EOF from memfd");
    onProgress?.(done);
  }
}
