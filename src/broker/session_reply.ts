/**
 * The reply half of a session: send the reply in one sendmsg (with the GET's descriptor), audit
 * it, then keep the connection alive, turn it into a watch stream, drain it (linger) or close it.
 * The state machine in `session.ts` starts a reply with {@link Sessions.reply} and calls
 * {@link sendReply} when the socket can take it.
 *
 * @module
 */

import { blankRecord } from "../core/audit.ts";
import { errorOutcome, type Outcome } from "../core/handlers.ts";
import { Status } from "../errors.ts";
import { closeQuietly } from "../ffi.ts";
import { EAGAIN, SHUT_WR } from "../sys/linux.ts";
import { sendMsg, sendSome, shutdownQuietly } from "../sys/unix_socket.ts";
import type { AuditOutput } from "./audit_sink.ts";
import { type Conn, State } from "./connection.ts";
import type { SessionParts } from "./session_parts.ts";

const LINGER_MS = 1000;
/** The most bytes of a streamed reply body (LIST) formatted at once. */
export const REPLY_CHUNK = 64 * 1024;
/** The most body bytes a connection drains after its reply before closing. */
export const LINGER_BYTES = 1 << 20;

/** What the reply half needs from the sessions. */
export interface SendHost {
  /** What sessions are built from. */
  readonly parts: SessionParts;
  /** A buffer to drain lingering connections into. */
  readonly scratch: Uint8Array;
  /** Register the connection with epoll (once, edge-triggered). */
  watch(conn: Conn): void;
  /** Close the connection and everything it holds. */
  close(conn: Conn): void;
  /** One more connection is in State.Linger. */
  lingered(): void;
  /** Have the loop come back to the connection at its next turn (it is writable now). */
  again(conn: Conn): void;
}

/** Write the audit record of `o` (with `error`, when sending it failed). */
export function record(audit: AuditOutput, o: Outcome, conn: Conn, error: string | null): void {
  const rec = error === null ? o.audit : { ...o.audit, result: "error" as const, error };
  audit.record(rec, conn.peer);
}

/**
 * Send as much of the reply as possible (one sendmsg for all of it); true when it is out. A
 * streamed body (LIST) is formatted one chunk at a time: after a chunk has gone out, the
 * connection yields to the loop ({@link SendHost.again}) before the next one is formatted, so
 * one reply never holds the loop for more than a chunk, and an unread one holds one chunk.
 */
export function sendReply(host: SendHost, conn: Conn): boolean {
  let formatted = false;
  for (;;) {
    const out = conn.out;
    while (conn.outOff < out.length) {
      const part = conn.outOff === 0 ? out : out.subarray(conn.outOff);
      const attach = conn.outOff === 0 && conn.outBase === 0 && conn.replyFd >= 0;
      const n = attach ? sendMsg(conn.fd, part, [conn.replyFd]) : sendSome(conn.fd, part);
      if (n === -EAGAIN) {
        host.watch(conn);
        return false;
      }
      if (n <= 0) {
        sendFailed(host, conn);
        return false;
      }
      if (attach) {
        closeQuietly(conn.replyFd);
        conn.replyFd = -1;
      }
      conn.outOff += n;
    }
    const stream = conn.stream;
    if (stream === null) break;
    if (stream.done) {
      conn.stream = null;
      break;
    }
    if (formatted) {
      host.again(conn);
      return false;
    }
    const chunk = stream.next(REPLY_CHUNK);
    if (chunk === null) {
      conn.stream = null;
      break;
    }
    formatted = true;
    conn.outBase += out.length;
    conn.out = chunk;
    conn.outOff = 0;
    // Progress: a slow reader gets the request timeout for each chunk.
    conn.deadline = performance.now() + host.parts.options.requestTimeoutMs;
  }
  afterSend(host, conn);
  return true;
}

/** A reply could not be sent: audit which piece failed, then close. */
export function sendFailed(host: SendHost, conn: Conn): void {
  const o = conn.outcome;
  if (o !== null && o.auditAfterSend) {
    // Name the piece that could not be sent, as the C broker's three sends would have.
    let end = 0;
    let text = o.stream?.failText ?? "failed to send response";
    const sent = conn.outBase + conn.outOff;
    for (const seg of o.segments) {
      end += seg.bytes.length;
      if (sent < end) {
        text = seg.failText ?? text;
        break;
      }
    }
    record(host.parts.audit, o, conn, text);
  }
  host.close(conn);
}

/** The reply is out: audit it, then keep the connection alive, start its watch, linger or close. */
function afterSend(host: SendHost, conn: Conn): void {
  const o = conn.outcome;
  if (o !== null && o.auditAfterSend) record(host.parts.audit, o, conn, null);
  conn.clearReply();
  conn.served++;
  if (conn.startedAt >= 0) {
    host.parts.latency?.((performance.now() - conn.startedAt) / 1000);
    conn.startedAt = -1;
  }
  const watchers = host.parts.watchers;
  if (o?.watch !== undefined && watchers !== undefined) {
    // Accepted: from now on the connection carries events until either side closes.
    if (host.parts.run.stopping || conn.len > 0 || conn.eof) {
      host.close(conn);
      return;
    }
    conn.state = State.Watch;
    conn.deadline = Infinity;
    watchers.add(conn, o.watch.selector, o.watch.caller);
    host.watch(conn);
    return;
  }
  const options = host.parts.options;
  if (conn.keepAlive && !host.parts.run.stopping) {
    conn.header = null;
    conn.fdLost = false;
    conn.state = State.Header;
    conn.deadline = performance.now() +
      (conn.len > 0 ? options.requestTimeoutMs : options.idleTimeoutMs);
    return;
  }
  if (conn.header === null || conn.lingerLeft > 0) {
    // The client may still be writing a body the broker did not read: drain it so the client
    // reads this reply instead of failing its send with EPIPE (defects D1, D2).
    if (conn.header === null && conn.lingerLeft === 0) conn.lingerLeft = LINGER_BYTES;
    shutdownQuietly(conn.fd, SHUT_WR);
    conn.state = State.Linger;
    conn.deadline = performance.now() + LINGER_MS;
    conn.len = 0;
    host.lingered();
    return;
  }
  host.close(conn);
}

/** Drain what a client still sends after its reply; close when done. */
export function linger(host: SendHost, conn: Conn): void {
  if (conn.drainLinger(host.scratch)) host.close(conn);
  else host.watch(conn);
}

/** Answer the request in progress on `conn` with an internal error (a bug escaped), unsent parts lost. */
export function internalErrorReply(host: SendHost, conn: Conn): void {
  if (conn.fd < 0) return;
  const o = errorOutcome(
    conn.header?.cmd ?? 0,
    Status.ERR,
    "internal error",
    blankRecord("unknown", "error", null),
  );
  record(host.parts.audit, o, conn, null);
  for (const seg of o.segments) sendSome(conn.fd, seg.bytes);
}
