/**
 * Thin wrappers over descriptor system calls: stat, seals, descriptor flags, whole reads and
 * writes, and an owning {@link FileDescriptor} handle.
 *
 * @module
 */

import { check, checkBig, cstr, errno, errnoErrorOf, lastError, libc } from "../ffi.ts";
import {
  AT_EMPTY_PATH,
  AT_FDCWD,
  AT_STATX_DONT_SYNC,
  AT_SYMLINK_NOFOLLOW,
  EAGAIN,
  EINTR,
  F_DUPFD_CLOEXEC,
  F_GET_SEALS,
  F_GETFD,
  F_GETFL,
  F_SETFD,
  F_SETFL,
  FD_CLOEXEC,
  O_CLOEXEC,
  O_NONBLOCK,
  Pollfd,
  POLLFD_SIZE,
  RLIMIT_NOFILE,
  RLIMIT_SIZE,
  S_IFMT,
  S_IFREG,
  STATX_BASIC_STATS,
  STATX_BLOCKS,
  STATX_DEV_MAJOR,
  STATX_DEV_MINOR,
  STATX_FILESIZE,
  STATX_GID,
  STATX_INO,
  STATX_MODE,
  STATX_NLINK,
  STATX_SIZE,
  STATX_UID,
} from "./linux.ts";

/**
 * What stat tells about a file.
 *
 * @example
 * ```ts
 * import { FileDescriptor } from "@memfdbus/memfdbus";
 * using fd = FileDescriptor.open("/etc/hostname");
 * const st = fd.stat();
 * console.log(st.size, (st.mode & 0o170000) === 0o100000); // size, and true: a regular file
 * ```
 */
export interface FileStat {
  /** st_mode: type and permission bits. */
  readonly mode: number;
  /** st_size in bytes. */
  readonly size: bigint;
  /** Inode number. */
  readonly ino: bigint;
  /** Device, as `major:minor`. */
  readonly dev: string;
  /** Owner uid. */
  readonly uid: number;
  /** Owner gid. */
  readonly gid: number;
  /** Link count. */
  readonly nlink: number;
  /** 512-byte blocks allocated (less than the size says for a sparse file). */
  readonly blocks: bigint;
}

const statBuf = new Uint8Array(STATX_SIZE);
const statView = new DataView(statBuf.buffer);
const EMPTY_PATH = cstr("");

function decodeStat(): FileStat {
  return {
    mode: statView.getUint16(STATX_MODE, true),
    size: statView.getBigUint64(STATX_FILESIZE, true),
    ino: statView.getBigUint64(STATX_INO, true),
    dev: `${statView.getUint32(STATX_DEV_MAJOR, true)}:${
      statView.getUint32(STATX_DEV_MINOR, true)
    }`,
    uid: statView.getUint32(STATX_UID, true),
    gid: statView.getUint32(STATX_GID, true),
    nlink: statView.getUint32(STATX_NLINK, true),
    blocks: statView.getBigUint64(STATX_BLOCKS, true),
  };
}

/** fstat(2) through statx. Throws {@link ErrnoError} with the given context. */
export function fstat(fd: number, context = "fstat"): FileStat {
  const r = libc.symbols.statx(fd, EMPTY_PATH, AT_EMPTY_PATH, STATX_BASIC_STATS, statBuf);
  if (r < 0) throw lastError("fstat", context);
  return decodeStat();
}

/** fstat(2) that reports failure as a negated errno (`-EBADF`) instead of throwing. */
export function tryFstat(fd: number): FileStat | number {
  const r = libc.symbols.statx(fd, EMPTY_PATH, AT_EMPTY_PATH, STATX_BASIC_STATS, statBuf);
  if (r < 0) return -errno();
  return decodeStat();
}

/**
 * {@link tryFstat} from the kernel's cached attributes only (`AT_STATX_DONT_SYNC`): a FUSE or
 * network file system's server is not asked, so this cannot block on one.
 */
export function tryFstatCached(fd: number): FileStat | number {
  const r = libc.symbols.statx(
    fd,
    EMPTY_PATH,
    AT_EMPTY_PATH | AT_STATX_DONT_SYNC,
    STATX_BASIC_STATS,
    statBuf,
  );
  if (r < 0) return -errno();
  return decodeStat();
}

/** lstat(2) of a path; returns a negated errno (`-ENOENT`) on failure. */
export function tryLstat(path: string): FileStat | number {
  const r = libc.symbols.statx(
    AT_FDCWD,
    cstr(path),
    AT_SYMLINK_NOFOLLOW,
    STATX_BASIC_STATS,
    statBuf,
  );
  if (r < 0) return -errno();
  return decodeStat();
}

/** True for a regular file mode. */
export function isRegular(mode: number): boolean {
  return (mode & S_IFMT) === S_IFREG;
}

