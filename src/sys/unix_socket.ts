/**
 * AF_UNIX stream sockets on raw descriptors: listen, accept and connect (always close-on-exec and
 * nonblocking), sendmsg and recvmsg carrying SCM_RIGHTS descriptors, and SO_PEERCRED.
 *
 * Every descriptor that arrives through {@link recvMsg} is handed to the caller, including extra
 * ones and those from truncated control messages, so none can leak.
 *
 * @module
 */

import { check, closeQuietly, errno, errnoErrorOf, libc } from "../ffi.ts";
import {
  AF_UNIX,
  cmsgAlign,
  Cmsghdr,
  CMSGHDR_SIZE,
  cmsgLen,
  cmsgSpace,
  EAGAIN,
  EINTR,
  Iovec,
  IOVEC_SIZE,
  MSG_CMSG_CLOEXEC,
  MSG_CTRUNC,
  MSG_DONTWAIT,
  MSG_NOSIGNAL,
  Msghdr,
  MSGHDR_SIZE,
  SCM_MAX_FD,
  SCM_RIGHTS,
  SO_ACCEPTCONN,
  SO_DOMAIN,
  SO_PEERCRED,
  SO_TYPE,
  SOCK_CLOEXEC,
  SOCK_NONBLOCK,
  SOCK_STREAM,
  SOCKADDR_UN_SIZE,
  SockaddrUn,
  SOL_SOCKET,
  SUN_PATH_MAX,
  Ucred,
  UCRED_SIZE,
} from "./linux.ts";

/** Encode a socket path as a sockaddr_un, or return null when it does not fit in sun_path. */
export function sockaddrUn(path: string): Uint8Array<ArrayBuffer> | null {
  const bytes = new TextEncoder().encode(path);
  if (bytes.length >= SUN_PATH_MAX) return null;
  const addr = new Uint8Array(SOCKADDR_UN_SIZE);
  addr[SockaddrUn.family] = AF_UNIX; // a little-endian u16 below 256
  addr.set(bytes, SockaddrUn.path);
  return addr;
}

/** `socket path too long: PATH`, the C text for a path that does not fit in sun_path. */
export function socketPathTooLong(path: string): string {
  return `socket path too long: ${path}`;
}

/** Create an AF_UNIX stream socket, close-on-exec and (by default) nonblocking. */
export function unixSocket(nonblocking = true): number {
  const type = SOCK_STREAM | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0);
  return check(libc.symbols.socket(AF_UNIX, type, 0), "socket");
}

/** bind(2) a socket to an encoded address. */
export function bindUnix(fd: number, addr: Uint8Array<ArrayBuffer>): void {
  check(libc.symbols.bind(fd, addr, SOCKADDR_UN_SIZE), "bind");
}

/** listen(2). */
export function listenUnix(fd: number, backlog: number): void {
  check(libc.symbols.listen(fd, backlog), "listen");
}

/**
 * accept4(2) with SOCK_CLOEXEC|SOCK_NONBLOCK. Returns the new descriptor, or -errno on failure
 * (including -EAGAIN when nothing is pending) so the caller can decide what is fatal.
 */
export function acceptUnix(fd: number): number {
  for (;;) {
    const c = libc.symbols.accept4(fd, null, null, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (c >= 0) return c;
    const e = errno();
    if (e !== EINTR) return -e;
  }
}

/** connect(2); returns 0 or -errno (EAGAIN when a nonblocking socket's listener is full). */
export function connectUnix(fd: number, addr: Uint8Array<ArrayBuffer>): number {
  for (;;) {
    const r = libc.symbols.connect(fd, addr, SOCKADDR_UN_SIZE);
    if (r === 0) return 0;
    const e = errno();
    if (e !== EINTR) return -e;
  }
}

/** The credentials of the process at the other end, as the kernel recorded them at connect. */
export interface PeerCredentials {
  /** Process id. */
  readonly pid: number;
  /** Effective user id. */
  readonly uid: number;
  /** Effective group id. */
  readonly gid: number;
}

const credBuf = new Uint8Array(UCRED_SIZE);
const credLen = new Uint8Array(4);

/** SO_PEERCRED of a connected socket. */
export function peerCredentials(fd: number): PeerCredentials {
  new DataView(credLen.buffer).setUint32(0, UCRED_SIZE, true);
  check(libc.symbols.getsockopt(fd, SOL_SOCKET, SO_PEERCRED, credBuf, credLen), "getsockopt");
  const v = new DataView(credBuf.buffer);
  return {
    pid: v.getInt32(Ucred.pid, true),
    uid: v.getUint32(Ucred.uid, true),
    gid: v.getUint32(Ucred.gid, true),
  };
}

// One msghdr, iovec and control buffer serve every call: JS runs these calls one at a time.
const CONTROL_SIZE = cmsgSpace(SCM_MAX_FD * 4);
const msg = new Uint8Array(MSGHDR_SIZE);
const msgView = new DataView(msg.buffer);
const iov = new Uint8Array(IOVEC_SIZE);
const iovView = new DataView(iov.buffer);
const control = new Uint8Array(CONTROL_SIZE);
const controlView = new DataView(control.buffer);
const iovAddr = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(iov)));
const controlAddr = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(control)));

