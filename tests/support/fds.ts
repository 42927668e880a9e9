/**
 * Small helpers shared by the unit and module tests: hex dumps, real pipes through libc, and
 * descriptor inspection. Nothing here mocks the kernel.
 *
 * @module
 */

import { assertEquals } from "./assert.ts";
import { closeQuietly, libc } from "../../src/ffi.ts";
import { F_GETFD, FD_CLOEXEC, O_CLOEXEC } from "../../src/sys/linux.ts";
import { Memfd, Seal } from "../../src/sys/memfd.ts";
import { trySocketAddressPath } from "../../src/sys/unix_socket.ts";
import { fdCount, fdTable } from "./harness.ts";
import { waitFor } from "./wait.ts";

// ---- attributing descriptors to this test module ---------------------------------------------
//
// `deno test --parallel` runs test modules concurrently in one process, so the process-wide
// descriptor count moves with other modules' work. Leak checks therefore count only descriptors
// this module can prove are its own: memfds and files whose name carries TAG, sockets bound or
// connected to a path under a TAG directory, and pipes made by pipe() below. Set
// MEMFDBUS_TEST_EXACT_FDS=1 when running one file on its own to also demand the exact
// process-wide count (fdCount() from helpers).

/** A tag unique to this module instance (each test module has its own). */
export const TAG: string = `ut${crypto.randomUUID().slice(0, 8)}`;

/** A name carrying this module's tag, usable as a memfd label or object name. */
export function ownLabel(name = "t"): string {
  return `${TAG}-${name}`;
}

/** A fresh temporary directory whose path carries TAG, removed by the returned disposer. */
export function ownTempDir(): { path: string } & Disposable {
  const path = Deno.makeTempDirSync({ prefix: `memfdbus-${TAG}-` });
  return { path, [Symbol.dispose]: () => Deno.removeSync(path, { recursive: true }) };
}

/** A memfd with a tagged label holding `bytes`, rewound and sealed with `seals`. */
export function ownSealedMemfd(
  bytes: Uint8Array,
  seals: number = Seal.IMMUTABLE,
  name = "obj",
): Memfd {
  const m = Memfd.create(ownLabel(name));
  m.writeAll(bytes);
  m.seek(0);
  if (seals !== 0) m.addSeals(seals);
  return m;
}

const ownTargets = new Set<string>();

/** The path of a socket's own (`"sock"`) or peer (`"peer"`) address, or null. */
export const socketAddressPath = trySocketAddressPath;

/** What a descriptor refers to (readlink of /proc/self/fd/N), or null when it is not open. */
export function fdTarget(fd: number): string | null {
  try {
    return Deno.readLinkSync(`/proc/self/fd/${fd}`);
  } catch {
    return null;
  }
}

function isOwn(fd: number, target: string): boolean {
  if (target.includes(TAG) || ownTargets.has(target)) return true;
  if (target.startsWith("socket:")) {
    return (socketAddressPath(fd, "sock") ?? "").includes(TAG) ||
      (socketAddressPath(fd, "peer") ?? "").includes(TAG);
  }
  return false;
}

/** Descriptors of this module opened since `before` and still open, as `fd -> target`. */
export function ownLeaks(before: ReadonlyMap<number, string>): string[] {
  const out: string[] = [];
  for (const [fd, target] of fdTable()) {
    if (before.get(fd) === target) continue;
    if (isOwn(fd, target)) out.push(`${fd} -> ${target}`);
  }
  return out;
}

/** Open descriptors of this module (tagged memfds, files, own sockets and pipes). */
export function ownFds(): string[] {
  return ownLeaks(new Map());
}

const EXACT_FDS = (() => {
  try {
    return Deno.env.get("MEMFDBUS_TEST_EXACT_FDS") === "1";
  } catch {
    return false;
  }
})();

