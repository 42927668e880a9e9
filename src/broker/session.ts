/**
 * Sessions: each connection's state machine. A request is read (header, then whatever body the
 * handler asks for), handled by the pure handler in `src/core/handlers.ts` (which may ask for a
 * digest or park on GET --wait), audited, mirrored to the shadow when it changed the store, and
 * answered in one sendmsg; then the connection is kept alive, drained (linger) or closed.
 *
 * Everything runs on nonblocking sockets: a step that cannot finish registers the socket with
 * epoll (edge-triggered, only on the first EAGAIN) and returns; the loop calls
 * {@link Sessions.event} when it is ready again. The reply half (sending, auditing after the
 * send, keep-alive, watch, linger) is in `session_reply.ts`; what sessions are built from is in
 * `session_parts.ts`.
 *
 * @module
 */

import { blankRecord } from "../core/audit.ts";
import {
  badHeaderOutcome,
  type DigestAnswer,
  errorOutcome,
  handle,
  type Outcome,
  type StepInput,
  unknownCommandOutcome,
} from "../core/handlers.ts";
import type { StoredObject } from "../core/store.ts";
import { Status } from "../errors.ts";
import { closeQuietly } from "../ffi.ts";
import { closeDropped } from "../sys/closer.ts";
import {
  Cmd,
  decodeHeader,
  extFlags,
  Flag,
  HEADER_SIZE,
  isValidHeader,
  requestBytes,
  setReserved,
  Text,
  withExt,
} from "../protocol/wire.ts";
import { peerUid } from "../sys/peer_uid.ts";
import { EPOLLERR, EPOLLET, EPOLLHUP, EPOLLIN, EPOLLOUT, EPOLLRDHUP } from "../sys/linux.ts";
import type { PollEvent } from "../sys/poller.ts";
import { BufferPool, Conn, READ_CHUNK, State } from "./connection.ts";
import { FIRST_RESERVED_TOKEN } from "./loop.ts";
import type { ClusterSeam } from "./cluster_seam.ts";
import type { RemoteAnswer } from "../core/remote.ts";
import { requestContext, type SessionParts } from "./session_parts.ts";
import {
  internalErrorReply,
  linger,
  LINGER_BYTES,
  record,
  sendFailed,
  type SendHost,
  sendReply,
} from "./session_reply.ts";

export type { Commit, RunState, SessionParts } from "./session_parts.ts";

/** Body pieces up to this size reach handlers in one reused buffer (names, digests, job ids). */
const BODY_VIEW = 1024;

/** Every open connection and the state machine that drives them. */
export class Sessions {
  readonly #p: SessionParts;
  readonly #conns = new Map<number, Conn>();
  readonly #pool = new BufferPool();
  /** Where body pieces of up to {@link BODY_VIEW} bytes are handed to handlers. */
  readonly #bodyView = new Uint8Array(BODY_VIEW);
  readonly #host: SendHost;
  readonly #reopen: (obj: StoredObject) => number;
  readonly #release: (obj: StoredObject, last: boolean) => void;
  readonly #now: () => bigint;
  #nextToken = 1;
  #cluster: ClusterSeam | null = null;
  /** Connections in State.Linger. */
  lingering = 0;

