/**
 * The broker's link to its shadow: recovery at startup, mirroring of every committed PUT and
 * DROP (the client's reply waits for the shadow's acknowledgement), and revival of a shadow that
 * died while the broker runs (a new shadow is started and seeded with the broker's state).
 *
 * @module
 */

import { closeQuietly, strerror } from "../ffi.ts";
import { childHasExited } from "../sys/spawn.ts";
import { FrameConn, type FrameIn, LinkClosed } from "./frame_conn.ts";
import { ECONNREFUSED, ENOENT } from "../sys/linux.ts";
import { FDS_PER_FRAME, Frame, toWire } from "../protocol/shadow_frames.ts";
import type { ClusterShare, StoredObject } from "../core/store.ts";
import { connectUnix, sockaddrUn, socketPathTooLong, unixSocket } from "../sys/unix_socket.ts";
import { checkSocketPath } from "../sys/path_safety.ts";
import { requireSameUid } from "../sys/peer_uid.ts";
import { admitObject, isRefused, type Refused } from "./admit.ts";

/**
 * Thrown when the shadow refuses this broker because it already serves another one.
 *
 * @example
 * ```ts
 * import { ShadowBusyError } from "@memfdbus/memfdbus";
 * console.log(new ShadowBusyError("/tmp/s.sock", "it serves pid 42").message);
 * // the shadow at /tmp/s.sock refused this broker: it serves pid 42
 * ```
 */
export class ShadowBusyError extends Error {
  /**
   * Describe the refusal.
   *
   * @param path the shadow's socket path
   * @param reason the shadow's words
   */
  constructor(path: string, reason: string) {
    super(`the shadow at ${path} refused this broker: ${reason}`);
    this.name = "ShadowBusyError";
  }
}

/** Where the shadow listens and how to start one. */
export interface ShadowConfig {
  /** The shadow's socket path. */
  readonly path: string;
  /** argv that starts a shadow on `path`, or null to never start one. */
  readonly command: readonly string[] | null;
}

/** What attaching found. */
export interface Attached {
  /** The link. */
  readonly link: ShadowLink;
  /** Objects the shadow held, in id order (empty for a new shadow). */
  readonly objects: StoredObject[];
  /** The next id the shadow knew of. */
  readonly nextId: number;
  /** True when no shadow was listening and a new one was started. */
  readonly started: boolean;
  /** Objects the shadow sent that failed the checks of a published object (already closed). */
  readonly refused: Refused[];
}

const START_TIMEOUT_MS = 10_000;
/** Longest pause between attempts to start a shadow that keeps failing. */
const MAX_RETRY_MS = 30_000;

function connectOnce(path: string): number {
  const addr = sockaddrUn(path);
  if (addr === null) throw new Error(socketPathTooLong(path));
  checkSocketPath(path);
  const fd = unixSocket(true);
  const r = connectUnix(fd, addr);
  if (r !== 0) {
    closeQuietly(fd);
    return r;
  }
  // Whoever listens on the path receives every object: it must be this broker's own uid.
  try {
    requireSameUid(fd, `the shadow at ${path}`);
  } catch (e) {
    closeQuietly(fd);
    throw e;
  }
  return fd;
}

/** Start a shadow; returns its pid. */
function spawnShadow(command: readonly string[]): number {
  const [cmd, ...args] = command;
  if (cmd === undefined) throw new Error("empty shadow command");
  // The shadow outlives the broker: it must not hold the broker's stdout or stderr open.
  const child = new Deno.Command(cmd, {
    args,
    // Deno's background update check would reach for the network from a long-lived process.
    env: { DENO_NO_UPDATE_CHECK: "1" },
    stdin: "null",
    stdout: "null",
    stderr: "null",
  })
    .spawn();
  child.unref();
  return child.pid;
}

