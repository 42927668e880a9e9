/**
 * Upgrades without loss. A successor broker takes this broker's listening socket, objects and
 * not-yet-read connections over a frame link (`src/protocol/shadow_frames.ts`):
 *
 * - {@link receiveTakeover}: the successor's side, run once at startup before any client.
 * - {@link Handover}: the old broker's side, started by {@link Handover.spawn} (the broker spawns
 *   its successor) or by a TAKEOVER request from a successor started by hand. Accepting stops,
 *   requests in flight finish, then {@link Handover.perform} transfers everything.
 *
 * @module
 */

import { blankRecord } from "../core/audit.ts";
import { errorOutcome } from "../core/handlers.ts";
import type { Governor } from "../core/governance.ts";
import type { Store } from "../core/store.ts";
import { Status } from "../errors.ts";
import { closeQuietly } from "../ffi.ts";
import { FDS_PER_FRAME, Frame } from "../protocol/shadow_frames.ts";
import { Cmd, encodeHeader, Text } from "../protocol/wire.ts";
import { fetchState, serveState, type ShadowConfig, type ShareOf } from "../shadow/link.ts";
import { FrameConn } from "../shadow/frame_conn.ts";
import { setCloexec, setNonblocking } from "../sys/fd.ts";
import { effectiveUid } from "../sys/spawn.ts";
import { requireSameUid } from "../sys/peer_uid.ts";
import { closeAll, peerCredentials, sendMsg, unixSocketPair } from "../sys/unix_socket.ts";
import type { AuditOutput } from "./audit_sink.ts";
import { type Conn, State } from "./connection.ts";
import type { ObjectEvents } from "./events.ts";
import type { ShadowMirror } from "./mirror.ts";
import type { Sessions } from "./session.ts";

/** How long a spawned successor may take to start and say HELLO. */
const SPAWNED_HELLO_MS = 30_000;
/** What the successor's side needs. */
export interface ReceiveParts {
  readonly store: Store;
  readonly audit: AuditOutput;
  readonly events: ObjectEvents;
  readonly mirror: ShadowMirror;
  /** Give a taken-over connection a session. */
  readonly admit: (fd: number) => void;
  /** Told of every object taken over (quotas count them). */
  readonly governor?: Governor;
}

/**
 * Take the objects of an old broker over `fd` (before any client is served), then tell it to
 * go. The audit log (inherited from the old broker) gets one takeover record.
 */
export async function receiveTakeover(
  fd: number,
  shadow: ShadowConfig | undefined,
  parts: ReceiveParts,
): Promise<void> {
  using link = new FrameConn(fd);
  requireSameUid(fd, "the broker handing over");
  const { objects, nextId } = fetchState(link);
  // Then the connections the old broker accepted but had not read from.
  const conns: number[] = [];
  for (;;) {
    const f = link.nextBlocking(10_000);
    if (f.type === Frame.CONNS) conns.push(...f.fds);
    else closeAll(f.fds);
    if (f.type === Frame.CONNS_END) break;
  }
  let bytes = 0;
  for (const taken of objects) {
    // Objects that shared a memfd in the old broker arrive on separate descriptors of the same
    // memfd: share them again (with dedup on), so charges and descriptor counts stay the same.
    const shared = parts.governor?.rules.dedup === true
      ? parts.store.contentOf(taken.digest, taken.size, taken.uid)
      : undefined;
    let obj = taken;
    if (shared !== undefined) {
      closeQuietly(taken.fd);
      obj = { ...taken, fd: shared.fd };
    }
    parts.store.restore(obj, nextId);
    parts.governor?.added(obj);
    parts.events.emit("publish", obj);
    bytes += obj.size;
  }
  parts.store.restore(null, nextId);
  if (shadow !== undefined) await parts.mirror.attach(shadow, false);
  const rec = blankRecord("takeover", "ok", null);
  rec.count = objects.length;
  rec.size = bytes;
  parts.audit.record(rec);
  link.queue(Frame.ACK, null);
  link.flushBlocking(10_000);
  for (const c of conns) {
    setNonblocking(c, true);
    parts.admit(c);
  }
}

/** Who the old broker hands over to: a process it starts, or a successor that asked. */
type Successor =
  | { readonly command: readonly string[]; readonly done: (ok: boolean) => void }
  | { readonly conn: Conn; readonly done: (ok: boolean) => void };

/** What the old broker's side needs. */
export interface HandoverParts {
  readonly store: Store;
  readonly audit: AuditOutput;
  readonly sessions: Sessions;
  /** The listening socket handed over. */
  readonly listenFd: number;
  /** Start stopping for a handover (accepting stops, the listener stays open). */
  readonly beginStop: () => void;
  /** True while stopping (a second handover is refused). */
  readonly stopping: () => boolean;
  /** Let go of the shadow so that the successor can attach (it serves one broker). */
  readonly releaseShadow: () => void;
  /** With `--cluster`: each object's cluster state, handed over with it. */
  readonly share?: ShareOf;
  /**
   * The successor serves: from now on it owns the queued uploads (called before anything else
   * can run, so this broker writes no name entry the successor may write too).
   */
  readonly handedOver?: () => void;
}

