/**
 * One client connection's data: its socket, its input buffer (pooled), the descriptor that came
 * with the current request, the handler working on it and the reply going out. The state machine
 * that moves it along is in `session.ts`; this module only holds the state and the buffer
 * arithmetic.
 *
 * @module
 */

import type { AuditPeer } from "../core/audit.ts";
import type { Handler, Outcome, ReplyStream, Step } from "../core/handlers.ts";
import type { Header } from "../protocol/wire.ts";
import { closeQuietly } from "../ffi.ts";
import { HEADER_SIZE } from "../protocol/wire.ts";
import { EAGAIN } from "../sys/linux.ts";
import { closeAllDropped, closeDropped } from "../sys/closer.ts";
import { recvMsg } from "../sys/unix_socket.ts";
import { isRegular, tryFstatCached } from "../sys/fd.ts";

/** Where a connection is in its request cycle. */
export const enum State {
  /** Reading a request header. */
  Header,
  /** The handler waits for body bytes. */
  Body,
  /** A digest is being computed. */
  Hash,
  /** A PUT or DROP waits for the shadow's acknowledgement. */
  Mirror,
  /** The connection is a successor broker's takeover link. */
  Handover,
  /** Parked by GET --wait. */
  Wait,
  /** Sending the reply. */
  Send,
  /** Reply sent; draining what the client still sends before closing. */
  Linger,
  /** A watcher: the connection carries watch events (see `watchers.ts`). */
  Watch,
  /** Waiting for the cluster tier (a lookup, pull, cluster drop or `--cluster-sync` commit). */
  Remote,
  /** Closed. */
  Closed,
}

const EMPTY = new Uint8Array(0);
/** Size of a pooled input buffer. */
export const CONN_BUF = 4096;
const POOL_MAX = 64;
/** Most bytes one read takes beyond what the current step needs. */
export const READ_CHUNK = 64 * 1024;

/** Input buffers of {@link CONN_BUF} bytes, reused across connections. */
export class BufferPool {
  readonly #free: Uint8Array[] = [];

  /** A buffer of `size` bytes: a pooled one when `size` is {@link CONN_BUF}. */
  take(size: number): Uint8Array {
    return size === CONN_BUF ? this.#free.pop() ?? new Uint8Array(CONN_BUF) : new Uint8Array(size);
  }

  /** Give a connection's buffer back. */
  give(buf: Uint8Array): void {
    if (buf.length === CONN_BUF && this.#free.length < POOL_MAX) this.#free.push(buf);
  }
}

/** One connection. Fields are public to the session code that drives it. */
export class Conn {
  /** The poller token. */
  readonly token: number;
  /** The socket; -1 once closed or handed away. */
  fd: number;
  state: State = State.Header;
  buf: Uint8Array = EMPTY;
  /** Bytes buffered in {@link Conn.buf}. */
  len = 0;
  eof = false;
  header: Header | null = null;
  /** The descriptor that came with the current request's header, or -1. */
  reqFd = -1;
  /** Descriptors were lost in transit (MSG_CTRUNC). */
  fdLost = false;
  handler: Handler | null = null;
  step: Step | null = null;
  /** Body bytes the handler has taken. */
  consumed = 0;
  outcome: Outcome | null = null;
  out: Uint8Array = EMPTY;
  outOff = 0;
  /** Bytes of the reply sent before {@link Conn.out} (earlier chunks of a streamed body). */
  outBase = 0;
  /** The rest of a streamed reply body (LIST), or null. */
  stream: ReplyStream | null = null;
  /** Reply bytes and descriptors this connection is counted for in its uid's reply share. */
  heldBytes = 0;
  heldFds = 0;
  /** The digest a Worker computes from {@link Conn.reqFd}, until it settles. */
  hashing: Promise<unknown> | null = null;
  /** Reading stopped because the uid holds its whole reply share (see `fair_shares.ts`). */
  throttled = false;
  replyFd = -1;
  registered = false;
  keepAlive = false;
  served = 0;
  deadline: number;
  lingerLeft = 0;
  peer: AuditPeer | undefined;
  /** The request was parked by Flag.WAIT: the reply carries the bit to say it was honoured. */
  waited = false;
  /** The peer closed both directions (EPOLLHUP), not just its writing side. */
  hup = false;
  /** The last read came back short: nothing more is queued until epoll reports an edge. */
  drained = false;
  /** The current request's deadline already allows for its object's size (PUT). */
  sizedDeadline = true;
  /** When the current request's header was read (performance.now()), or -1 when not timed. */
  startedAt = -1;
  /**
   * The fair-share ledger's marks (`fair_shares.ts`), kept here rather than in WeakMaps keyed by
   * the connection (a WeakMap entry per connection cost about 3% of the broker's time): the uid
   * this connection is counted under (-1: not counted), the uid it is counted as a watcher under
   * (-1: unknown uid, null: not counted), whether it is counted as parked, and the bound job it
   * is parked for.
   */
  sharesUid = -1;
  /** See {@link Conn.sharesUid}. */
  sharesWatchUid: number | null = null;
  /** See {@link Conn.sharesUid}. */
  sharesParked = false;
  /** See {@link Conn.sharesUid}. */
  sharesParkedJob: string | null = null;

