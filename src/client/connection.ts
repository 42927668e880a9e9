/**
 * One client-side connection to a broker: nonblocking connect, send and receive with deadlines,
 * waiting through the shared reactor so the caller's event loop never blocks.
 *
 * @module
 */

import { ErrnoError, ProtocolError, TimeoutError } from "../errors.ts";
import { closeQuietly, errnoErrorOf, libc, strerror } from "../ffi.ts";
import { inProcess } from "../sys/inprocess.ts";
import { checkBrokerPeer } from "./peer_check.ts";
import { EAGAIN, ECONNRESET, EPOLLIN, EPOLLOUT, POLLIN } from "../sys/linux.ts";
import { waitReady } from "../sys/reactor.ts";
import {
  closeAll,
  connectUnix,
  recvMsg,
  sendMsg,
  sockaddrUn,
  socketPathTooLong,
  unixSocket,
} from "../sys/unix_socket.ts";

/** What {@link Connection.recvExact} returns: the bytes and any descriptors that came with them. */
export interface Chunk {
  /** Exactly the requested number of bytes. */
  readonly bytes: Uint8Array;
  /** Descriptors received while reading them; the caller owns them. */
  readonly fds: number[];
}

/**
 * Thrown for a socket path that does not fit in sun_path.
 *
 * @example
 * ```ts
 * import { Client, SocketPathError } from "@memfdbus/memfdbus";
 * await using client = new Client({ socket: `/tmp/${"x".repeat(120)}.sock` });
 * try {
 *   await client.list();
 * } catch (e) {
 *   if (e instanceof SocketPathError) console.error(e.message); // socket path too long: ...
 * }
 * ```
 */
export class SocketPathError extends Error {
  /**
   * Describe a path too long for sun_path.
   *
   * @param path the offending path
   */
  constructor(path: string) {
    super(socketPathTooLong(path));
    this.name = "SocketPathError";
  }
}

/** How {@link Connection.connect} connects. */
export interface ConnectOptions {
  /** Microseconds a receive may wait on the calling thread (default 0). */
  readonly syncWaitUs?: number;
  /**
   * A uid or user name trusted as the broker besides root and this process's own uid; by
   * default the one named by `--broker-uid` or `MEMFDBUS_BROKER_UID`.
   */
  readonly brokerUid?: number | string | undefined;
}

/**
 * connect(2) to the broker socket failed. An {@link ErrnoError} (`code` tells why, for example
 * `ENOENT` when nothing is at the path) whose message names the socket:
 * `connect: No such file or directory (socket /tmp/x.sock)`.
 *
 * @example
 * ```ts
 * import { Client, ConnectError } from "@memfdbus/memfdbus";
 * await using client = new Client({ socket: "/tmp/nowhere.sock" });
 * try {
 *   await client.list();
 * } catch (e) {
 *   if (e instanceof ConnectError) console.error(e.socket, e.code); // /tmp/nowhere.sock ENOENT
 * }
 * ```
 */
export class ConnectError extends ErrnoError {
  /** The socket path that could not be connected to. */
  readonly socket: string;

  /**
   * Wrap a failed connect(2).
   *
   * @param socket the socket path
   * @param errno the errno value connect left
   */
  constructor(socket: string, errno: number) {
    super("connect", errno, strerror(errno));
    this.message = `connect: ${strerror(errno)} (socket ${socket})`;
    this.name = "ConnectError";
    this.socket = socket;
  }
}

/**
 * A connected, nonblocking AF_UNIX stream socket with async helpers. Every operation takes an
 * absolute deadline (a `performance.now()` value).
 */
export class Connection implements Disposable {
  #fd: number;
  readonly #timeoutMs: number;
  readonly #syncWaitUs: number;
  // Read-ahead: one recvmsg usually brings a whole reply.
  #rbuf: Uint8Array = bufferPool.pop() ?? new Uint8Array(READ_AHEAD);
  #rstart = 0;
  #rend = 0;
  #rfds: number[] = [];
  // A request went out and nothing has been received since.
  #awaitingReply = false;
  // fillNow's sync wait ran out: the next wait is off-thread (one sync wait per readiness).
  #waitOffThread = false;

