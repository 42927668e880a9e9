/**
 * Creating the listening socket of a broker or a shadow.
 *
 * @module
 */

import { ErrnoError } from "../errors.ts";
import { closeQuietly, cstr, errno, errnoErrorOf, libc } from "../ffi.ts";
import { tryLstat } from "./fd.ts";
import { checkSocketPath } from "./path_safety.ts";
import { EAGAIN, ENOENT, S_IFMT, S_IFSOCK } from "./linux.ts";
import {
  bindUnix,
  connectUnix,
  listenUnix,
  sockaddrUn,
  socketPathTooLong,
  unixSocket,
} from "./unix_socket.ts";

/**
 * Create, bind and listen on a socket path, following the C broker's order and messages, but
 * refusing to take over a socket a live process still answers on (defect D15). The socket file
 * gets exactly `mode`. Returns the listening descriptor (nonblocking, close-on-exec) and the
 * socket file's inode, so the owner can later unlink only its own file.
 *
 * @param path the socket path
 * @param mode permission bits of the socket file
 * @param backlog listen(2) backlog
 * @param what the kind of process, for the message about a live socket
 */
export function openListener(
  path: string,
  mode: number,
  backlog: number,
  what = "broker",
): { fd: number; ino: bigint } {
  const fd = unixSocket(true);
  try {
    const addr = sockaddrUn(path);
    if (addr === null) throw new Error(socketPathTooLong(path));
    // A path another user could swap under us is refused (see path_safety.ts).
    checkSocketPath(path);
    const st = tryLstat(path);
    if (typeof st === "number") {
      if (st !== -ENOENT) throw errnoErrorOf("lstat", -st, "lstat socket path");
    } else {
      if ((st.mode & S_IFMT) !== S_IFSOCK) {
        throw new Error(`refusing to unlink non-socket path: ${path}`);
      }
      if (socketIsLive(addr)) {
        throw new Error(`refusing to replace the socket of a running ${what}: ${path}`);
      }
      if (libc.symbols.unlink(cstr(path)) < 0) {
        throw errnoErrorOf("unlink", errno(), "unlink stale socket");
      }
    }
    // The socket file gets exactly socketMode: umask covers the window between bind and chmod.
    const old = libc.symbols.umask(~mode & 0o777);
    try {
      bindUnix(fd, addr);
    } finally {
      libc.symbols.umask(old);
    }
    if (libc.symbols.chmod(cstr(path), mode) < 0) {
      const e = errnoErrorOf("chmod", errno(), "chmod socket");
      libc.symbols.unlink(cstr(path));
      throw e;
    }
    try {
      listenUnix(fd, backlog);
    } catch (e) {
      libc.symbols.unlink(cstr(path));
      throw e;
    }
    const bound = tryLstat(path);
    return { fd, ino: typeof bound === "number" ? 0n : bound.ino };
  } catch (e) {
    closeQuietly(fd);
    throw e instanceof ErrnoError || e instanceof Error ? e : new Error(String(e));
  }
}

/** True when something accepts connections on the socket at `addr`. */
export function socketIsLive(addr: Uint8Array<ArrayBuffer>): boolean {
  const probe = unixSocket(true);
  try {
    const r = connectUnix(probe, addr);
    // EAGAIN means a live listener with a full backlog.
    return r === 0 || r === -EAGAIN;
  } finally {
    closeQuietly(probe);
  }
}
