/**
 * Client side of WATCH: send the request on a connected transport, check the broker's answer,
 * then read event frames as an `AsyncIterable` of typed events. Closing is clean whichever way
 * the caller stops: `break` out of `for await`, an `AbortSignal`, `using`/`close()`.
 *
 * The transport is anything with the shape of `Connection` (a connected nonblocking socket with
 * deadline-bounded send and receive), so the client facade opens the connection and hands it
 * over; this module owns and closes it from then on.
 *
 * @module
 */

import { BrokerError, ProtocolError } from "../errors.ts";
import { fromBinary, fromUtf8, toBinary } from "../protocol/bytes.ts";
import {
  decodeWatchHead,
  encodeWatchRequest,
  finishWatchEvent,
  WATCH_FRAME_SIZE,
  type WatchEvent,
  type WatchKindName,
  type WatchSelector,
} from "../protocol/watch.ts";
import { Cmd, decodeHeader, HEADER_SIZE, isValidHeader } from "../protocol/wire.ts";
import { SHUT_RD, SHUT_WR } from "../sys/linux.ts";
import { closeAll, shutdownQuietly } from "../sys/unix_socket.ts";

/** What the watch needs from a connection (`Connection` has this shape). */
export interface WatchTransport {
  /** The socket descriptor (negative once closed). */
  readonly fd: number;
  /** Send all of `data` before `deadline` (a `performance.now()` value). */
  send(data: Uint8Array, deadline: number, what: string): Promise<void>;
  /** Receive exactly `length` bytes, and any descriptors that came with them. */
  recvExact(
    length: number,
    deadline: number,
    what: string,
  ): Promise<{ readonly bytes: Uint8Array; readonly fds: number[] }>;
  /** Close the socket. Safe to call twice. */
  close(): void;
}

/** What to watch: one name, a name prefix, or (empty object) every name the caller may list. */
export type WatchTarget =
  | { readonly name: string; readonly prefix?: never }
  | { readonly prefix: string; readonly name?: never }
  | { readonly name?: never; readonly prefix?: never };

/** Options of a watch. */
export interface WatchOptions {
  /** The caller's job; events are those the job may list. Null or absent: unscoped. */
  readonly job?: string | null;
  /** Stops the watch: the iteration ends (without an error) and the connection closes. */
  readonly signal?: AbortSignal;
  /** How long the broker has to accept the watch (ms); events themselves may take forever. */
  readonly timeoutMs?: number;
}

/** One event of a watch. */
export interface BusEvent {
  /** `publish`, `drop`, `release` (retention), `evict` (pressure) or `missed`. */
  readonly kind: WatchKindName;
  /** The object id (0 for `missed`). */
  readonly id: number;
  /** The object name as text (invalid UTF-8 shows as U+FFFD); "" for a `missed` of any name. */
  readonly name: string;
  /** The name's raw bytes. */
  readonly nameBytes: Uint8Array;
  /** Object size in bytes (0 for `missed`). */
  readonly size: number;
  /** The object's digest, null for `missed`. */
  readonly digest: string | null;
  /** When it happened, CLOCK_REALTIME nanoseconds. */
  readonly timeNs: bigint;
  /**
   * Events not delivered before this one because this watcher read too slowly: of this name
   * (a coalesced event), or of any name (a `missed` event with an empty name).
   */
  readonly missed: number;
}

const DEFAULT_ACCEPT_MS = 30_000;
const MAX_ERROR_TEXT = 65536;

function toBusEvent(ev: WatchEvent): BusEvent {
  const nameBytes = fromBinary(ev.name);
  return {
    kind: ev.kind,
    id: ev.id,
    name: fromUtf8(nameBytes),
    nameBytes,
    size: ev.size,
    digest: ev.digest,
    timeNs: ev.timeNs,
    missed: ev.missed,
  };
}

function selectorOf(target: WatchTarget): WatchSelector {
  const utf8 = (s: string): string => toBinary(new TextEncoder().encode(s));
  if (target.name !== undefined && target.prefix !== undefined) {
    throw new TypeError("Watch a name or a prefix, not both");
  }
  if (target.name !== undefined) {
    if (target.name === "") throw new TypeError("A watched name must not be empty");
    return { kind: "name", name: utf8(target.name) };
  }
  if (target.prefix !== undefined) {
    if (target.prefix === "") throw new TypeError("A watched prefix must not be empty");
    return { kind: "prefix", prefix: utf8(target.prefix) };
  }
  return { kind: "all" };
}

/**
 * A running watch: iterate it for events. Iterate it once; the connection closes when the
 * iteration ends, on abort, and on {@link Watch.close}. Typical use: `using watch = await
 * Watch.open(connection, { prefix: "model/" })`, then `for await (const ev of watch)`, where a
 * `break` closes the stream.
 */