/** Connect to the shadow on `path`, starting one when nobody listens there. */
function connectOrStart(config: ShadowConfig): { conn: FrameConn; started: boolean } {
  const first = connectOnce(config.path);
  if (first >= 0) return { conn: new FrameConn(first), started: false };
  if ((first !== -ENOENT && first !== -ECONNREFUSED) || config.command === null) {
    throw new Error(`cannot reach the shadow at ${config.path}: ${strerror(-first)}`);
  }
  const pid = spawnShadow(config.command);
  const end = performance.now() + START_TIMEOUT_MS;
  for (;;) {
    const fd = connectOnce(config.path);
    if (fd >= 0) return { conn: new FrameConn(fd), started: true };
    // A shadow that failed (it says why on stderr) is not waited for: the broker is blocked.
    // (The child's status promise cannot be used: this thread blocks the event loop.)
    if (childHasExited(pid)) {
      throw new Error(
        `the shadow exited without listening on ${config.path} (run ` +
          `\`memfdbus shadow --socket ${config.path}\` to see why)`,
      );
    }
    if (performance.now() > end) throw new Error(`the shadow did not start on ${config.path}`);
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
  }
}

/**
 * Read OBJECTS frames until `end`; returns the objects that pass the checks of a published object
 * ({@link admitObject}), the refused ones, and the next id.
 */
function readState(
  conn: FrameConn,
  end: number,
): { objects: StoredObject[]; refused: Refused[]; nextId: number } {
  const objects: StoredObject[] = [];
  const refused: Refused[] = [];
  for (;;) {
    // One frame at a time: frames after `end` (a takeover's connections) stay queued.
    const f = conn.nextBlocking(START_TIMEOUT_MS);
    if (f.type === Frame.OBJECTS) {
      const metas = Array.isArray(f.payload) ? f.payload as unknown[] : [];
      metas.forEach((w, i) => {
        const r = admitObject(w, f.fds[i] ?? -1);
        if (isRefused(r)) refused.push(r);
        else objects.push(r);
      });
      for (const fd of f.fds.slice(metas.length)) closeQuietly(fd);
    } else if (f.type === end) {
      const nextId = (f.payload as { nextId?: unknown } | null)?.nextId;
      const maxId = objects.reduce((m, o) => Math.max(m, o.id + 1), 1);
      return {
        objects,
        refused,
        nextId: Number.isSafeInteger(nextId) ? Math.max(nextId as number, maxId) : maxId,
      };
    } else if (f.type === Frame.REFUSED) {
      for (const o of objects) closeQuietly(o.fd);
      for (const fd of f.fds) closeQuietly(fd);
      const reason = (f.payload as { reason?: unknown } | null)?.reason;
      throw new ShadowBusyError(conn.label, typeof reason === "string" ? reason : "busy");
    } else {
      for (const fd of f.fds) closeQuietly(fd);
    }
  }
}

/** An object's cluster state now (with `--cluster`), for the frames that carry it. */
export type ShareOf = (o: StoredObject) => ClusterShare | undefined;

/** Queue objects in OBJECTS batches (with their cluster state, when `share` is given). */
export function queueObjects(
  conn: FrameConn,
  objects: Iterable<StoredObject>,
  share?: ShareOf,
): void {
  let batch: StoredObject[] = [];
  const emit = (): void => {
    if (batch.length === 0) return;
    conn.queue(
      Frame.OBJECTS,
      batch.map((o) => toWire(o, share === undefined ? o.cluster : share(o))),
      batch.map((o) => o.fd),
    );
    batch = [];
  };
  for (const o of objects) {
    batch.push(o);
    if (batch.length === FDS_PER_FRAME) emit();
  }
  emit();
}

/** Answer a HELLO on `conn` with the given state (used by a broker handing over). */
export function serveState(
  conn: FrameConn,
  objects: Iterable<StoredObject>,
  nextId: number,
  share?: ShareOf,
): void {
  queueObjects(conn, objects, share);
  conn.queue(Frame.STATE_END, { nextId });
}

/** Ask the peer on `conn` for its state (a shadow, or a broker handing over). */
export function fetchState(
  conn: FrameConn,
): { objects: StoredObject[]; refused: Refused[]; nextId: number } {
  conn.queue(Frame.HELLO, { version: 1 });
  conn.flushBlocking(START_TIMEOUT_MS);
  return readState(conn, Frame.STATE_END);
}