/** F_GET_SEALS; returns the seal bits or a negated errno. */
export function trySeals(fd: number): number {
  const r = libc.symbols.fcntl(fd, F_GET_SEALS, 0);
  if (r < 0) return -errno();
  return r;
}

/** Set or clear FD_CLOEXEC on a descriptor. */
export function setCloexec(fd: number, on: boolean): void {
  const flags = libc.symbols.fcntl(fd, F_GETFD, 0);
  if (flags < 0) throw lastError("fcntl", "F_GETFD");
  const next = on ? flags | FD_CLOEXEC : flags & ~FD_CLOEXEC;
  if (next !== flags) check(libc.symbols.fcntl(fd, F_SETFD, next), "fcntl", "F_SETFD");
}

/** True when FD_CLOEXEC is set on the descriptor. */
export function isCloexec(fd: number): boolean {
  const flags = check(libc.symbols.fcntl(fd, F_GETFD, 0), "fcntl", "F_GETFD");
  return (flags & FD_CLOEXEC) !== 0;
}

/** The file status flags (O_APPEND, O_NONBLOCK, access mode). */
export function statusFlags(fd: number): number {
  return check(libc.symbols.fcntl(fd, F_GETFL, 0), "fcntl", "F_GETFL");
}

/** A new close-on-exec descriptor for the same open file (fcntl F_DUPFD_CLOEXEC). */
export function dupCloexec(fd: number, context = "dup"): number {
  return check(libc.symbols.fcntl(fd, F_DUPFD_CLOEXEC, 0), "fcntl", context);
}

/** Set or clear O_NONBLOCK. */
export function setNonblocking(fd: number, on: boolean): void {
  const flags = statusFlags(fd);
  const next = on ? flags | O_NONBLOCK : flags & ~O_NONBLOCK;
  if (next !== flags) check(libc.symbols.fcntl(fd, F_SETFL, next), "fcntl", "F_SETFL");
}

/**
 * Write all of `bytes` to a blocking descriptor, retrying on EINTR and short writes. On a
 * nonblocking descriptor that fills up, EAGAIN is thrown.
 */
export function writeAll(fd: number, bytes: Uint8Array, context = "write"): void {
  let off = 0;
  while (off < bytes.length) {
    const chunk = off === 0 ? bytes : bytes.subarray(off);
    const n = libc.symbols.write(fd, chunk, BigInt(chunk.length));
    if (n < 0) {
      const e = errno();
      if (e === EINTR) continue;
      throw errnoErrorOf("write", e, context);
    }
    off += Number(n);
  }
}

/**
 * Read up to `buf.length` bytes. Returns the count (0 at end of file), or `-EAGAIN` on a
 * nonblocking descriptor with nothing to read; other failures throw. Retries EINTR.
 */
export function readSome(fd: number, buf: Uint8Array, context = "read"): number {
  for (;;) {
    const n = libc.symbols.read(fd, buf, BigInt(buf.length));
    if (n >= 0) return Number(n);
    const e = errno();
    if (e === EINTR) continue;
    if (e === EAGAIN) return -EAGAIN;
    throw errnoErrorOf("read", e, context);
  }
}

/** pread(2) of up to `buf.length` bytes at `offset`, retrying EINTR. */
export function pread(fd: number, buf: Uint8Array, offset: number, context = "pread"): number {
  for (;;) {
    const n = libc.symbols.pread(fd, buf, BigInt(buf.length), BigInt(offset));
    if (n >= 0) return Number(n);
    const e = errno();
    if (e !== EINTR) throw errnoErrorOf("pread", e, context);
  }
}

/**
 * poll(2) of one descriptor for `events` (POLLIN, POLLOUT) up to `timeoutMs`, blocking the
 * calling thread. True when it became ready (or reports an error or hang-up) in time.
 */
export function pollOne(fd: number, events: number, timeoutMs: number): boolean {
  pollView.setInt32(Pollfd.fd, fd, true);
  pollView.setInt16(Pollfd.events, events, true);
  pollView.setInt16(Pollfd.revents, 0, true);
  return libc.symbols.poll(pollBuf, 1n, timeoutMs) > 0;
}

const pollBuf = new Uint8Array(POLLFD_SIZE);
const pollView = new DataView(pollBuf.buffer);

/**
 * open(2) a path with O_CLOEXEC added; returns the descriptor or a negated errno. The path is a
 * string or an already encoded NUL-terminated C string (see `cstr`), which saves encoding it on
 * every call.
 */
export function tryOpen(path: string | Uint8Array<ArrayBuffer>, flags: number): number {
  const c = typeof path === "string" ? cstr(path) : path;
  const fd = libc.symbols.open(c, flags | O_CLOEXEC, 0);
  return fd >= 0 ? fd : -errno();
}

/** openat(2) relative to a directory descriptor, O_CLOEXEC added; the descriptor or -errno. */
export function tryOpenAt(dirFd: number, path: Uint8Array<ArrayBuffer>, flags: number): number {
  const fd = libc.symbols.openat(dirFd, path, flags | O_CLOEXEC, 0);
  return fd >= 0 ? fd : -errno();
}

