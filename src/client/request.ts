/**
 * The request/response exchange of a client: open (or reuse) a connection, send one request
 * with its descriptors, read the reply header, and turn a broker error reply into a
 * {@link BrokerError}. Idle kept-alive connections are pooled here.
 *
 * Two seams for what comes next: {@link Requester.connect} is the one place a connection to the
 * broker is opened (the place to check the broker's identity), and an {@link Exchange} hands out
 * its connection, so a long-lived stream (a watch) can keep it instead of returning it.
 *
 * @module
 */

import { fromUtf8 } from "../protocol/bytes.ts";
import { BrokerError, ErrnoError, ProtocolError, Status } from "../errors.ts";
import { closeAll } from "../sys/unix_socket.ts";
import {
  addExtFlags,
  decodeHeader,
  extFlags,
  Flag,
  type Header,
  HEADER_SIZE,
  isValidHeader,
  Text,
} from "../protocol/wire.ts";
import { Connection, isPeerGone, READ_AHEAD_BYTES } from "./connection.ts";

/** A reply header and the descriptors that came with it. */
export interface Reply {
  /** The decoded header (status OK). */
  readonly header: Header;
  /** Descriptors received with it; the caller owns them. */
  readonly fds: number[];
}

/** One piece of a request and what sending it is called in an error (`send object name`). */
export type Part = readonly [Uint8Array, string];

/** A request sent and its reply header read; the connection is still open for the body. */
export interface Exchange {
  /** The connection, to read the reply's body from. */
  readonly conn: Connection;
  /** The reply header and its descriptors. */
  readonly reply: Reply;
  /** The reply was read in full: keep the connection for another request, or close it. */
  done(): void;
  /** The reply was not read in full: close the connection. No effect after {@link done}. */
  fail(): void;
}

/** How a {@link Requester} connects. */
export interface RequesterOptions {
  /** Broker socket path. */
  readonly socket: string;
  /** Ask the broker to keep connections open between requests. */
  readonly keepAlive: boolean;
  /** Microseconds a receive may wait on the calling thread, see ClientOptions.syncWaitUs. */
  readonly syncWaitUs: number;
  /** A uid or user name trusted as the broker, see ClientOptions.brokerUid. */
  readonly brokerUid?: number | string | undefined;
}

const IDLE_POOL = 4;
const NO_FDS: readonly number[] = [];
// The connection the last request of this process was sent on (see Requester.#attempt).
let lastSender: Connection | null = null;

/** Sends requests to one broker, reusing kept-alive connections (at most a few idle ones). */
export class Requester {
  readonly #socket: string;
  readonly #keepAlive: boolean;
  readonly #syncWaitUs: number;
  readonly #brokerUid: number | string | undefined;
  readonly #idle: Connection[] = [];
  #closed = false;
  #brokerDigest = false;

  /** A requester; nothing connects until the first request. */
  constructor(options: RequesterOptions) {
    this.#socket = options.socket;
    this.#keepAlive = options.keepAlive;
    this.#syncWaitUs = options.syncWaitUs;
    this.#brokerUid = options.brokerUid;
  }

  /** The socket path. */
  get socket(): string {
    return this.#socket;
  }

  /**
   * True once a reply from this socket advertised broker-computed digests (Flag.DIGEST); false
   * again after {@link Requester.forgetBrokerDigest} (another broker took the path over).
   */
  get brokerDigest(): boolean {
    return this.#brokerDigest;
  }

  /** The broker at this path did not honour Flag.DIGEST: send digests again. */
  forgetBrokerDigest(): void {
    this.#brokerDigest = false;
  }