/** The old broker's side of a takeover. */
export class Handover {
  readonly #p: HandoverParts;
  #pending: Successor | null = null;

  /** @param parts what the handover works with */
  constructor(parts: HandoverParts) {
    this.#p = parts;
  }

  /** Hand over to a process started with `command`; resolves true once it serves. */
  spawn(command: readonly string[]): Promise<boolean> {
    if (this.#p.stopping()) return Promise.resolve(false);
    return new Promise((done) => {
      this.#pending = { command, done };
      this.#p.beginStop();
    });
  }

  /** A `--takeover` broker asks for this broker's socket and objects on `conn`. */
  request(conn: Conn): void {
    const p = this.#p;
    let uid = -1;
    let pid = 0;
    try {
      const peer = peerCredentials(conn.fd);
      uid = peer.uid;
      pid = peer.pid;
    } catch {
      // Treated as a stranger below.
    }
    const rec = blankRecord("takeover", "forbidden", null);
    // Exactly the broker's own uid: a successor receives every object (root included: root
    // can take over its own brokers, not another user's).
    if (uid !== effectiveUid() || p.stopping()) {
      p.sessions.finish(conn, errorOutcome(Cmd.TAKEOVER, Status.FORBIDDEN, Text.accessDenied, rec));
      return;
    }
    rec.result = "ok";
    rec.objectId = pid;
    p.audit.record(rec);
    conn.state = State.Handover;
    this.#pending = { conn, done: () => {} };
    p.beginStop();
  }

  /**
   * Once requests in flight are done: transfer to the pending successor, if any. Returns
   * "none" with no successor, "done" when it took over, "failed" when it did not (the broker
   * then serves on).
   */
  perform(): "none" | "done" | "failed" {
    const h = this.#pending;
    if (h === null) return "none";
    this.#pending = null;
    const ok = this.#transfer(h);
    if (ok) this.#p.handedOver?.();
    if (!ok && "conn" in h) this.#p.sessions.close(h.conn);
    h.done(ok);
    return ok ? "done" : "failed";
  }

  /** Transfer the listener and objects; true when the new broker confirmed it is serving. */
  #transfer(h: Successor): boolean {
    const p = this.#p;
    let link: FrameConn | null = null;
    let child: Deno.ChildProcess | null = null;
    try {
      if ("command" in h) {
        const [mine, theirs] = unixSocketPair();
        link = new FrameConn(mine);
        setCloexec(p.listenFd, false);
        setCloexec(theirs, false);
        const [cmd, ...args] = h.command;
        try {
          child = new Deno.Command(cmd ?? "", {
            args,
            env: { MEMFDBUS_TAKEOVER: `${p.listenFd},${theirs}`, DENO_NO_UPDATE_CHECK: "1" },
            stdin: "null",
            stdout: "inherit",
            stderr: "inherit",
          }).spawn();
        } finally {
          setCloexec(p.listenFd, true);
          closeQuietly(theirs);
        }
      } else {
        const conn = h.conn;
        const reply = encodeHeader({ cmd: Cmd.TAKEOVER });
        if (sendMsg(conn.fd, reply, [p.listenFd]) !== reply.length) throw new Error("send");
        link = new FrameConn(conn.fd);
        // The connection now belongs to the link.
        p.sessions.detach(conn);
      }
      setNonblocking(link.fd, true);
      // A successor this broker spawned (SIGUSR2) must first start its runtime and load its
      // modules, which takes seconds on a loaded host: give it time rather than fail the upgrade.
      const hello = link.nextBlocking("command" in h ? SPAWNED_HELLO_MS : 5_000);
      if (hello.type !== Frame.HELLO) throw new Error("no HELLO from the new broker");
      serveState(link, p.store.values(), p.store.nextId, p.share);
      // Connections accepted but not read from yet go to the new broker too: their clients may
      // be sending a request right now, and it must be answered, not dropped.
      const idle = p.sessions.all().filter((c) => c.idle && !c.eof);
      for (let i = 0; i < idle.length; i += FDS_PER_FRAME) {
        const batch = idle.slice(i, i + FDS_PER_FRAME);
        link.queue(Frame.CONNS, { count: batch.length }, batch.map((c) => c.fd));
      }
      link.queue(Frame.CONNS_END, null);
      link.flushBlocking(30_000);
      // The shadow serves one broker: let go of it so the new broker can attach. Should the
      // handover fail, the sweep reconnects and seeds it again.
      p.releaseShadow();
      const ack = link.nextBlocking(60_000);
      if (ack.type !== Frame.ACK) throw new Error("no ACK from the new broker");
      child?.unref();
      return true;
    } catch (e) {
      try {
        child?.kill("SIGTERM");
      } catch {
        // Already gone.
      }
      p.audit.record(
        blankRecord("takeover", "error", `handover failed: ${(e as Error).message}`),
      );
      return false;
    } finally {
      link?.close();
    }
  }
}