/** Remember the descriptors open now; `assertClean()` later fails on any own descriptor leaked. */
export function fdGuard(): {
  assertClean(what?: string): void;
  waitClean(what?: string): Promise<void>;
} {
  const before = fdTable();
  const count = fdCount();
  return {
    assertClean(what = "after the test"): void {
      assertEquals(ownLeaks(before), [], `descriptors leaked ${what}`);
      if (EXACT_FDS) assertEquals(fdCount(), count, `descriptor count ${what}`);
    },
    async waitClean(what = "after the test"): Promise<void> {
      // Closing can finish a turn of the event loop later (a reactor's woken wait returns).
      await waitFor(() => ownLeaks(before).length === 0, { what: `no descriptor leaked ${what}` })
        .catch(() => {});
      this.assertClean(what);
    },
  };
}

/** Lowercase hex of some bytes. */
export function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Bytes from a hex string. */
export function unhex(s: string): Uint8Array {
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** A pipe (close-on-exec unless told otherwise) whose ends close on dispose. */
export interface Pipe extends Disposable {
  /** The read end (-1 once closed). */
  readFd: number;
  /** The write end (-1 once closed). */
  writeFd: number;
  /** Close the read end. */
  closeRead(): void;
  /** Close the write end. */
  closeWrite(): void;
}

/** Create a pipe with libc pipe2. */
export function pipe(flags: number = O_CLOEXEC): Pipe {
  const buf = new Int32Array(2);
  const r = libc.symbols.pipe2(new Uint8Array(buf.buffer), flags);
  if (r !== 0) throw new Error("pipe2 failed");
  for (const fd of [buf[0] ?? -1, buf[1] ?? -1]) {
    const t = fdTarget(fd);
    if (t !== null) ownTargets.add(t);
  }
  const p: Pipe = {
    readFd: buf[0] ?? -1,
    writeFd: buf[1] ?? -1,
    closeRead(): void {
      closeQuietly(p.readFd);
      p.readFd = -1;
    },
    closeWrite(): void {
      closeQuietly(p.writeFd);
      p.writeFd = -1;
    },
    [Symbol.dispose](): void {
      p.closeRead();
      p.closeWrite();
    },
  };
  return p;
}

/** A pipe as `[read end, write end]` (close-on-exec), owned by the caller. */
export function makePipe(): [number, number] {
  const p = pipe();
  return [p.readFd, p.writeFd];
}

/** Write all bytes to a blocking descriptor with libc write. */
export function writeFd(fd: number, bytes: Uint8Array): void {
  let off = 0;
  while (off < bytes.length) {
    const n = Number(libc.symbols.write(fd, bytes.subarray(off), BigInt(bytes.length - off)));
    if (n <= 0) throw new Error(`write(${fd}) returned ${n}`);
    off += n;
  }
}

/** Read whatever is available (up to `max` bytes) from a descriptor with libc read. */
export function readFd(fd: number, max = 65536): Uint8Array {
  const buf = new Uint8Array(max);
  const n = Number(libc.symbols.read(fd, buf, BigInt(max)));
  if (n < 0) throw new Error(`read(${fd}) failed`);
  return buf.slice(0, n);
}

/** Read what is available from a nonblocking descriptor: the bytes, or null for EAGAIN. */
export function tryReadFd(fd: number, max = 1 << 20): Uint8Array | null {
  const buf = new Uint8Array(max);
  const n = Number(libc.symbols.read(fd, buf, BigInt(max)));
  if (n < 0) return null;
  return buf.slice(0, n);
}

/** True when FD_CLOEXEC is set (throws for a closed descriptor). */
export function hasCloexec(fd: number): boolean {
  const flags = libc.symbols.fcntl(fd, F_GETFD, 0);
  if (flags < 0) throw new Error(`fcntl(${fd}, F_GETFD) failed`);
  return (flags & FD_CLOEXEC) !== 0;
}

/** True when the descriptor number is open in this process. */
export function isOpen(fd: number): boolean {
  return libc.symbols.fcntl(fd, F_GETFD, 0) >= 0;
}

/** The current file offset of a descriptor (lseek SEEK_CUR). */
export function offsetOf(fd: number): number {
  return Number(libc.symbols.lseek(fd, 0n, 1));
}

/** A string of `n` copies of `c`. */
export function repeat(c: string, n: number): string {
  return c.repeat(n);
}