/**
 * A live link. Mirroring calls take a callback that runs, on the broker's thread, once the
 * shadow holds the change.
 */
export class ShadowLink {
  readonly #config: ShadowConfig;
  #conn: FrameConn | null;
  #pending: (() => void)[] = [];
  /** Called when the link's descriptor changes (to re-register it with epoll). */
  onReconnect: (oldFd: number, newFd: number) => void = () => {};
  /** Called with a message when the shadow had to be revived or could not be. */
  onTrouble: (message: string) => void = () => {};
  /** With `--cluster`: each object's cluster state, mirrored with it. */
  share: ShareOf | undefined = undefined;

  private constructor(config: ShadowConfig, conn: FrameConn) {
    this.#config = config;
    this.#conn = conn;
  }

  /**
   * Connect (or start a shadow) and fetch its state. Blocks; use before serving clients. A shadow
   * that serves another broker refuses with {@link ShadowBusyError}; with `waitMs`, the attempt
   * is repeated until then (a broker taking over waits for the old one to let go).
   */
  static attach(config: ShadowConfig, waitMs = 0): Attached {
    const end = performance.now() + waitMs;
    for (;;) {
      const { conn, started } = connectOrStart(config);
      conn.label = config.path;
      try {
        const state = fetchState(conn);
        return { link: new ShadowLink(config, conn), ...state, started };
      } catch (e) {
        conn.close();
        if (!(e instanceof ShadowBusyError) || performance.now() >= end) throw e;
      }
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20);
    }
  }

  /**
   * Let go of the shadow without reporting trouble (a broker handing over, so that its successor
   * can attach). Changes waiting for an acknowledgement are answered; if the handover fails the
   * broker reconnects and seeds the shadow again, as after any lost link.
   */
  release(): void {
    const oldFd = this.#conn?.fd ?? -1;
    this.#conn?.close();
    this.#conn = null;
    this.#lost = false;
    const waiting = this.#pending;
    this.#pending = [];
    for (const done of waiting) done();
    this.#retryAt = 0;
    this.onReconnect(oldFd, -1);
  }

  /** The link's socket (-1 while down). */
  get fd(): number {
    return this.#conn?.fd ?? -1;
  }

  /** The shadow's path. */
  get path(): string {
    return this.#config.path;
  }

  /** Replace the shadow's state with `objects` (after recovery or revival). */
  seed(objects: Iterable<StoredObject>, nextId: number, done: () => void): void {
    const conn = this.#conn;
    if (conn === null) return done();
    conn.queue(Frame.SEED, null);
    queueObjects(conn, objects, this.share);
    conn.queue(Frame.SEED_END, { nextId });
    this.#push(done);
    this.#flush();
  }

  /** Mirror a committed object. */
  add(obj: StoredObject, nextId: number, done: () => void): void {
    const conn = this.#conn;
    if (conn === null) return done();
    const share = this.share === undefined ? obj.cluster : this.share(obj);
    conn.queue(Frame.ADD, { object: toWire(obj, share), nextId }, [obj.fd]);
    this.#push(done);
    this.#flush();
  }

  /** Mirror a drop. */
  remove(id: number, done: () => void): void {
    const conn = this.#conn;
    if (conn === null) return done();
    conn.queue(Frame.REMOVE, { id });
    this.#push(done);
    this.#flush();
  }

  #pendingSince = 0;

  #push(done: () => void): void {
    if (this.#pending.length === 0) this.#pendingSince = performance.now();
    this.#pending.push(done);
  }

  /** True when the oldest change has waited longer than `limitMs` for the shadow. */
  stalled(now: number, limitMs: number): boolean {
    return this.#pending.length > 0 && now - this.#pendingSince > limitMs;
  }

  /**
   * Stop waiting for a shadow that does not answer: the clients waiting for it get their
   * replies now (unmirrored), the link is dropped, and the broker revives a shadow later.
   */
  abandon(reason: string): void {
    const old = this.#conn;
    const oldFd = old?.fd ?? -1;
    old?.close();
    this.#conn = null;
    this.#lost = false;
    const waiting = this.#pending;
    this.#pending = [];
    for (const done of waiting) done();
    this.onReconnect(oldFd, -1);
    this.onTrouble(`shadow at ${this.#config.path} ${reason}: replies no longer wait for it`);
  }

  #flush(): void {
    try {
      this.#conn?.flush();
    } catch (e) {
      if (!(e instanceof LinkClosed)) throw e;
      this.#lost = true;
    }
  }

  #lost = false;
  #failures = 0;
  #retryAt = 0;

  /** True when the link failed and {@link ShadowLink.revive} must run. */
  get lost(): boolean {
    return this.#lost;
  }

  /** The link's socket is ready: send what waits, read acknowledgements. */
  onEvent(): void {
    const conn = this.#conn;
    if (conn === null) return;
    let frames: FrameIn[];
    try {
      conn.flush();
      frames = conn.read();
    } catch (e) {
      if (!(e instanceof LinkClosed)) throw e;
      this.#lost = true;
      return;
    }
    for (const f of frames) {
      for (const fd of f.fds) closeQuietly(fd);
      if (f.type === Frame.REFUSED) {
        // Another broker holds this shadow (we reached it after losing our link): stop using
        // it and try again later, with the same back-off as a shadow that cannot be started.
        const reason = (f.payload as { reason?: unknown } | null)?.reason;
        this.release();
        this.#retryAt = performance.now() + Math.min(MAX_RETRY_MS, 1000 * 2 ** this.#failures++);
        this.onTrouble(new ShadowBusyError(this.#config.path, String(reason ?? "busy")).message);
        return;
      }
      if (f.type === Frame.ACK) {
        this.#pending.shift()?.();
        this.#pendingSince = performance.now();
      }
    }
  }

  /**
   * The shadow is gone: start or reach a new one and seed it with `objects` (the broker's whole
   * state, which covers every change still waiting for an acknowledgement). Blocks briefly.
   * Returns false when no shadow could be reached (the broker then carries on unmirrored and
   * retries later).
   */
  revive(objects: () => Iterable<StoredObject>, nextId: number): boolean {
    // After a failed attempt, wait (1 s, 2 s, 4 s ... 30 s) before starting yet another shadow:
    // each attempt blocks the broker while a process starts, and every PUT would cause one.
    if (this.#conn === null && performance.now() < this.#retryAt) return false;
    const old = this.#conn;
    const oldFd = old?.fd ?? -1;
    old?.close();
    this.#conn = null;
    let conn: FrameConn;
    let started: boolean;
    try {
      ({ conn, started } = connectOrStart(this.#config));
      conn.label = this.#config.path;
    } catch (e) {
      // Nothing to wait for: answer the waiting clients rather than hang them.
      const waiting = this.#pending;
      this.#pending = [];
      for (const done of waiting) done();
      this.onTrouble(`shadow at ${this.#config.path} is unavailable: ${(e as Error).message}`);
      this.onReconnect(oldFd, -1);
      this.#retryAt = performance.now() + Math.min(MAX_RETRY_MS, 1000 * 2 ** this.#failures++);
      return false;
    }
    this.#failures = 0;
    this.#retryAt = 0;
    this.#conn = conn;
    this.#lost = false;
    const waiting = this.#pending;
    this.#pending = [];
    this.onReconnect(oldFd, conn.fd);
    this.seed(objects(), nextId, () => {
      for (const done of waiting) done();
    });
    // A shadow that is still listening (one that dropped the link, or one still exiting when
    // the link broke) is reached again rather than replaced: say which.
    this.onTrouble(
      `shadow at ${this.#config.path} was lost: ${
        started ? "started a new one" : "reconnected to it"
      } and seeded it`,
    );
    return true;
  }

  /** Close the link (the shadow keeps its state for the next broker). */
  close(): void {
    this.#conn?.close();
    this.#conn = null;
    const waiting = this.#pending;
    this.#pending = [];
    for (const done of waiting) done();
  }
}