export class Watch implements AsyncIterable<BusEvent>, Disposable {
  readonly #transport: WatchTransport;
  readonly #signal: AbortSignal | undefined;
  readonly #onAbort = (): void => this.#stop();
  #closed = false;
  #stopping = false;
  #reading = false;
  #iterated = false;
  /** The newest object id when the watch began (events follow it). */
  readonly newestId: number;
  /** How many events the broker queues for this watcher before it coalesces. */
  readonly queueLength: number;

  private constructor(
    transport: WatchTransport,
    newestId: number,
    queueLength: number,
    signal: AbortSignal | undefined,
  ) {
    this.#transport = transport;
    this.newestId = newestId;
    this.queueLength = queueLength;
    this.#signal = signal;
    // An abort that landed while the broker was answering stops the watch at once.
    if (signal?.aborted === true) this.#stopping = true;
    else signal?.addEventListener("abort", this.#onAbort, { once: true });
  }

  /**
   * Start a watch on a connected transport, which the watch owns from now on (it is closed
   * here on failure). Throws {@link BrokerError} when the broker refuses (a C broker answers
   * status 3 `unknown command`), {@link ProtocolError} on a malformed answer.
   *
   * @param transport a connected transport to the broker
   * @param target a name, a prefix, or `{}` for every name the caller may list
   * @param options job, abort signal, and how long the broker has to accept
   */
  static async open(
    transport: WatchTransport,
    target: WatchTarget,
    options: WatchOptions = {},
  ): Promise<Watch> {
    try {
      const selector = selectorOf(target);
      const job = options.job === undefined || options.job === null
        ? null
        : toBinary(new TextEncoder().encode(options.job));
      options.signal?.throwIfAborted();
      const deadline = performance.now() + (options.timeoutMs ?? DEFAULT_ACCEPT_MS);
      await transport.send(encodeWatchRequest(selector, job), deadline, "send watch request");
      const reply = await transport.recvExact(HEADER_SIZE, deadline, "receive response");
      closeAll(reply.fds);
      const h = decodeHeader(reply.bytes);
      if (!isValidHeader(h)) throw new ProtocolError("invalid response from broker");
      if (h.status !== 0) {
        if (h.textLen > MAX_ERROR_TEXT) throw new ProtocolError("invalid response from broker");
        const text = h.textLen === 0
          ? new Uint8Array(0)
          : (await transport.recvExact(h.textLen, deadline, "receive response text")).bytes;
        throw new BrokerError(h.status, fromUtf8(text));
      }
      if (h.cmd !== Cmd.WATCH || h.objectId > BigInt(Number.MAX_SAFE_INTEGER)) {
        throw new ProtocolError("invalid response from broker");
      }
      return new Watch(
        transport,
        Number(h.objectId),
        Number(h.size > 1_000_000_000n ? 1_000_000_000n : h.size),
        options.signal,
      );
    } catch (e) {
      transport.close();
      throw e;
    }
  }

  /** True once the watch is closed. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Wake a pending read (it then sees end of stream) and close. */
  #stop(): void {
    this.#stopping = true;
    if (this.#reading) {
      // A pending read is waiting on the descriptor: shutting the socket down wakes it, and
      // it closes the watch when it returns. Closing now could leave the wait hanging.
      const fd = this.#transport.fd;
      if (fd >= 0) {
        shutdownQuietly(fd, SHUT_RD);
        shutdownQuietly(fd, SHUT_WR);
      }
    } else {
      this.close();
    }
  }

  /** Stop the watch and close its connection. Safe to call twice, and while iterating. */
  close(): void {
    if (this.#closed) return;
    if (this.#reading) {
      this.#stop();
      return;
    }
    this.#closed = true;
    this.#signal?.removeEventListener("abort", this.#onAbort);
    this.#transport.close();
  }

  /** Same as {@link Watch.close}. */
  [Symbol.dispose](): void {
    this.close();
  }

  /** The events, in the order the broker sent them. Can be iterated once. */
  [Symbol.asyncIterator](): AsyncIterator<BusEvent> {
    if (this.#iterated) throw new TypeError("A watch can be iterated only once");
    this.#iterated = true;
    return this.#events();
  }

  async #read(length: number, what: string): Promise<Uint8Array | null> {
    this.#reading = true;
    try {
      const chunk = await this.#transport.recvExact(length, Infinity, what);
      closeAll(chunk.fds); // a broker never sends descriptors on a watch
      return chunk.bytes;
    } catch (e) {
      if (this.#stopping) return null;
      throw e;
    } finally {
      this.#reading = false;
    }
  }

  async *#events(): AsyncGenerator<BusEvent, void, undefined> {
    try {
      while (!this.#closed && !this.#stopping) {
        const headBytes = await this.#read(WATCH_FRAME_SIZE, "receive watch event");
        if (headBytes === null) return;
        const head = decodeWatchHead(headBytes);
        const bodyLength = head.nameLen + head.digestLen;
        const body = bodyLength === 0
          ? new Uint8Array(0)
          : await this.#read(bodyLength, "receive watch event");
        if (body === null) return;
        yield toBusEvent(finishWatchEvent(head, body));
      }
    } finally {
      this.#stopping = true;
      this.close();
    }
  }
}