// The fields that never change are written once.
msgView.setBigUint64(Msghdr.iov, iovAddr, true);
msgView.setBigUint64(Msghdr.iovlen, 1n, true);

function prepare(data: Uint8Array, controlLen: number): void {
  const base = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(data)));
  iovView.setBigUint64(Iovec.base, base, true);
  iovView.setBigUint64(Iovec.len, BigInt(data.length), true);
  msgView.setBigUint64(Msghdr.control, controlLen > 0 ? controlAddr : 0n, true);
  msgView.setBigUint64(Msghdr.controllen, BigInt(controlLen), true);
  msgView.setInt32(Msghdr.flags, 0, true);
}

/**
 * sendmsg(2) of `data` with `fds` attached as one SCM_RIGHTS message, MSG_NOSIGNAL and
 * MSG_DONTWAIT. Returns the bytes sent, or -errno (-EAGAIN when the socket buffer is full, -EPIPE
 * when the peer is gone).
 */
export function sendMsg(fd: number, data: Uint8Array, fds: readonly number[] = []): number {
  const clen = fds.length === 0 ? 0 : cmsgSpace(fds.length * 4);
  if (fds.length > SCM_MAX_FD) {
    throw new RangeError(`At most ${SCM_MAX_FD} descriptors per message`);
  }
  prepare(data, clen);
  if (clen > 0) {
    control.fill(0, 0, clen);
    controlView.setBigUint64(Cmsghdr.len, BigInt(cmsgLen(fds.length * 4)), true);
    controlView.setInt32(Cmsghdr.level, SOL_SOCKET, true);
    controlView.setInt32(Cmsghdr.type, SCM_RIGHTS, true);
    fds.forEach((d, i) => controlView.setInt32(CMSGHDR_SIZE + 4 * i, d, true));
  }
  for (;;) {
    const n = libc.symbols.sendmsg(fd, msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n >= 0) return Number(n);
    const e = errno();
    if (e !== EINTR) return -e;
  }
}

/** send(2) with MSG_NOSIGNAL|MSG_DONTWAIT; returns bytes sent or -errno. */
export function sendSome(fd: number, data: Uint8Array): number {
  for (;;) {
    const n = libc.symbols.send(fd, data, BigInt(data.length), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n >= 0) return Number(n);
    const e = errno();
    if (e !== EINTR) return -e;
  }
}

/** What one {@link recvMsg} delivered. */
export interface Received {
  /** Bytes read into the buffer; 0 means the peer closed its side. */
  readonly bytes: number;
  /** Descriptors that arrived, in order, all close-on-exec. The caller owns every one. */
  readonly fds: number[];
  /** True when the kernel dropped descriptors or control data (MSG_CTRUNC). */
  readonly truncated: boolean;
}

const NO_FDS: number[] = [];

/**
 * recvmsg(2) into `buf` with MSG_CMSG_CLOEXEC|MSG_DONTWAIT and room for the largest SCM_RIGHTS
 * message. Returns what arrived, or -errno (-EAGAIN when nothing is pending).
 */