  /** Wrap a connected descriptor. */
  private constructor(fd: number, timeoutMs: number, syncWaitUs: number) {
    this.#fd = fd;
    this.#timeoutMs = timeoutMs;
    this.#syncWaitUs = syncWaitUs;
  }

  /** The socket descriptor (-1 once closed). */
  get fd(): number {
    return this.#fd;
  }

  /**
   * Connect to a broker socket. A full listen backlog is retried until the deadline.
   *
   * @param path the socket path
   * @param timeoutMs the request timeout, from which every deadline of this connection derives
   * @param options `syncWaitUs`: how long a receive may wait on the calling thread before it
   *   waits off-thread (a short blocking wait saves a thread hop when the broker answers
   *   quickly); `brokerUid`: a uid or user name to trust as the broker besides root and this
   *   process's own uid (see `peer_check.ts`)
   * @throws {BrokerIdentityError} when the listener runs as a user the client does not trust
   */
  static async connect(
    path: string,
    timeoutMs: number,
    options: ConnectOptions = {},
  ): Promise<Connection> {
    const syncWaitUs = options.syncWaitUs ?? 0;
    const deadline = performance.now() + timeoutMs;
    let addr = addresses.get(path);
    if (addr === undefined) {
      const encoded = sockaddrUn(path);
      if (encoded === null) throw new SocketPathError(path);
      if (addresses.size > 32) addresses.clear();
      addresses.set(path, encoded);
      addr = encoded;
    }
    const fd = unixSocket(true);
    try {
      let backoff = 1;
      for (;;) {
        const r = connectUnix(fd, addr);
        if (r === 0) {
          checkBrokerPeer(fd, path, options.brokerUid);
          return new Connection(fd, timeoutMs, syncWaitUs);
        }
        if (r !== -EAGAIN) throw new ConnectError(path, -r);
        const left = deadline - performance.now();
        if (left <= 0) throw new TimeoutError("connect", timeoutMs);
        await new Promise((res) => setTimeout(res, Math.min(backoff, left)));
        backoff = Math.min(backoff * 2, 50);
      }
    } catch (e) {
      closeQuietly(fd);
      throw e;
    }
  }

  #live(): number {
    if (this.#fd < 0) throw new TypeError("Connection is closed");
    return this.#fd;
  }

