/**
 * One client-side connection to a broker: nonblocking connect, send and receive with deadlines,
 * waiting through the shared reactor so the caller's event loop never blocks.
 *
 * @module
 */

import { ErrnoError, TimeoutError } from "./errors.ts";
import { closeQuietly, errnoErrorOf } from "./ffi.ts";
import { EAGAIN, ECONNRESET, EPOLLIN, EPOLLOUT } from "./linux.ts";
import { waitReady } from "./reactor.ts";
import {
  closeAll,
  connectUnix,
  recvMsg,
  sendMsg,
  sockaddrUn,
  socketPathTooLong,
  unixSocket,
} from "./unix_socket.ts";

/** What {@link Connection.recvExact} returns: the bytes and any descriptors that came with them. */
export interface Chunk {
  /** Exactly the requested number of bytes. */
  readonly bytes: Uint8Array;
  /** Descriptors received while reading them; the caller owns them. */
  readonly fds: number[];
}

/** Thrown for a socket path that does not fit in sun_path. */
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

/**
 * A connected, nonblocking AF_UNIX stream socket with async helpers. Every operation takes an
 * absolute deadline (a `performance.now()` value).
 */
export class Connection implements Disposable {
  #fd: number;
  readonly #timeoutMs: number;

  private constructor(fd: number, timeoutMs: number) {
    this.#fd = fd;
    this.#timeoutMs = timeoutMs;
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
   */
  static async connect(path: string, timeoutMs: number): Promise<Connection> {
    const deadline = performance.now() + timeoutMs;
    const addr = sockaddrUn(path);
    if (addr === null) throw new SocketPathError(path);
    const fd = unixSocket(true);
    try {
      let backoff = 1;
      for (;;) {
        const r = connectUnix(fd, addr);
        if (r === 0) return new Connection(fd, timeoutMs);
        if (r !== -EAGAIN) throw errnoErrorOf("connect", -r);
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
    fds: readonly number[] = [],
  ): Promise<void> {
    let off = 0;
    let attach = fds;
    while (off < data.length || attach.length > 0) {
      const part = off === 0 ? data : data.subarray(off);
      const n = sendMsg(this.#live(), part, attach);
      if (n >= 0) {
        off += n;
        attach = [];
        continue;
      }
      if (n !== -EAGAIN) throw errnoErrorOf("send", -n, what);
      await this.#wait(EPOLLOUT, deadline, what);
    }
  }

  /**
   * Receive exactly `length` bytes. End of stream before that is ECONNRESET, like the C client.
   * Descriptors that arrive are collected and returned.
   */
  async recvExact(length: number, deadline: number, what: string): Promise<Chunk> {
    const bytes = new Uint8Array(length);
    const fds: number[] = [];
    let off = 0;
    try {
      while (off < length) {
        const r = recvMsg(this.#live(), off === 0 ? bytes : bytes.subarray(off));
        if (typeof r === "number") {
          if (r !== -EAGAIN) throw errnoErrorOf("recvmsg", -r, what);
          await this.#wait(EPOLLIN, deadline, what);
          continue;
        }
        fds.push(...r.fds);
        if (r.bytes === 0) throw errnoErrorOf("recvmsg", ECONNRESET, what);
        off += r.bytes;
      }
    } catch (e) {
      closeAll(fds);
      throw e;
    }
    return { bytes, fds };
  }

  /** Close the socket. Safe to call more than once. */
  close(): void {
    const fd = this.#fd;
    if (fd < 0) return;
    this.#fd = -1;
    closeQuietly(fd);
  }

  /** Same as {@link Connection.close}. */
  [Symbol.dispose](): void {
    this.close();
  }
}

/** True for the send errors after which a reply may still be waiting (defect D1). */
export function isPeerGone(e: unknown): boolean {
  return e instanceof ErrnoError && (e.code === "EPIPE" || e.code === "ECONNRESET");
}
