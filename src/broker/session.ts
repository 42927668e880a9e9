/**
 * Sessions: each connection's state machine. A request is read (header, then whatever body the
 * handler asks for), handled by the pure handler in `src/core/handlers.ts` (which may ask for a
 * digest or park on GET --wait), audited, mirrored to the shadow when it changed the store, and
 * answered in one sendmsg; then the connection is kept alive, drained (linger) or closed.
 *
 * Everything runs on nonblocking sockets: a step that cannot finish registers the socket with
 * epoll (edge-triggered, only on the first EAGAIN) and returns; the loop calls
 * {@link Sessions.event} when it is ready again.
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
  type RequestContext,
  type StepInput,
  unknownCommandOutcome,
} from "../core/handlers.ts";
import type { BrokerOptions } from "../core/options.ts";
import type { Store, StoredObject } from "../core/store.ts";
import { Status } from "../errors.ts";
import { closeQuietly } from "../ffi.ts";
import type { HashPool } from "../hash/verifier.ts";
import {
  Cmd,
  decodeHeader,
  extFlags,
  Flag,
  HEADER_SIZE,
  isValidHeader,
  Off,
  requestBytes,
  Text,
  withExt,
} from "../protocol/wire.ts";
import { isRegular, tryFstat } from "../sys/fd.ts";
import { peerUid } from "../sys/peer_uid.ts";
import {
  EAGAIN,
  EPOLLERR,
  EPOLLET,
  EPOLLHUP,
  EPOLLIN,
  EPOLLOUT,
  EPOLLRDHUP,
  SHUT_WR,
} from "../sys/linux.ts";
import type { Poller, PollEvent } from "../sys/poller.ts";
import { sendMsg, sendSome, shutdownQuietly } from "../sys/unix_socket.ts";
import type { AuditOutput } from "./audit_sink.ts";
import { BufferPool, Conn, READ_CHUNK, State } from "./connection.ts";
import { checkSealedFd, type ObjectDescriptors, sealsOf } from "./descriptors.ts";
import type { PeerLedger } from "./admission.ts";
import type { ObjectEvents } from "./events.ts";
import { FIRST_RESERVED_TOKEN } from "./loop.ts";
import type { ParkedWaits } from "./waits.ts";
import type { Governor } from "../core/governance.ts";
import type { GovernorHooks } from "./governor_hooks.ts";
import type { Watchers } from "./watchers.ts";
import type { ClusterSeam } from "./cluster_seam.ts";
import type { RemoteAnswer } from "../core/remote.ts";

const LINGER_MS = 1000;
const LINGER_BYTES = 1 << 20;

/** Flags shared by the broker's parts. */
export interface RunState {
  /** The broker is stopping or handing over: no new requests, no keep-alive. */
  stopping: boolean;
}

/** Where a committed PUT or DROP goes before its reply (the shadow mirror). */
export interface Commit {
  /** True when replies to PUT and DROP wait for the shadow. */
  readonly active: boolean;
  /** Mirror the change, then call `done` (once). */
  commit(o: Outcome, done: () => void): void;
}

/** What sessions are built from. */
export interface SessionParts {
  readonly options: BrokerOptions;
  readonly store: Store;
  readonly poller: Poller;
  readonly audit: AuditOutput;
  readonly hash: HashPool;
  readonly waits: ParkedWaits<Conn>;
  readonly descriptors: ObjectDescriptors;
  readonly events: ObjectEvents;
  readonly run: RunState;
  readonly mirror: Commit;
  /** Largest object whose digest is computed on the loop; larger PUTs start hashing early. */
  readonly inlineHashLimit: number;
  /** A TAKEOVER request arrived on `conn` (its header is read and valid). */
  readonly takeover: (conn: Conn) => void;
  /** Per-peer accounting, told when a connection closes (see `admission.ts`). */
  readonly ledger: PeerLedger | null;
  /** Memory governance, and who carries out its releases. */
  readonly governor?: { readonly rules: Governor; readonly hooks: GovernorHooks };
  /** Watch streams. */
  readonly watchers?: Watchers;
  /** Told each request's time from its header to its reply, in seconds (metrics). */
  readonly latency?: ((seconds: number) => void) | null;
  /** Told of each PUT stored on the memfd of identical content (metrics). */
  readonly deduped?: () => void;
  /** Where an internal error in one request is reported (one line). */
  readonly report: (message: string) => void;
}

