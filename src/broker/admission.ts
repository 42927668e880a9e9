/**
 * Admission: the listening socket, accepting connections, and deciding who gets a session.
 *
 * - One accept per wake-up (the listener is level-triggered), EINTR and ECONNABORTED retried.
 * - At the descriptor limit, a reserve descriptor is given up to accept one client and tell it
 *   why (`too many open files`), then taken again; if even that fails the listener is left out of
 *   the waits until the next sweep. The broker never exits for it (defect D6).
 * - Past `--max-clients` active connections the longest-idle kept-alive connection is evicted;
 *   with none to evict the newcomer gets the client-quota reply (lingering, so it can read it).
 *
 * Per-peer budgets hook in here: a {@link PeerLedger} sees every admitted connection with its
 * kernel-checked credentials and can refuse it with a reply, and hears when it closes. The same
 * ledger is asked by the session before it parks a GET --wait, and by the PUT handler (through
 * its context) before it hashes and again before it stores.
 *
 * @module
 */

import type { AuditPeer } from "../core/audit.ts";
import { clientQuotaOutcome, fdLimitOutcome, type Outcome } from "../core/handlers.ts";
import type { BrokerOptions } from "../core/options.ts";
import { closeQuietly } from "../ffi.ts";
import { tryLstat, tryOpen, tryUnlink } from "../sys/fd.ts";
import {
  EAGAIN,
  ECONNABORTED,
  EMFILE,
  ENFILE,
  ENOBUFS,
  ENOMEM,
  EPOLLIN,
  O_RDONLY,
} from "../sys/linux.ts";
import type { Poller } from "../sys/poller.ts";
import { acceptUnix, peerCredentials, sendSome } from "../sys/unix_socket.ts";
import type { AuditOutput } from "./audit_sink.ts";
import type { Conn } from "./connection.ts";
import type { Store } from "../core/store.ts";
import type { UsageReport } from "../protocol/usage.ts";
import type { BrokerCounters } from "./counters.ts";
import { LISTEN_TOKEN } from "./loop.ts";
import type { RunState, Sessions } from "./session.ts";
import type { ParkedWaits } from "./waits.ts";

const LINGER_MS = 1000;
const MAX_LINGERING = 64;

/** Per-peer accounting (per-uid budgets, see `fair_shares.ts`). */
export interface PeerLedger {
  /** A connection was admitted; `conn.peer` holds its credentials. Null admits it. */
  opened(conn: Conn): Outcome | null;
  /** A connection closed. */
  closed(conn: Conn): void;
  /** A request asks to park (GET --wait); the refusal text, or null (then it is counted). */
  parking(conn: Conn): string | null;
  /** A parked request is no longer parked (answered, expired, closed). */
  unparked(conn: Conn): void;
  /**
   * Would one more object of `size` bytes, charged `metadata` metadata bytes, take `uid` past its
   * share? The text, or null.
   */
  storing(uid: number | undefined, size: number, metadata?: number): string | null;
  /** A WATCH asks to become a stream: the refusal text, or null (then it is counted). */
  watching?(conn: Conn): string | null;
  /** The USAGE report for `conn`'s peer asking as `caller`. */
  usage?(conn: Conn, caller: string | null, store: Store): UsageReport;
  /** True while some uid is not read from (see {@link PeerLedger.mayRead}). */
  readonly throttling: boolean;
  /**
   * The connection's unsent reply holds `bytes` bytes and `fds` descriptors now; returns the
   * connections to read from again when its uid went back under its reply share, else null.
   */
  replying(conn: Conn, bytes: number, fds: number): Conn[] | null;
  /** May a new request be read from `conn`? False while its uid holds its reply share. */
  mayRead(conn: Conn): boolean;
}

/** The listening socket this broker serves. */
export interface Listener {
  /** Its descriptor. */
  readonly fd: number;
  /** Its path. */
  readonly path: string;
  /** The inode of the socket file this broker created or took over; 0n: not ours to unlink. */
  readonly ino: bigint;
}

/** What admission works with. */
export interface AdmissionParts {
  readonly options: BrokerOptions;
  readonly poller: Poller;
  readonly sessions: Sessions;
  readonly waits: ParkedWaits<Conn>;
  readonly audit: AuditOutput;
  readonly counters: BrokerCounters;
  readonly run: RunState;
  readonly ledger: PeerLedger | null;
  /** Look up SO_PEERCRED for every connection (identity policy or audit peers). */
  readonly needPeer: boolean;
}

/** Accepts connections and admits them as sessions. */
export class Admission {
  readonly #p: AdmissionParts;
  readonly #listener: Listener;
  #open = true;
  #blocked = false;
  #reserveFd: number;

  /**
   * @param listener the listening socket (registered with the poller here)
   * @param parts what admission works with
   */
  constructor(listener: Listener, parts: AdmissionParts) {
    this.#listener = listener;
    this.#p = parts;
    this.#reserveFd = tryOpen("/dev/null", O_RDONLY);
    parts.poller.add(listener.fd, EPOLLIN, LISTEN_TOKEN);
  }

  /** The listening descriptor. */
  get listenFd(): number {
    return this.#listener.fd;
  }

  /** True while accepting is suspended until the next sweep (descriptor shortage). */
  get blocked(): boolean {
    return this.#blocked;
  }