  async #wait(events: number, deadline: number, what: string): Promise<void> {
    const left = deadline - performance.now();
    if (left <= 0) throw new TimeoutError(what, this.#timeoutMs);
    try {
      await waitReady(this.#live(), events, left, what);
    } catch (e) {
      if (e instanceof TimeoutError) throw new TimeoutError(what, this.#timeoutMs);
      throw e;
    }
  }

  /**
   * Send all of `data`, attaching `fds` to the first sendmsg. Errors are {@link ErrnoError}s
   * labelled `what` (for example `send put request: Broken pipe`).
   */
  async send(
    data: Uint8Array,
    deadline: number,
    what: string,
    fds: readonly number[] = NO_FDS,
  ): Promise<void> {
    let off = this.sendNow(data, what, fds);
    while (off < data.length) {
      await this.#wait(EPOLLOUT, deadline, what);
      off += this.sendNow(off === 0 ? data : data.subarray(off), what, off === 0 ? fds : NO_FDS);
    }
  }

  /**
   * Send as much of `data` as the socket takes now, attaching `fds` to the first sendmsg, and
   * return the number of bytes sent (less than `data.length` when the socket buffer is full;
   * the descriptors go with the first byte sent). Errors are {@link ErrnoError}s labelled
   * `what`. The next receive expects a reply, so it waits before its first recvmsg.
   */
  sendNow(data: Uint8Array, what: string, fds: readonly number[] = NO_FDS): number {
    const fd = this.#live();
    let off = 0;
    let attach = fds;
    while (off < data.length || attach.length > 0) {
      const n = sendMsg(fd, off === 0 ? data : data.subarray(off), attach);
      if (n >= 0) {
        off += n;
        attach = NO_FDS;
        continue;
      }
      if (n !== -EAGAIN) throw errnoErrorOf("send", -n, what);
      break;
    }
    this.#awaitingReply = true;
    return off;
  }

  /** Bytes received and not yet taken. */
  get buffered(): number {
    return this.#rend - this.#rstart;
  }

  /**
   * Have at least `length` bytes (at most {@link READ_AHEAD_BYTES}) in the read-ahead buffer,
   * reading what the socket holds and waiting on this thread for at most the sync wait. True
   * when they are there; false when the caller must wait off-thread ({@link Connection.readable})
   * and try again. End of stream is ECONNRESET, like the C client.
   */
  fillNow(length: number, deadline: number, what: string): boolean {
    if (this.#rend - this.#rstart >= length) return true;
    const fd = this.#live();
    if (this.#rstart === this.#rend) this.#rstart = this.#rend = 0;
    else if (this.#rstart + length > this.#rbuf.length) {
      this.#rbuf.copyWithin(0, this.#rstart, this.#rend);
      this.#rend -= this.#rstart;
      this.#rstart = 0;
    }
    // The sync wait ran out since the socket was last readable: only an off-thread wait is left.
    if (this.#waitOffThread) return false;
    // Right after a request the reply is not there yet: a recvmsg could only say EAGAIN.
    if (this.#awaitingReply && this.#rend === 0 && this.#canWaitHere()) {
      if (!this.#waitHere(deadline)) return this.#offThreadNext();
    }
    while (this.#rend - this.#rstart < length) {
      const r = recvMsg(fd, this.#rend === 0 ? this.#rbuf : this.#rbuf.subarray(this.#rend));
      if (typeof r === "number") {
        if (r !== -EAGAIN) throw errnoErrorOf("recvmsg", -r, what);
        if (!this.#waitHere(deadline)) return this.#offThreadNext();
        continue;
      }
      this.#awaitingReply = false;
      if (r.fds.length > 0) { for (const d of r.fds) this.#rfds.push(d); }
      if (r.bytes === 0) throw errnoErrorOf("recvmsg", ECONNRESET, what);
      this.#rend += r.bytes;
    }
    return true;
  }

  /** The sync wait ran out: say so (false), and wait off-thread before waiting here again. */
  #offThreadNext(): false {
    this.#waitOffThread = true;
    return false;
  }

  /** Wait off-thread until the socket is readable (or the deadline passes: TimeoutError). */
  async readable(deadline: number, what: string): Promise<void> {
    await this.#wait(EPOLLIN, deadline, what);
    this.#awaitingReply = false;
    this.#waitOffThread = false;
  }

  /** {@link Connection.fillNow}, waiting off-thread as often as needed. */
  async fill(length: number, deadline: number, what: string): Promise<void> {
    while (!this.fillNow(length, deadline, what)) await this.readable(deadline, what);
  }

  /**
   * The next `length` buffered bytes (see {@link Connection.fillNow}), consumed: a view of the
   * read-ahead buffer, valid until the next receive on this connection.
   */
  take(length: number): Uint8Array {
    const start = this.#rstart;
    if (this.#rend - start < length) throw new RangeError("take: not enough bytes buffered");
    this.#rstart = start + length;
    return this.#rbuf.subarray(start, start + length);
  }

  /** The next `length` buffered bytes, not consumed: a view valid until the next receive. */
  peek(length: number): Uint8Array {
    if (this.#rend - this.#rstart < length) throw new RangeError("peek: not enough bytes buffered");
    return this.#rbuf.subarray(this.#rstart, this.#rstart + length);
  }

  /** Descriptors received so far and not yet handed out; the caller owns them. */
  takeFds(): number[] {
    const fds = this.#rfds;
    if (fds.length === 0) return [];
    this.#rfds = [];
    return fds;
  }

  #canWaitHere(): boolean {
    return this.#syncWaitUs > 0 && inProcess.brokers === 0;
  }

  /** Wait on this thread (bounded by the sync wait); true when the socket became readable. */
  #waitHere(deadline: number): boolean {
    if (!this.#canWaitHere()) return false;
    const us = Math.min(this.#syncWaitUs, Math.max(0, (deadline - performance.now()) * 1000));
    if (us <= 0) return false;
    pollView.setInt32(0, this.#live(), true);
    pollView.setInt16(4, POLLIN, true);
    pollView.setInt16(6, 0, true);
    if (us !== timespecUs) {
      timespecUs = us;
      timespec[0] = BigInt(Math.floor(us / 1e6));
      timespec[1] = BigInt(Math.floor((us % 1e6) * 1000));
    }
    return libc.symbols.ppoll(pollBuf, 1n, timespecBytes, null) > 0;
  }

  /**
   * Receive exactly `length` bytes. End of stream before that is ECONNRESET, like the C client.
   * Descriptors that arrive are collected and returned.
   */
  async recvExact(length: number, deadline: number, what: string): Promise<Chunk> {
    const bytes = new Uint8Array(length);
    const fds: number[] = this.#rfds;
    this.#rfds = [];
    let off = Math.min(length, this.#rend - this.#rstart);
    if (off > 0) {
      bytes.set(this.#rbuf.subarray(this.#rstart, this.#rstart + off));
      this.#rstart += off;
    }
    try {
      // Right after a request the reply is not there yet: a recvmsg could only say EAGAIN.
      if (off === 0 && length > 0 && this.#awaitingReply && this.#canWaitHere()) {
        if (!this.#waitHere(deadline)) await this.#wait(EPOLLIN, deadline, what);
        this.#awaitingReply = false;
      }
      while (off < length) {
        // Small remainders go through the read-ahead buffer, large ones straight into place.
        const direct = length - off >= this.#rbuf.length;
        const target = direct ? bytes.subarray(off) : this.#rbuf;
        const r = recvMsg(this.#live(), target);
        if (typeof r === "number") {
          if (r !== -EAGAIN) throw errnoErrorOf("recvmsg", -r, what);
          if (!this.#waitHere(deadline)) await this.#wait(EPOLLIN, deadline, what);
          continue;
        }
        this.#awaitingReply = false;
        if (r.fds.length > 0) fds.push(...r.fds);
        if (r.bytes === 0) throw errnoErrorOf("recvmsg", ECONNRESET, what);
        if (direct) {
          off += r.bytes;
          continue;
        }
        const take = Math.min(r.bytes, length - off);
        bytes.set(this.#rbuf.subarray(0, take), off);
        off += take;
        this.#rstart = take;
        this.#rend = r.bytes;
      }
    } catch (e) {
      closeAll(fds);
      throw e;
    }
    return { bytes, fds };
  }

  /**
   * Give up the socket: the caller owns the returned descriptor from now on (a takeover hands
   * the connection to the shadow frame link). Refused while bytes or descriptors received but
   * not yet read are buffered here, since they would be lost.
   */
  detach(): number {
    const fd = this.#live();
    if (this.#rend > this.#rstart || this.#rfds.length > 0) {
      throw new ProtocolError("broker sent more than its reply");
    }
    this.#release();
    return fd;
  }

  /** Close the socket (and any descriptor received but not handed out). Safe to call twice. */
  close(): void {
    const fd = this.#fd;
    if (fd < 0) return;
    this.#release();
    closeQuietly(fd);
  }

  /** Forget the socket and give back the read-ahead buffer. */
  #release(): void {
    this.#fd = -1;
    closeAll(this.#rfds);
    this.#rfds = [];
    if (bufferPool.length < 8) bufferPool.push(this.#rbuf);
    this.#rbuf = new Uint8Array(0);
    this.#rstart = this.#rend = 0;
    this.#awaitingReply = false;
    this.#waitOffThread = false;
  }

  /** Same as {@link Connection.close}. */
  [Symbol.dispose](): void {
    this.close();
  }
}

const READ_AHEAD = 4096;
/** The read-ahead buffer's size: the most {@link Connection.fillNow} can hold. */
export const READ_AHEAD_BYTES = READ_AHEAD;
const NO_FDS: readonly number[] = [];
const bufferPool: Uint8Array[] = [];
const addresses = new Map<string, Uint8Array<ArrayBuffer>>();
const pollBuf = new Uint8Array(8);
const pollView = new DataView(pollBuf.buffer);
const timespec = new BigInt64Array(2);
const timespecBytes = new Uint8Array(timespec.buffer);
let timespecUs = -1;

/** True for the send errors after which a reply may still be waiting (defect D1). */
export function isPeerGone(e: unknown): boolean {
  return e instanceof ErrnoError && (e.code === "EPIPE" || e.code === "ECONNRESET");
}