/** fcntl(F_DUPFD_CLOEXEC): a duplicate sharing the open file description, or -errno. */
export function tryDup(fd: number): number {
  const d = libc.symbols.fcntl(fd, F_DUPFD_CLOEXEC, 0);
  return d >= 0 ? d : -errno();
}

/** unlink(2) a path; returns 0 or a negated errno. */
export function tryUnlink(path: string): number {
  return libc.symbols.unlink(cstr(path)) === 0 ? 0 : -errno();
}

/**
 * Raise the soft RLIMIT_NOFILE to the hard limit (a broker holds one descriptor per object).
 * Returns the limits now in force, or zeros when they cannot be read.
 */
export function raiseDescriptorLimit(): { soft: bigint; hard: bigint } {
  const buf = new BigUint64Array(RLIMIT_SIZE / 8);
  const bytes = new Uint8Array(buf.buffer);
  if (libc.symbols.getrlimit(RLIMIT_NOFILE, bytes) !== 0) return { soft: 0n, hard: 0n };
  if ((buf[0] ?? 0n) < (buf[1] ?? 0n)) {
    buf[0] = buf[1] ?? 0n;
    libc.symbols.setrlimit(RLIMIT_NOFILE, bytes);
  }
  return { soft: buf[0] ?? 0n, hard: buf[1] ?? 0n };
}

/** lseek(2). */
export function seek(fd: number, offset: number, whence: number, context = "lseek"): number {
  return checkBig(libc.symbols.lseek(fd, BigInt(offset), whence), "lseek", context);
}

/**
 * An owned file descriptor: closed exactly once by {@link FileDescriptor.close} or `using`.
 *
 * @example
 * ```ts
 * import { FileDescriptor } from "@memfdbus/memfdbus";
 * using fd = FileDescriptor.open("/etc/hostname");
 * console.log(fd.stat().size);
 * ```
 */
export class FileDescriptor implements Disposable {
  #fd: number;

  /**
   * Take ownership of a raw descriptor number.
   *
   * @param fd an open descriptor this object will close
   */
  constructor(fd: number) {
    if (!Number.isInteger(fd) || fd < 0) throw new RangeError(`Invalid descriptor "${fd}"`);
    this.#fd = fd;
  }

  /**
   * Open a path (O_CLOEXEC is always added).
   *
   * @example
   * ```ts
   * import { FileDescriptor } from "@memfdbus/memfdbus";
   * using fd = FileDescriptor.open("/etc/hostname"); // O_RDONLY
   * console.log(fd.fd >= 0);
   * ```
   *
   * @param path the file to open
   * @param flags open(2) flags, O_RDONLY by default
   * @param mode permission bits for O_CREAT
   */
  static open(path: string, flags = 0, mode = 0o666): FileDescriptor {
    const fd = libc.symbols.open(cstr(path), flags | 0o2000000, mode);
    if (fd < 0) throw lastError("open", `open ${path}`);
    return new FileDescriptor(fd);
  }

  /** The descriptor number; -1 once closed. */
  get fd(): number {
    return this.#fd;
  }

  /** True once closed or released. */
  get closed(): boolean {
    return this.#fd < 0;
  }

  /**
   * fstat(2) of the descriptor.
   *
   * @example
   * ```ts
   * import { FileDescriptor } from "@memfdbus/memfdbus";
   * using fd = FileDescriptor.open("/etc/hostname");
   * const { size, ino, dev } = fd.stat();
   * console.log(size, ino, dev);
   * ```
   */
  stat(): FileStat {
    return fstat(this.#number());
  }

  /**
   * Give up ownership and return the raw number; the caller must close it.
   *
   * @example
   * ```ts
   * import { FileDescriptor, Memfd } from "@memfdbus/memfdbus";
   * const fd = FileDescriptor.open("/etc/hostname");
   * using again = new FileDescriptor(fd.release()); // now this object closes it
   * console.log(fd.closed, again.closed); // true false
   * ```
   */
  release(): number {
    const fd = this.#number();
    this.#fd = -1;
    return fd;
  }

  /**
   * Close the descriptor. Safe to call more than once.
   *
   * @example
   * ```ts
   * import { FileDescriptor } from "@memfdbus/memfdbus";
   * const fd = FileDescriptor.open("/etc/hostname");
   * fd.close();
   * console.log(fd.closed, fd.fd); // true -1
   * ```
   */
  close(): void {
    const fd = this.#fd;
    if (fd < 0) return;
    this.#fd = -1;
    libc.symbols.close(fd);
  }

  /** Same as {@link FileDescriptor.close}. */
  [Symbol.dispose](): void {
    this.close();
  }

  #number(): number {
    if (this.#fd < 0) throw new TypeError("Descriptor is closed");
    return this.#fd;
  }
}