  /**
   * @param token the poller token
   * @param fd the accepted socket
   * @param deadline when the first state times out (performance.now() time)
   */
  constructor(token: number, fd: number, deadline: number) {
    this.token = token;
    this.fd = fd;
    this.deadline = deadline;
  }

  /** True for a kept-alive or fresh connection with no request begun. */
  get idle(): boolean {
    return this.state === State.Header && this.len === 0;
  }

  /** Make room for `want` more bytes after what is buffered. */
  reserve(want: number, pool: BufferPool): void {
    if (this.buf.length >= this.len + Math.max(want, 1)) return;
    const grown = pool.take(Math.max(this.buf.length * 2, this.len + want, CONN_BUF));
    grown.set(this.buf.subarray(0, this.len));
    this.releaseBuf(pool);
    this.buf = grown;
  }

  /** Drop `n` bytes from the front of the buffer. */
  consume(n: number): void {
    if (n === 0) return;
    this.buf.copyWithin(0, n, this.len);
    this.len -= n;
  }

  /**
   * Allow a publisher time to finish hashing its object before the digest arrives: a PUT that
   * has to wait for its body gets 10 ms more per MB of its descriptor (checked once).
   */
  sizeDeadline(): void {
    this.sizedDeadline = true;
    if (this.state !== State.Body || this.reqFd < 0) return;
    const st = tryFstatCached(this.reqFd);
    if (typeof st !== "number" && isRegular(st.mode)) this.deadline += Number(st.size) / 100_000;
  }

  /** Give the buffer back to the pool. */
  releaseBuf(pool: BufferPool): void {
    pool.give(this.buf);
    this.buf = EMPTY;
  }

  /**
   * Keep the first descriptor that came with the header; close every other one (D7), off the
   * loop when its close could block (see `src/sys/closer.ts`).
   */
  takeFds(fds: number[], truncated: boolean, headerPhase: boolean): void {
    let rest = fds;
    if (headerPhase) {
      if (truncated) this.fdLost = true;
      if (this.reqFd < 0 && fds.length > 0) {
        this.reqFd = fds[0] ?? -1;
        rest = fds.slice(1);
      }
    }
    closeAllDropped(rest);
  }

  /** Close the request's descriptor (off the loop when its close could block). */
  dropReqFd(): void {
    const fd = this.reqFd;
    this.reqFd = -1;
    closeDropped(fd);
  }

  /**
   * Read what is available into the buffer, up to what the current step needs (`need` bytes
   * buffered) plus a bounded read-ahead; descriptors that arrive are taken or closed. False when
   * nothing can be read now (the caller waits for readiness); true when bytes or the end of the
   * stream arrived (a reset counts as the end).
   */
  read(need: number, pool: BufferPool): boolean {
    // After a short read the socket is empty: wait for the next edge instead of a recvmsg that
    // would only say EAGAIN.
    if (this.drained) return false;
    const want = Math.max(need, HEADER_SIZE) - this.len;
    this.reserve(want, pool);
    const space = this.buf.length - this.len;
    const limit = Math.min(space, Math.max(want, READ_CHUNK));
    const headerPhase = this.state === State.Header && this.len < HEADER_SIZE;
    const r = recvMsg(this.fd, this.buf.subarray(this.len, this.len + limit));
    if (typeof r === "number") {
      if (r === -EAGAIN) return false;
      this.eof = true; // ECONNRESET and friends end the request like an end of stream.
      return true;
    }
    if (r.fds.length > 0 || r.truncated) this.takeFds(r.fds, r.truncated, headerPhase);
    if (r.bytes === 0) {
      this.eof = true;
      return true;
    }
    if (r.bytes < limit && r.fds.length === 0) this.drained = true;
    this.len += r.bytes;
    return true;
  }

  /**
   * In State.Linger: read and discard what the client still sends, up to `lingerLeft` bytes.
   * True when done (end of stream or enough read); false when the socket is empty for now.
   */
  drainLinger(scratch: Uint8Array): boolean {
    for (;;) {
      if (this.eof || this.lingerLeft <= 0) return true;
      const r = recvMsg(this.fd, scratch.subarray(0, Math.min(scratch.length, this.lingerLeft)));
      if (typeof r === "number") {
        if (r === -EAGAIN) return false;
        this.eof = true;
        continue;
      }
      closeAllDropped(r.fds);
      if (r.bytes === 0) this.eof = true;
      this.lingerLeft -= r.bytes;
    }
  }

  /** Forget the reply and close a descriptor it did not send. */
  clearReply(): void {
    this.outcome = null;
    this.out = EMPTY;
    this.outOff = 0;
    this.outBase = 0;
    this.stream = null;
    if (this.replyFd >= 0) closeQuietly(this.replyFd);
    this.replyFd = -1;
  }
}