  /**
   * @param parts what sessions use
   * @param clock CLOCK_REALTIME in ns, for the objects' creation time
   */
  constructor(parts: SessionParts, clock: () => bigint) {
    this.#p = parts;
    const { descriptors, events } = parts;
    this.#reopen = (obj) => descriptors.reopen(obj);
    this.#release = (obj, last) => {
      events.emit("drop", obj);
      if (last) descriptors.release(obj);
    };
    this.#now = clock;
    this.#host = {
      parts,
      scratch: new Uint8Array(READ_CHUNK),
      watch: (conn) => this.#watch(conn),
      close: (conn) => this.close(conn),
      lingered: () => this.lingering++,
      again: (conn) => this.#again(conn),
    };
  }

  /** Use a cluster tier (`--cluster`) from now on. */
  attachCluster(cluster: ClusterSeam): void {
    this.#cluster = cluster;
  }

  /** Connections open now. */
  get size(): number {
    return this.#conns.size;
  }

  /** Every open connection (a copy, safe to close them while iterating). */
  all(): Conn[] {
    return [...this.#conns.values()];
  }

  /** A new connection on an accepted socket, timing out at `deadline`. */
  register(fd: number, deadline: number): Conn {
    let token = this.#nextToken;
    while (this.#conns.has(token) || token === 0 || token >= FIRST_RESERVED_TOKEN) {
      token = token >= FIRST_RESERVED_TOKEN - 1 ? 1 : token + 1;
    }
    this.#nextToken = token + 1;
    const conn = new Conn(token, fd, deadline);
    this.#conns.set(token, conn);
    return conn;
  }

  /** Forget a connection whose socket now belongs to someone else (a takeover link). */
  detach(conn: Conn): void {
    this.#conns.delete(conn.token);
    conn.state = State.Closed;
    conn.fd = -1;
    this.#p.ledger?.closed(conn);
  }

  /** A readiness event for a session token. */
  event(ev: PollEvent): void {
    const conn = this.#conns.get(ev.token);
    if (conn === undefined) return;
    if (ev.events & (EPOLLHUP | EPOLLERR)) conn.hup = true;
    conn.drained = false;
    if (ev.events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR | EPOLLOUT)) this.pump(conn);
  }

  /**
   * An exception escaped while serving the connection `token` (a bug): answer that request with
   * an internal error and close the connection; the broker serves on. Rethrows when the token is
   * not a session (then the loop stops the broker, which exits non-zero).
   */
  fault(token: number, e: unknown): void {
    const conn = this.#conns.get(token);
    if (conn === undefined) throw e;
    this.#p.report(`memfdbus broker: internal error in a request: ${(e as Error).stack ?? e}`);
    try {
      if (conn.state !== State.Send && conn.state !== State.Linger) {
        internalErrorReply(this.#host, conn);
      }
    } finally {
      this.close(conn);
    }
  }

  /** Deadlines and stalled reads, checked by the loop's sweep. */
  sweep(now: number): void {
    for (const conn of this.#conns.values()) {
      if (conn.drained && (conn.state === State.Header || conn.state === State.Body)) {
        // A short read normally means the socket is empty, but the kernel also stops a read at
        // data from another writing process: look again now and then, so that case cannot stall.
        conn.drained = false;
        this.pump(conn);
      }
      if (
        conn.state === State.Hash || conn.state === State.Mirror || conn.state === State.Watch ||
        conn.state === State.Remote || now < conn.deadline
      ) {
        continue;
      }
      this.expire(conn);
    }
  }

  /** A connection ran out of time in its current state (or the broker is stopping). */
  expire(conn: Conn): void {
    switch (conn.state) {
      case State.Body:
        // The body never arrived: answer with the handler's read-failure text, as the C broker
        // does for a failed read, then close.
        conn.eof = true;
        this.pump(conn);
        return;
      case State.Send:
        sendFailed(this.#host, conn);
        return;
      case State.Wait:
        this.#unpark(conn);
        this.#resume(conn, false);
        this.pump(conn);
        return;
      default:
        this.close(conn);
    }
  }

  /**
   * Ask epoll about a connection that has to wait. Registration is edge-triggered and made only
   * on the first EAGAIN: a request that arrives whole is answered without any epoll_ctl. Data
   * that arrived before registering is reported at once, so no wake-up is lost.
   */
  #watch(conn: Conn): void {
    if (conn.registered || conn.fd < 0) return;
    conn.registered = true;
    this.#p.poller.add(conn.fd, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, conn.token);
  }

  /**
   * Have the loop come back to a writable connection at its next turn: re-arming an
   * edge-triggered registration reports the readiness that holds now, so other connections are
   * served in between (a streamed reply yields this way after each chunk).
   */
  #again(conn: Conn): void {
    if (conn.fd < 0) return;
    if (!conn.registered) this.#watch(conn);
    else this.#p.poller.modify(conn.fd, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, conn.token);
  }

  /**
   * Tell the per-uid ledger what the connection's unsent reply holds now (bytes queued, a
   * LIST's snapshot, a descriptor not yet sent), and read again from connections whose uid this
   * took back under its reply share.
   */
  #held(conn: Conn): void {
    const ledger = this.#p.ledger;
    if (ledger === null) return;
    const sending = conn.state === State.Send;
    const bytes = sending ? conn.out.length - conn.outOff + (conn.stream?.heldBytes ?? 0) : 0;
    const fds = sending && conn.replyFd >= 0 ? 1 : 0;
    const resume = ledger.replying(conn, bytes, fds);
    if (resume === null) return;
    const deadline = performance.now() + this.#p.options.requestTimeoutMs;
    for (const c of resume) {
      if (c.state !== State.Header || c.fd < 0) continue;
      c.deadline = deadline;
      this.#again(c);
    }
  }

  /** Drive a connection as far as it can go without blocking. */
  pump(conn: Conn): void {
    for (;;) {
      switch (conn.state) {
        case State.Header:
          if (conn.throttled) return;
          if (this.#p.ledger !== null && !this.#p.ledger.mayRead(conn)) {
            // Its uid holds its whole share of unread replies: no new request starts until
            // they drain (then #held re-arms it); the wait is the broker's, not a timeout.
            conn.deadline = Infinity;
            return;
          }
          if (conn.len >= HEADER_SIZE) {
            this.#startRequest(conn);
            continue;
          }
          if (conn.eof) {
            // Closed before a whole header: no reply and no audit record, as in protocol v1.
            this.close(conn);
            return;
          }
          if (!this.#fill(conn, HEADER_SIZE)) return;
          continue;
        case State.Body: {
          const need = conn.step?.kind === "read" ? conn.step.length : 0;
          if (conn.len >= need) {
            // A body piece is valid until the handler's next step (see Step "read"): small ones
            // are handed over in one reused buffer, not in a fresh array each (a typed array
            // over 64 bytes, such as a digest, is allocated outside V8's heap).
            const bytes = need <= BODY_VIEW
              ? this.#bodyView.subarray(0, need)
              : conn.buf.slice(0, need);
            if (need <= BODY_VIEW) bytes.set(conn.buf.subarray(0, need));
            conn.consume(need);
            conn.consumed += need;
            this.#resume(conn, bytes);
            continue;
          }
          if (conn.eof) {
            this.#resume(conn, null);
            continue;
          }
          if (!this.#fill(conn, need)) return;
          continue;
        }
        case State.Hash:
        case State.Mirror:
        case State.Remote:
        case State.Handover:
          return;
        case State.Wait:
          // Only watch for the client going away; anything it sends waits in the buffer. A
          // client that only half-closed can still read its answer, so it keeps waiting; one
          // that is gone ends the wait, which then gets its reply attempt and audit record.
          if (conn.eof) {
            if (!conn.hup) return;
            this.#unpark(conn);
            this.#resume(conn, false);
            continue;
          }
          if (conn.len >= READ_CHUNK || !this.#fill(conn, conn.len + 1)) return;
          continue;
        case State.Send: {
          const sent = sendReply(this.#host, conn);
          this.#held(conn);
          if (!sent) return;
          continue;
        }
        case State.Linger:
          linger(this.#host, conn);
          return;
        case State.Watch:
          if (this.#p.watchers?.pump(conn) !== true) this.close(conn);
          return;
        case State.Closed:
          return;
      }
    }
  }

  /** Read what is available for the current step; false when nothing can be read now. */
  #fill(conn: Conn, need: number): boolean {
    const next = conn.len === 0 && conn.served > 0 && conn.state === State.Header;
    if (!conn.read(need, this.#pool)) {
      if (!conn.sizedDeadline) conn.sizeDeadline();
      this.#watch(conn);
      return false;
    }
    // The next request on a kept-alive connection has begun.
    if (next && conn.len > 0) conn.deadline = performance.now() + this.#p.options.requestTimeoutMs;
    return true;
  }

  #startRequest(conn: Conn): void {
    const h = decodeHeader(conn.buf);
    conn.consume(HEADER_SIZE);
    conn.header = h;
    conn.consumed = 0;
    if (!isValidHeader(h)) {
      conn.dropReqFd();
      this.finish(conn, badHeaderOutcome());
      return;
    }
    if (h.cmd === Cmd.TAKEOVER) {
      conn.dropReqFd();
      this.#p.takeover(conn);
      return;
    }
    if (
      (h.cmd < Cmd.PUT || h.cmd > Cmd.STAT) && h.cmd !== Cmd.USAGE &&
      (h.cmd !== Cmd.WATCH || !this.#p.watchers)
    ) {
      conn.dropReqFd();
      this.finish(conn, unknownCommandOutcome(h.cmd));
      return;
    }
    // A PUT's deadline grows with its object's size (see #fill), but only once it has to wait
    // for its body: a request that arrived whole needs no fstat for it.
    conn.sizedDeadline = h.cmd !== Cmd.PUT;
    if (h.cmd !== Cmd.PUT) conn.dropReqFd();
    // Nothing is hashed before the handler has checked the whole request (a digest started
    // here, speculatively, let any peer make the broker hash without a valid request).
    conn.keepAlive = (extFlags(h.reserved) & Flag.KEEP_ALIVE) !== 0;
    if (this.#p.latency) conn.startedAt = performance.now();
    conn.handler = handle(
      h,
      requestContext(this.#p, conn, {
        reopen: this.#reopen,
        release: this.#release,
        now: this.#now,
        cluster: this.#cluster?.view ?? null,
      }),
    );
    this.#resume(conn, null);
  }

  #resume(conn: Conn, input: StepInput): void {
    const handler = conn.handler;
    if (handler === null) return;
    const r = handler.next(input);
    if (r.done) {
      conn.handler = null;
      conn.step = null;
      this.finish(conn, r.value);
      return;
    }
    const step = r.value;
    conn.step = step;
    if (step.kind === "read") {
      conn.state = State.Body;
      return;
    }
    const p = this.#p;
    if (step.kind === "remote") {
      // The cluster tier works off the loop; the connection waits without a deadline of its own
      // (every engine request has one).
      const cluster = this.#cluster;
      if (cluster === null) {
        this.#resume(conn, { kind: "error", text: Text.noCluster });
        return;
      }
      conn.state = State.Remote;
      cluster.answer(step).then((a: RemoteAnswer) => {
        if (conn.state !== State.Remote) return;
        this.#resume(conn, a);
        this.pump(conn);
        p.audit.flush();
      });
      return;
    }
    if (step.kind === "wait") {
      const full = p.waits.count >= p.options.maxWaiters || p.run.stopping;
      const refusal = full ? Text.waitQuota : p.ledger?.parking(conn) ?? null;
      if (refusal !== null) {
        conn.handler = null;
        conn.step = null;
        const rec = blankRecord(conn.header?.cmd === Cmd.STAT ? "stat" : "get", "error", null);
        rec.name = step.name;
        this.finish(conn, errorOutcome(conn.header?.cmd ?? 0, Status.ERR, refusal, rec));
        return;
      }
      conn.state = State.Wait;
      conn.waited = true;
      const limit = p.options.maxWaitMs;
      conn.deadline = performance.now() + (step.ms > 0 ? Math.min(step.ms, limit) : limit);
      p.waits.park(step.name, conn);
      this.#watch(conn);
      return;
    }
    conn.state = State.Hash;
    // Digests are bounded per uid: one uid publishing many large objects waits for itself.
    const answer = p.hash.digest(step.fd, step.size, conn.peer?.uid ?? peerUid(conn.fd));
    if (!(answer instanceof Promise)) {
      this.#resume(conn, answer);
      return;
    }
    conn.hashing = answer;
    answer.then((a: DigestAnswer) => {
      conn.hashing = null;
      if (conn.state !== State.Hash) return;
      this.#resume(conn, a);
      this.pump(conn);
      // This runs between loop turns: write the audit record now, not at the next wake-up.
      p.audit.flush();
    });
  }

  /** Take a connection out of the parked waits. */
  #unpark(conn: Conn): void {
    const step = conn.step;
    if (step?.kind === "wait") this.#p.waits.unpark(step.name, conn);
    this.#p.ledger?.unparked(conn);
  }

  /** A name was published (here, or on another host of the cluster): answer its waiters. */
  wake(name: string): void {
    if (!this.#p.waits.empty) this.#published(name);
  }

  /** A name was published: answer everyone waiting for it. */
  #published(name: string): void {
    const waits = this.#p.waits;
    const set = waits.takeAll(name);
    if (set === undefined) return;
    for (const conn of set) {
      waits.woken();
      this.#p.ledger?.unparked(conn);
      if (conn.state !== State.Wait) continue;
      this.#resume(conn, true);
      this.pump(conn);
    }
  }

  /** A request is done: audit it, mirror it if it changed the store, and start the reply. */
  finish(conn: Conn, o: Outcome): void {
    const p = this.#p;
    if (!o.keptFd || o.deduped === true) conn.dropReqFd();
    conn.reqFd = -1;
    const h = conn.header;
    const inSync = h !== null && isValidHeader(h) && conn.consumed === requestBytes(h);
    conn.keepAlive = conn.keepAlive && inSync && !p.run.stopping;
    conn.lingerLeft = h === null || inSync
      ? 0
      : Math.min(requestBytes(h) - conn.consumed, LINGER_BYTES);
    const cluster = this.#cluster;
    if (o.keptFd && cluster !== null) {
      const obj = p.store.byId(Number(o.audit.objectId ?? 0));
      const local = h !== null && (extFlags(h.reserved) & Flag.LOCAL) !== 0;
      const sync = obj === undefined ? null : cluster.published(obj, local);
      if (sync !== null && obj !== undefined) {
        // --cluster-sync: acknowledge only once the engine committed the name.
        conn.state = State.Remote;
        sync.then((error) => {
          let out = o;
          if (error !== null) {
            // Not committed: the PUT fails, and the object does not stay behind.
            const last = p.store.remove(obj);
            p.governor?.rules.removed(obj);
            this.#release(obj, last);
            out = errorOutcome(Cmd.PUT, Status.ERR, error, { ...o.audit });
          }
          if (conn.state !== State.Remote) {
            record(this.#p.audit, out, conn, null);
            return;
          }
          this.#complete(conn, out);
          this.pump(conn);
          p.audit.flush();
        });
        return;
      }
    }
    this.#complete(conn, o);
  }

  #complete(conn: Conn, o: Outcome): void {
    const p = this.#p;
    // Flag.DIGEST advertises broker-computed digests: on every kept-alive reply, and on the
    // reply to a request that asked for one (so the client knows which broker answered).
    const h = conn.header;
    const asked = h !== null && (extFlags(h.reserved) & Flag.DIGEST) !== 0;
    const flags = (conn.keepAlive ? Flag.KEEP_ALIVE | Flag.DIGEST : 0) |
      (conn.waited ? Flag.WAIT : 0) | (asked ? Flag.DIGEST : 0) | (o.extFlags ?? 0);
    conn.waited = false;
    if (flags !== 0) {
      setReserved(o.wire, withExt(flags));
    }
    if (!o.auditAfterSend) record(this.#p.audit, o, conn, null);
    if (o.keptFd && p.events.active) {
      const obj = p.store.byId(Number(o.audit.objectId ?? 0));
      if (obj !== undefined) p.events.emit("publish", obj);
    }
    if (o.deduped === true) p.deduped?.();
    if (o.retire !== undefined && o.retire.length > 0) {
      p.governor?.hooks.retire(o.retire, Number(o.audit.objectId ?? 0));
    }
    if (p.mirror.active && o.ok && (o.keptFd || o.audit.op === "drop")) {
      conn.state = State.Mirror;
      p.mirror.commit(o, () => {
        if (conn.state !== State.Mirror) return;
        this.reply(conn, o);
        this.pump(conn);
      });
    } else this.reply(conn, o);
    if (o.keptFd && o.audit.name !== null && !p.waits.empty) {
      // Reply to the publisher first, then wake the waiters.
      this.pump(conn);
      this.#published(o.audit.name);
    }
  }

  /**
   * Send `o` next (the connection then times out after the request timeout). The caller pumps
   * the connection right after.
   */
  reply(conn: Conn, o: Outcome): void {
    conn.outcome = o;
    conn.out = o.wire;
    conn.outOff = 0;
    conn.outBase = 0;
    conn.stream = o.stream ?? null;
    conn.replyFd = o.fd;
    conn.state = State.Send;
    // Not counted in the uid's reply share yet: every caller pumps the connection at once, and
    // the pump counts what its send leaves unsent (most replies go out whole, and then there is
    // nothing to count and nothing to take back).
    // A slow reader gets the request timeout to take its reply.
    conn.deadline = performance.now() + this.#p.options.requestTimeoutMs;
  }

  /** Close a connection and everything it holds. */
  close(conn: Conn): void {
    if (conn.state === State.Closed) return;
    if (conn.state === State.Wait) this.#unpark(conn);
    if (conn.state === State.Linger) this.lingering--;
    if (conn.state === State.Watch) this.#p.watchers?.remove(conn);
    conn.state = State.Closed;
    conn.stream = null;
    this.#held(conn);
    this.#conns.delete(conn.token);
    const hashing = conn.hashing;
    if (hashing !== null && conn.reqFd >= 0) {
      // A Worker is reading the descriptor: it closes once the digest is done, never under it
      // (a closed number can be reused by another file at once).
      const fd = conn.reqFd;
      conn.reqFd = -1;
      conn.hashing = null;
      hashing.finally(() => closeDropped(fd));
    }
    conn.dropReqFd();
    if (conn.replyFd >= 0) closeQuietly(conn.replyFd);
    conn.replyFd = -1;
    conn.handler?.return(undefined as never);
    conn.handler = null;
    conn.releaseBuf(this.#pool);
    closeQuietly(conn.fd);
    conn.fd = -1;
    this.#p.ledger?.closed(conn);
  }
}
