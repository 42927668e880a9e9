/**
 * Who is at the other end of a Unix socket, from SO_PEERCRED (the credentials the kernel recorded
 * at connect or listen time; a peer cannot forge them). Used where trust is implied: the shadow
 * and its broker, a broker and its takeover successor must run as the same uid.
 *
 * @module
 */

import { libc } from "../ffi.ts";
import { peerCredentials } from "./unix_socket.ts";

/**
 * Thrown when the process at the other end of a socket runs as the wrong user.
 *
 * @example
 * ```ts
 * import { PeerUidError } from "@memfdbus/memfdbus";
 * const e = new PeerUidError("refusing the shadow at /tmp/s.sock: it runs as uid 65534", 65534);
 * console.log(e.name, e.uid); // PeerUidError 65534
 * ```
 */
export class PeerUidError extends Error {
  /** The peer's uid (-1 when it could not be read). */
  readonly uid: number;

  /**
   * Describe a peer of the wrong uid.
   *
   * @param message the whole message
   * @param uid the peer's uid, or -1
   */
  constructor(message: string, uid: number) {
    super(message);
    this.name = "PeerUidError";
    this.uid = uid;
  }
}

/** The peer's uid, or -1 when the socket has none (not connected, not a Unix socket). */
export function peerUid(fd: number): number {
  try {
    return peerCredentials(fd).uid;
  } catch {
    return -1;
  }
}

/**
 * Require that the peer on `fd` runs as this process's effective uid.
 *
 * @param fd a connected Unix stream socket
 * @param what who the peer should be, for the message (`the shadow at /run/x.sock`)
 * @throws {PeerUidError} naming both uids
 */
export function requireSameUid(fd: number, what: string): void {
  const uid = peerUid(fd);
  const me = libc.symbols.geteuid();
  if (uid === me) return;
  throw new PeerUidError(
    `refusing ${what}: it runs as ${uid < 0 ? "an unknown uid" : `uid ${uid}`}, ` +
      `not as this process's uid ${me}`,
    uid,
  );
}
