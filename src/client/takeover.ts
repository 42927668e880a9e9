/**
 * The client side of TAKEOVER: a new broker started with `--takeover` asks the running broker
 * for its listening socket; the reply carries it, and the same connection then carries the
 * objects in shadow frames (src/protocol/shadow_frames.ts).
 *
 * @module
 */

import { UsageError } from "../errors.ts";
import { closeQuietly } from "../ffi.ts";
import { fromUtf8 } from "../protocol/bytes.ts";
import { Cmd, decodeHeader, encodeHeader, HEADER_SIZE } from "../protocol/wire.ts";
import { closeAll } from "../sys/unix_socket.ts";
import { ConnectError, Connection } from "./connection.ts";

/** What a granted takeover hands over. */
export interface TakeoverGrant {
  /** The old broker's listening socket. */
  readonly listenFd: number;
  /** The connection to the old broker, on which its objects follow as shadow frames. */
  readonly takeoverFd: number;
}

/** How long the old broker may take to answer (it first finishes the requests in flight). */
const REPLY_MS = 60_000;

/**
 * Ask the broker on `socket` to hand over. Refusals and a missing broker are
 * {@link UsageError}s naming the socket, as `memfdbus broker --takeover` prints them.
 */
export async function requestTakeover(socket: string): Promise<TakeoverGrant> {
  let conn: Connection;
  try {
    conn = await Connection.connect(socket, 10_000);
  } catch (e) {
    // The socket is named once: `connect: <strerror>` rather than ConnectError's whole message.
    const why = e instanceof ConnectError ? `connect: ${e.description}` : (e as Error).message;
    throw new UsageError(`no broker to take over from on ${socket}: ${why}`);
  }
  try {
    await conn.send(
      encodeHeader({ cmd: Cmd.TAKEOVER }),
      performance.now() + 10_000,
      "send takeover request",
    );
    const reply = await conn.recvExact(
      HEADER_SIZE,
      performance.now() + REPLY_MS,
      "receive takeover reply",
    );
    const h = decodeHeader(reply.bytes);
    const [listenFd, ...extra] = reply.fds;
    closeAll(extra);
    if (h.status !== 0 || listenFd === undefined) {
      if (listenFd !== undefined) closeQuietly(listenFd);
      let text = "";
      if (h.textLen > 0) {
        text = fromUtf8(
          (await conn.recvExact(h.textLen, performance.now() + 5000, "receive")).bytes,
        );
      }
      throw new UsageError(
        `takeover refused by the broker on ${socket}: ${text || `status ${h.status}`}`,
      );
    }
    try {
      return { listenFd, takeoverFd: conn.detach() };
    } catch (e) {
      closeQuietly(listenFd);
      throw e;
    }
  } finally {
    conn.close();
  }
}