  /**
   * Open a new connection to the broker: every connection a client makes starts here.
   *
   * @param timeoutMs the request timeout, from which the connection's deadlines derive
   */
  async connect(timeoutMs: number): Promise<Connection> {
    return await Connection.connect(this.#socket, timeoutMs, {
      syncWaitUs: this.#syncWaitUs,
      brokerUid: this.#brokerUid,
    });
  }

  /**
   * Send one request (all parts in one sendmsg where possible, descriptors on the first) and
   * read the reply header. A broker error becomes BrokerError. If sending fails because the
   * broker already answered and closed (defect D1), its answer is still read and reported.
   * `rest`, when given, supplies further parts once the first ones are sent (an early PUT).
   */
  async exchange(
    parts: readonly Part[],
    fds: readonly number[],
    timeoutMs: number,
    rest?: () => Promise<readonly Part[]>,
  ): Promise<Exchange> {
    const first = parts[0];
    const data = parts.length === 1 && first !== undefined ? first[0] : concat(parts);
    return await this.request(data, first?.[1] ?? "send", timeoutMs, fds, rest);
  }

  /**
   * {@link Requester.exchange} of a request encoded in one buffer, done on this thread when it
   * can be: the exchange itself when a kept connection took the request and its reply header
   * arrived within the sync wait; a promise of it when some step had to wait off-thread or a new
   * connection was needed. `data` may be a scratch buffer the caller reuses once this returns:
   * it is copied before anything waits. A failure to send is an {@link ErrnoError} labelled
   * `what` (`send get request: Broken pipe`).
   */
  request(
    data: Uint8Array,
    what: string,
    timeoutMs: number,
    fds: readonly number[] = NO_FDS,
    rest?: () => Promise<readonly Part[]>,
  ): Exchange | Promise<Exchange> {
    if (this.#closed) throw new TypeError("Client is closed");
    const reused = this.#idle.pop();
    if (reused === undefined) return this.#fresh(data.slice(), what, timeoutMs, fds, rest);
    let r: Exchange | Promise<Exchange>;
    try {
      r = this.#attempt(reused, data, what, timeoutMs, fds, rest);
    } catch (e) {
      // A kept-alive connection the broker closed meanwhile: retry once on a fresh one. The
      // broker only closes idle connections, so the request was never processed.
      if (!(e instanceof StaleConnection)) throw e;
      return this.#fresh(data.slice(), what, timeoutMs, fds, rest);
    }
    if (!(r instanceof Promise)) return r;
    const copy = data.slice();
    return r.catch((e) => {
      if (!(e instanceof StaleConnection)) throw e;
      return this.#fresh(copy, what, timeoutMs, fds, rest);
    });
  }

  async #fresh(
    data: Uint8Array,
    what: string,
    timeoutMs: number,
    fds: readonly number[],
    rest: (() => Promise<readonly Part[]>) | undefined,
  ): Promise<Exchange> {
    const conn = await this.connect(timeoutMs);
    try {
      return await this.#attempt(conn, data, what, timeoutMs, fds, rest);
    } catch (e) {
      throw unwrapStale(e);
    }
  }

  /** Send and read the reply header, on this thread as far as it goes without waiting. */
  #attempt(
    conn: Connection,
    data: Uint8Array,
    what: string,
    timeoutMs: number,
    fds: readonly number[],
    rest: (() => Promise<readonly Part[]>) | undefined,
  ): Exchange | Promise<Exchange> {
    const deadline = performance.now() + timeoutMs;
    if (this.#keepAlive && data.length >= HEADER_SIZE) addExtFlags(data, Flag.KEEP_ALIVE);
    let sent: number;
    let sendError: unknown = null;
    try {
      sent = conn.sendNow(data, what, fds);
    } catch (e) {
      if (!isPeerGone(e)) throw this.#failed(conn, e);
      sendError = e;
      sent = data.length;
    }
    if (sent < data.length || (rest !== undefined && sendError === null)) {
      // What is left of the request is kept: `data` may be the caller's scratch buffer.
      const left = data.slice(sent);
      return this.#finish(conn, left, sent === 0 ? fds : NO_FDS, what, deadline, rest);
    }
    // When the last request of this process went out on another connection, several requests
    // are under way at once (several clients, or concurrent calls on one): let the others send
    // theirs before this one waits, so the broker gets them together and this thread wakes
    // once for several replies instead of the requests going out one round trip at a time.
    const concurrent = lastSender !== conn && lastSender !== null;
    lastSender = conn;
    if (concurrent && rest === undefined) return this.#yieldThenRead(conn, sendError, deadline);
    let reply: Reply | null;
    try {
      reply = readReplyNow(conn, deadline);
    } catch (e) {
      throw this.#failed(conn, e instanceof BrokerError || sendError === null ? e : sendError);
    }
    if (reply === null) return this.#finishRead(conn, sendError, deadline);
    return this.#settle(conn, reply);
  }

  /** The rest of an attempt that has to wait to send: send what is left, then read. */
  async #finish(
    conn: Connection,
    left: Uint8Array,
    fds: readonly number[],
    what: string,
    deadline: number,
    rest: (() => Promise<readonly Part[]>) | undefined,
  ): Promise<Exchange> {
    let sendError: unknown = null;
    try {
      try {
        if (left.length > 0 || fds.length > 0) await conn.send(left, deadline, what, fds);
        if (rest !== undefined) {
          const parts = await rest();
          await conn.send(concat(parts), deadline, parts[0]?.[1] ?? what);
        }
      } catch (e) {
        if (!isPeerGone(e)) throw e;
        sendError = e;
      }
    } catch (e) {
      throw this.#failed(conn, e);
    }
    return await this.#finishRead(conn, sendError, deadline);
  }

  /** Read the reply header once the microtasks queued before this have run. */
  async #yieldThenRead(conn: Connection, sendError: unknown, deadline: number): Promise<Exchange> {
    await null;
    return await this.#finishRead(conn, sendError, deadline);
  }

  /** Read the reply header, waiting off-thread as needed. */
  async #finishRead(conn: Connection, sendError: unknown, deadline: number): Promise<Exchange> {
    let reply: Reply;
    try {
      reply = await readReply(conn, deadline);
    } catch (e) {
      throw this.#failed(conn, e instanceof BrokerError || sendError === null ? e : sendError);
    }
    return this.#settle(conn, reply);
  }

  /** Close the connection a request failed on; what to throw (StaleConnection for a reset). */
  #failed(conn: Connection, e: unknown): unknown {
    conn.close();
    if (e instanceof ErrnoError && (e.code === "ECONNRESET" || e.code === "EPIPE")) {
      return new StaleConnection(e);
    }
    return e;
  }

  #settle(conn: Connection, reply: Reply): Exchange {
    const ext = extFlags(reply.header.reserved);
    if ((ext & Flag.DIGEST) !== 0) this.#brokerDigest = true;
    const keep = this.#keepAlive && (ext & Flag.KEEP_ALIVE) !== 0;
    return new Pending(this, conn, reply, keep);
  }

  /** Take back a connection whose reply was read in full: pool it when kept, else close it. */
  giveBack(conn: Connection, keep: boolean): void {
    if (keep && !this.#closed && this.#idle.length < IDLE_POOL) this.#idle.push(conn);
    else conn.close();
  }

  /** Close idle connections and refuse further requests. Safe to call more than once. */
  close(): void {
    this.#closed = true;
    for (const c of this.#idle) c.close();
    this.#idle.length = 0;
  }
}

/** Marks a failure on a reused connection that the broker had closed. */
class StaleConnection extends Error {
  readonly original: Error;
  constructor(original: Error) {
    super(original.message);
    this.original = original;
  }
}

function unwrapStale(e: unknown): unknown {
  return e instanceof StaleConnection ? e.original : e;
}

/** An exchange under way, settled once by done() or fail(). */
class Pending implements Exchange {
  readonly conn: Connection;
  readonly reply: Reply;
  readonly #requester: Requester;
  readonly #keep: boolean;
  // Settled once: a failure noticed after the reply was read in full (a bad descriptor, a
  // digest mismatch) must not close a connection that is back in the pool.
  #settled = false;

  constructor(requester: Requester, conn: Connection, reply: Reply, keep: boolean) {
    this.#requester = requester;
    this.conn = conn;
    this.reply = reply;
    this.#keep = keep;
  }

  done(): void {
    if (this.#settled) return;
    this.#settled = true;
    this.#requester.giveBack(this.conn, this.#keep);
  }

  fail(): void {
    if (this.#settled) return;
    this.#settled = true;
    this.conn.close();
  }
}

/**
 * The reply header, when it (and the text of an error reply) arrived within the sync wait; null
 * when the caller must wait off-thread ({@link readReply}). A broker error reply is thrown.
 */
function readReplyNow(conn: Connection, deadline: number): Reply | null {
  if (!conn.fillNow(HEADER_SIZE, deadline, "receive response")) return null;
  const header = decodeHeader(conn.peek(HEADER_SIZE));
  if (!isValidHeader(header)) {
    closeAll(conn.takeFds());
    throw new ProtocolError("invalid response from broker");
  }
  if (header.status === Status.OK) {
    conn.take(HEADER_SIZE);
    return { header, fds: conn.takeFds() };
  }
  const all = HEADER_SIZE + header.textLen;
  if (all > READ_AHEAD_BYTES || !conn.fillNow(all, deadline, "receive response text")) return null;
  conn.take(HEADER_SIZE);
  closeAll(conn.takeFds());
  throw brokerError(header, fromUtf8(conn.take(header.textLen)));
}

async function readReply(conn: Connection, deadline: number): Promise<Reply> {
  await conn.fill(HEADER_SIZE, deadline, "receive response");
  const header = decodeHeader(conn.take(HEADER_SIZE));
  const fds = conn.takeFds();
  if (!isValidHeader(header)) {
    closeAll(fds);
    throw new ProtocolError("invalid response from broker");
  }
  if (header.status !== Status.OK) {
    closeAll(fds);
    let text = "";
    if (header.textLen > 0) {
      const t = await conn.recvExact(header.textLen, deadline, "receive response text");
      closeAll(t.fds);
      text = fromUtf8(t.bytes);
    }
    throw brokerError(header, text);
  }
  return { header, fds };
}

function brokerError(header: Header, text: string): BrokerError {
  const error = new BrokerError(header.status, text);
  error.flags = header.reserved;
  return error;
}

function concat(parts: readonly Part[]): Uint8Array<ArrayBuffer> {
  let n = 0;
  for (const [p] of parts) n += p.length;
  const out = new Uint8Array(n);
  let off = 0;
  for (const [p] of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** What a client's request paths (`put.ts`, `get_stat.ts`) need: its requester and timeout. */
export interface RequestLink {
  /** Sends the requests. */
  readonly requester: Requester;
  /** The client's timeout for one request, in ms. */
  readonly timeoutMs: number;
}

/** True for a broker's answer to a command it does not know (a C broker, an older memfdbus). */
export function isUnknownCommand(e: unknown): boolean {
  return e instanceof BrokerError && e.status === Status.BAD_REQUEST &&
    e.text === Text.unknownCommand;
}

/**
 * The text body of an OK reply (STAT's and USAGE's JSON), read within the request timeout and
 * parsed by `parse`; the exchange is then done, or failed when reading or parsing throws.
 * Descriptors that came with the reply are closed.
 */
export async function replyText<T>(
  r: Exchange,
  timeoutMs: number,
  what: string,
  parse: (text: string) => T,
): Promise<T> {
  closeAll(r.reply.fds);
  try {
    const body = await r.conn.recvExact(
      r.reply.header.textLen,
      performance.now() + timeoutMs,
      what,
    );
    closeAll(body.fds);
    const value = parse(fromUtf8(body.bytes));
    r.done();
    return value;
  } catch (e) {
    r.fail();
    throw e;
  }
}