export function recvMsg(fd: number, buf: Uint8Array): Received | number {
  prepare(buf, CONTROL_SIZE);
  let n: number | bigint;
  for (;;) {
    n = libc.symbols.recvmsg(fd, msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (n >= 0) break;
    const e = errno();
    if (e !== EINTR) return -e;
  }
  const flags = msgView.getInt32(Msghdr.flags, true);
  const controlLen = Number(msgView.getBigUint64(Msghdr.controllen, true));
  let fds = NO_FDS;
  if (controlLen >= CMSGHDR_SIZE) {
    fds = [];
    let off = 0;
    while (off + CMSGHDR_SIZE <= controlLen) {
      const len = Number(controlView.getBigUint64(off + Cmsghdr.len, true));
      if (len < CMSGHDR_SIZE || off + len > controlLen) break;
      const level = controlView.getInt32(off + Cmsghdr.level, true);
      const type = controlView.getInt32(off + Cmsghdr.type, true);
      if (level === SOL_SOCKET && type === SCM_RIGHTS) {
        for (let p = off + CMSGHDR_SIZE; p + 4 <= off + len; p += 4) {
          fds.push(controlView.getInt32(p, true));
        }
      }
      off += cmsgAlign(len);
    }
  }
  return { bytes: Number(n), fds, truncated: (flags & MSG_CTRUNC) !== 0 };
}

/** Close every descriptor in a list. */
export function closeAll(fds: readonly number[]): void {
  for (const d of fds) closeQuietly(d);
}

/**
 * Check that `fd` is a listening AF_UNIX stream socket (as systemd passes with socket
 * activation) and return its path ("" for an unnamed or abstract socket).
 */
export function inheritedListener(fd: number): string {
  const val = new Uint8Array(4);
  const len = new Uint8Array(4);
  const v = new DataView(val.buffer);
  const get = (opt: number, what: string): number => {
    new DataView(len.buffer).setUint32(0, 4, true);
    check(libc.symbols.getsockopt(fd, SOL_SOCKET, opt, val, len), "getsockopt", what);
    return v.getInt32(0, true);
  };
  if (get(SO_DOMAIN, "SO_DOMAIN") !== AF_UNIX) {
    throw new Error(`descriptor ${fd} is not an AF_UNIX socket`);
  }
  if (get(SO_TYPE, "SO_TYPE") !== SOCK_STREAM) {
    throw new Error(`descriptor ${fd} is not a stream socket`);
  }
  if (get(SO_ACCEPTCONN, "SO_ACCEPTCONN") !== 1) {
    throw new Error(`descriptor ${fd} is not listening`);
  }
  const addr = new Uint8Array(SOCKADDR_UN_SIZE);
  const alen = new Uint8Array(4);
  new DataView(alen.buffer).setUint32(0, SOCKADDR_UN_SIZE, true);
  check(libc.symbols.getsockname(fd, addr, alen), "getsockname");
  const n = new DataView(alen.buffer).getUint32(0, true);
  const path = addr.subarray(SockaddrUn.path, Math.max(SockaddrUn.path, n));
  const end = path.indexOf(0);
  return path[0] === 0 ? "" : new TextDecoder().decode(end < 0 ? path : path.subarray(0, end));
}

/**
 * The path of a Unix socket's own (`"sock"`, getsockname) or peer (`"peer"`, getpeername)
 * address, or null when the descriptor has none (not a socket, unbound, abstract, or closed).
 */
export function trySocketAddressPath(fd: number, which: "sock" | "peer"): string | null {
  const addr = new Uint8Array(SOCKADDR_UN_SIZE);
  const alen = new Uint8Array(4);
  new DataView(alen.buffer).setUint32(0, SOCKADDR_UN_SIZE, true);
  const r = which === "sock"
    ? libc.symbols.getsockname(fd, addr, alen)
    : libc.symbols.getpeername(fd, addr, alen);
  const n = new DataView(alen.buffer).getUint32(0, true);
  if (r < 0 || n <= SockaddrUn.path) return null;
  const path = addr.subarray(SockaddrUn.path, Math.min(SOCKADDR_UN_SIZE, n));
  if (path[0] === 0) return null;
  const end = path.indexOf(0);
  return new TextDecoder().decode(end < 0 ? path : path.subarray(0, end));
}

/** A connected pair of AF_UNIX stream sockets, close-on-exec and blocking. */
export function unixSocketPair(): [number, number] {
  const pair = new Int32Array(2);
  const r = libc.symbols.socketpair(
    AF_UNIX,
    SOCK_STREAM | SOCK_CLOEXEC,
    0,
    new Uint8Array(pair.buffer),
  );
  check(r, "socketpair");
  return [pair[0] ?? -1, pair[1] ?? -1];
}

/** shutdown(2), ignoring errors. */
export function shutdownQuietly(fd: number, how: number): void {
  libc.symbols.shutdown(fd, how);
}

/** An {@link ErrnoError} for a negative result of the helpers above. */
export function socketError(result: number, syscall: string, context?: string): Error {
  return errnoErrorOf(syscall, -result, context);
}

/** True when a negative helper result means "try again later". */
export function wouldBlock(result: number): boolean {
  return result === -EAGAIN;
}