/** Every open connection and the state machine that drives them. */
export class Sessions {
  readonly #p: SessionParts;
  readonly #conns = new Map<number, Conn>();
  readonly #pool = new BufferPool();
  readonly #scratch = new Uint8Array(READ_CHUNK);
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
      if (conn.state !== State.Send && conn.state !== State.Linger && conn.fd >= 0) {
        const o = errorOutcome(
          conn.header?.cmd ?? 0,
          Status.ERR,
          "internal error",
          blankRecord("unknown", "error", null),
        );
        this.#record(o, conn, null);
        for (const seg of o.segments) sendSome(conn.fd, seg.bytes);
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
        this.#sendFailed(conn);
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

  /** Drive a connection as far as it can go without blocking. */
  pump(conn: Conn): void {
    for (;;) {
      switch (conn.state) {
        case State.Header:
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
            const bytes = conn.buf.slice(0, need);
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
        case State.Send:
          if (!this.#send(conn)) return;
          continue;
        case State.Linger:
          this.#linger(conn);
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
    if ((h.cmd < Cmd.PUT || h.cmd > Cmd.STAT) && (h.cmd !== Cmd.WATCH || !this.#p.watchers)) {
      conn.dropReqFd();
      this.finish(conn, unknownCommandOutcome(h.cmd));
      return;
    }
    if (h.cmd !== Cmd.PUT) {
      conn.dropReqFd();
    } else if (conn.reqFd >= 0) {
      // Allow the publisher time to finish hashing its object before the digest arrives.
      const st = tryFstat(conn.reqFd);
      if (typeof st !== "number" && isRegular(st.mode)) conn.deadline += Number(st.size) / 100_000;
      // Nothing is hashed before the handler has checked the whole request (a digest started
      // here, speculatively, let any peer make the broker hash without a valid request).
    }
    conn.keepAlive = (extFlags(h.reserved) & Flag.KEEP_ALIVE) !== 0;
    if (this.#p.latency) conn.startedAt = performance.now();
    conn.handler = handle(h, this.#context(conn));
    this.#resume(conn, null);
  }

  #context(conn: Conn): RequestContext {
    const p = this.#p;
    return {
      store: p.store,
      options: p.options,
      fd: conn.reqFd,
      fdLost: conn.fdLost,
      peer: conn.peer,
      reopen: this.#reopen,
      release: this.#release,
      checkSealed: checkSealedFd,
      seals: sealsOf,
      storeShare: (size) => p.ledger?.storing(conn.peer?.uid, size) ?? null,
      now: this.#now,
      governor: p.governor?.rules,
      watchQueueLength: p.watchers?.queueLength ?? 0,
      cluster: this.#cluster?.view ?? null,
    };
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
    answer.then((a: DigestAnswer) => {
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
            this.#record(out, conn, null);
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
      new DataView(o.wire.buffer, o.wire.byteOffset).setUint32(Off.reserved, withExt(flags), true);
    }
    if (!o.auditAfterSend) this.#record(o, conn, null);
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

  /** Send `o` next (the connection then times out after the request timeout). */
  reply(conn: Conn, o: Outcome): void {
    conn.outcome = o;
    conn.out = o.wire;
    conn.outOff = 0;
    conn.replyFd = o.fd;
    conn.state = State.Send;
    // A slow reader gets the request timeout to take its reply.
    conn.deadline = performance.now() + this.#p.options.requestTimeoutMs;
  }

  #record(o: Outcome, conn: Conn, error: string | null): void {
    const rec = error === null ? o.audit : { ...o.audit, result: "error" as const, error };
    this.#p.audit.record(rec, conn.peer);
  }

  /** Send as much of the reply as possible (one sendmsg for all of it); true when it is out. */
  #send(conn: Conn): boolean {
    const out = conn.out;
    while (conn.outOff < out.length) {
      const part = conn.outOff === 0 ? out : out.subarray(conn.outOff);
      const attach = conn.outOff === 0 && conn.replyFd >= 0;
      const n = attach ? sendMsg(conn.fd, part, [conn.replyFd]) : sendSome(conn.fd, part);
      if (n === -EAGAIN) {
        this.#watch(conn);
        return false;
      }
      if (n <= 0) {
        this.#sendFailed(conn);
        return false;
      }
      if (attach) {
        closeQuietly(conn.replyFd);
        conn.replyFd = -1;
      }
      conn.outOff += n;
    }
    this.#afterSend(conn);
    return true;
  }

  #sendFailed(conn: Conn): void {
    const o = conn.outcome;
    if (o !== null && o.auditAfterSend) {
      // Name the piece that could not be sent, as the C broker's three sends would have.
      let end = 0;
      let text = "failed to send response";
      for (const seg of o.segments) {
        end += seg.bytes.length;
        if (conn.outOff < end) {
          text = seg.failText ?? text;
          break;
        }
      }
      this.#record(o, conn, text);
    }
    this.close(conn);
  }

  #afterSend(conn: Conn): void {
    const o = conn.outcome;
    if (o !== null && o.auditAfterSend) this.#record(o, conn, null);
    conn.clearReply();
    conn.served++;
    if (conn.startedAt >= 0) {
      this.#p.latency?.((performance.now() - conn.startedAt) / 1000);
      conn.startedAt = -1;
    }
    const watchers = this.#p.watchers;
    if (o?.watch !== undefined && watchers !== undefined) {
      // Accepted: from now on the connection carries events until either side closes.
      if (this.#p.run.stopping || conn.len > 0 || conn.eof) {
        this.close(conn);
        return;
      }
      conn.state = State.Watch;
      conn.deadline = Infinity;
      watchers.add(conn, o.watch.selector, o.watch.caller);
      this.#watch(conn);
      return;
    }
    const options = this.#p.options;
    if (conn.keepAlive && !this.#p.run.stopping) {
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
      this.lingering++;
      return;
    }
    this.close(conn);
  }

  #linger(conn: Conn): void {
    if (conn.drainLinger(this.#scratch)) this.close(conn);
    else this.#watch(conn);
  }

  /** Close a connection and everything it holds. */
  close(conn: Conn): void {
    if (conn.state === State.Closed) return;
    if (conn.state === State.Wait) this.#unpark(conn);
    if (conn.state === State.Linger) this.lingering--;
    if (conn.state === State.Watch) this.#p.watchers?.remove(conn);
    conn.state = State.Closed;
    this.#conns.delete(conn.token);
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