  /**
   * Accept one pending connection. The listener is level-triggered, so a backlog keeps waking the
   * loop; accepting one per wake-up saves the accept4 that would only return EAGAIN.
   */
  acceptReady(): void {
    this.#blocked = false;
    if (this.#p.run.stopping) return;
    for (;;) {
      const fd = acceptUnix(this.#listener.fd);
      if (fd >= 0) {
        this.admit(fd);
        return;
      }
      const e = -fd;
      if (e === EAGAIN) return;
      if (e === ECONNABORTED) continue;
      if (e === EMFILE || e === ENFILE || e === ENOBUFS || e === ENOMEM) {
        // Out of descriptors: tell the waiting client why with the reserve descriptor; if even
        // that is impossible, stop accepting until the next sweep (never exit, defect D6).
        const r = this.#rejectWithReserve();
        if (r === "empty") return;
        if (r === "rejected") continue;
      }
      // Back off: the listener is level-triggered, so leave it out of the waits until the
      // next sweep tries again.
      this.#blocked = true;
      this.#p.poller.remove(this.#listener.fd);
      return;
    }
  }

  /** At the descriptor limit: use the reserve descriptor to tell one client why, then close. */
  #rejectWithReserve(): "rejected" | "empty" | "failed" {
    if (this.#reserveFd < 0) {
      this.#reserveFd = tryOpen("/dev/null", O_RDONLY);
      if (this.#reserveFd < 0) return "failed";
    }
    closeQuietly(this.#reserveFd);
    this.#reserveFd = -1;
    const fd = acceptUnix(this.#listener.fd);
    if (fd >= 0) this.#refuse(fd, fdLimitOutcome());
    this.#reserveFd = tryOpen("/dev/null", O_RDONLY);
    if (fd === -EAGAIN) return "empty";
    return fd >= 0 && this.#reserveFd >= 0 ? "rejected" : "failed";
  }

  /** Answer and close a connection that gets no session. */
  #refuse(fd: number, o: Outcome): void {
    this.#p.counters.refused++;
    this.#p.audit.record(o.audit, this.#peerOf(fd));
    for (const s of o.segments) sendSome(fd, s.bytes);
    closeQuietly(fd);
  }

  /** Give an accepted (or taken-over) socket a session, or refuse it. */
  admit(fd: number): void {
    const p = this.#p;
    const sessions = p.sessions;
    const now = performance.now();
    const active = sessions.size - sessions.lingering - p.waits.count;
    if (active >= p.options.maxClients && !this.#evictIdle()) {
      const o = clientQuotaOutcome();
      if (sessions.lingering >= MAX_LINGERING) {
        this.#refuse(fd, o);
        return;
      }
      p.counters.refused++;
      p.audit.record(o.audit, this.#peerOf(fd));
      const conn = sessions.register(fd, now + LINGER_MS);
      sessions.reply(conn, o);
      sessions.pump(conn);
      return;
    }
    p.counters.accepted++;
    const conn = sessions.register(fd, now + p.options.requestTimeoutMs);
    if (p.needPeer) {
      try {
        conn.peer = peerCredentials(fd);
      } catch {
        // The peer already left; its request will fail on its own.
      }
    }
    const refusal = p.ledger === null ? null : p.ledger.opened(conn);
    if (refusal !== null) {
      p.audit.record(refusal.audit, conn.peer);
      sessions.reply(conn, refusal);
    }
    sessions.pump(conn);
  }

  /**
   * The peer's credentials: the audit log shows them with --audit-peer, and the per-uid audit
   * budget charges the record to them either way (without them, refusals at the door were
   * written for any uid, whatever its budget).
   */
  #peerOf(fd: number): AuditPeer | undefined {
    try {
      return peerCredentials(fd);
    } catch {
      return undefined;
    }
  }

  /** Close the longest-idle kept-alive connection to make room; true if one was closed. */
  #evictIdle(): boolean {
    const sessions = this.#p.sessions;
    for (const conn of sessions.all()) {
      if (conn.idle && conn.served > 0) {
        sessions.close(conn);
        return true;
      }
    }
    return false;
  }

  /** Timer work: retry accepting after a descriptor shortage. */
  sweep(): void {
    if (this.#blocked && !this.#p.run.stopping) {
      this.#blocked = false;
      this.#p.poller.add(this.#listener.fd, EPOLLIN, LISTEN_TOKEN);
    }
  }

  /** Stop accepting (new clients wait in the listen backlog). */
  pause(): void {
    this.#p.poller.remove(this.#listener.fd);
  }

  /** Accept again after {@link Admission.pause}. */
  resume(): void {
    this.#p.poller.add(this.#listener.fd, EPOLLIN, LISTEN_TOKEN);
  }

  /** Close the listening socket (once). */
  closeListener(): void {
    if (!this.#open) return;
    this.#open = false;
    closeQuietly(this.#listener.fd);
  }

  /** Unlink the socket path, but only if it is still the socket this broker created. */
  unlinkSocket(): void {
    const st = tryLstat(this.#listener.path);
    if (typeof st !== "number" && st.ino === this.#listener.ino) tryUnlink(this.#listener.path);
  }

  /** Release the reserve descriptor. */
  close(): void {
    closeQuietly(this.#reserveFd);
    this.#reserveFd = -1;
  }
}
