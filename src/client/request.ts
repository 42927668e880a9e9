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
} from "../protocol/wire.ts";
import { Connection, isPeerGone } from "./connection.ts";

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
    if (this.#closed) throw new TypeError("Client is closed");
    const reused = this.#idle.pop();
    try {
      return await this.#attempt(
        reused ?? await this.connect(timeoutMs),
        parts,
        fds,
        timeoutMs,
        rest,
      );
    } catch (e) {
      // A kept-alive connection the broker closed meanwhile: retry once on a fresh one. The
      // broker only closes idle connections, so the request was never processed.
      if (reused === undefined || !(e instanceof StaleConnection)) throw unwrapStale(e);
      return await this.#attempt(await this.connect(timeoutMs), parts, fds, timeoutMs, rest)
        .catch((e2) => Promise.reject(unwrapStale(e2)));
    }
  }

  async #attempt(
    conn: Connection,
    parts: readonly Part[],
    fds: readonly number[],
    timeoutMs: number,
    rest?: () => Promise<readonly Part[]>,
  ): Promise<Exchange> {
    const deadline = performance.now() + timeoutMs;
    const first = parts[0]?.[0];
    if (first !== undefined && this.#keepAlive) addExtFlags(first, Flag.KEEP_ALIVE);
    let reply: Reply;
    try {
      let sendError: unknown = null;
      try {
        await sendParts(conn, parts, fds, deadline);
        if (rest !== undefined) await sendParts(conn, await rest(), [], deadline);
      } catch (e) {
        if (!isPeerGone(e)) throw e;
        sendError = e;
      }
      try {
        reply = await readReply(conn, deadline);
      } catch (e) {
        if (e instanceof BrokerError || sendError === null) throw e;
        throw sendError;
      }
    } catch (e) {
      conn.close();
      if (e instanceof ErrnoError && (e.code === "ECONNRESET" || e.code === "EPIPE")) {
        throw new StaleConnection(e);
      }
      throw e;
    }
    const ext = extFlags(reply.header.reserved);
    if ((ext & Flag.DIGEST) !== 0) this.#brokerDigest = true;
    const keep = this.#keepAlive && (ext & Flag.KEEP_ALIVE) !== 0;
    // Settled once: a failure noticed after the reply was read in full (a bad descriptor, a
    // digest mismatch) must not close a connection that is back in the pool.
    let settled = false;
    return {
      conn,
      reply,
      done: () => {
        if (settled) return;
        settled = true;
        if (keep && !this.#closed && this.#idle.length < IDLE_POOL) this.#idle.push(conn);
        else conn.close();
      },
      fail: () => {
        if (settled) return;
        settled = true;
        conn.close();
      },
    };
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

async function sendParts(
  conn: Connection,
  parts: readonly Part[],
  fds: readonly number[],
  deadline: number,
): Promise<void> {
  // One message for the whole request; a failure is labelled with the part it happened in.
  const all = concat(parts.map(([b]) => b));
  try {
    await conn.send(all, deadline, "send", fds);
  } catch (e) {
    if (!(e instanceof ErrnoError)) throw e;
    throw new ErrnoError(e.syscall, e.errno, e.description, parts[0]?.[1]);
  }
}

async function readReply(conn: Connection, deadline: number): Promise<Reply> {
  const chunk = await conn.recvExact(HEADER_SIZE, deadline, "receive response");
  const header = decodeHeader(chunk.bytes);
  if (!isValidHeader(header)) {
    closeAll(chunk.fds);
    throw new ProtocolError("invalid response from broker");
  }
  if (header.status !== Status.OK) {
    closeAll(chunk.fds);
    let text = "";
    if (header.textLen > 0) {
      const t = await conn.recvExact(header.textLen, deadline, "receive response text");
      closeAll(t.fds);
      text = fromUtf8(t.bytes);
    }
    const error = new BrokerError(header.status, text);
    error.flags = header.reserved;
    throw error;
  }
  return { header, fds: chunk.fds };
}

function concat(parts: readonly Uint8Array[]): Uint8Array<ArrayBuffer> {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let off = 0;
  for (const p of parts) {
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
