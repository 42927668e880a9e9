/**
 * The shadow: a small process that holds one descriptor per live object (with its metadata and
 * the next id) so that objects survive a broker crash or restart. It does no hashing and no
 * policy; it stores what the broker mirrors to it and hands it all back on request.
 *
 * Run it with `memfdbus shadow --socket PATH`; a broker started with `--shadow PATH` starts one
 * itself when none is listening. The shadow leaves the broker's session (setsid), so a Ctrl-C
 * aimed at the broker does not take the objects with it. Stop it with SIGTERM.
 *
 * @module
 */

import { closeQuietly, libc } from "../ffi.ts";
import { FDS_PER_FRAME, Frame, type WireObject } from "../protocol/shadow_frames.ts";
import { FrameConn, type FrameIn, LinkClosed } from "./frame_conn.ts";
import { Poller, type PollEvent } from "../sys/poller.ts";
import { EPOLLIN } from "../sys/linux.ts";
import { openListener } from "../sys/listener.ts";
import { acceptUnix } from "../sys/unix_socket.ts";

const LISTEN_TOKEN = 0;
const LINK_TOKEN = 1;

interface Held {
  readonly meta: WireObject;
  readonly fd: number;
}

/**
 * The shadow's state: objects by id and the next id. A seed (SEED, OBJECTS..., SEED_END) is
 * gathered aside and replaces the objects only at its end, so a broker that dies while seeding
 * leaves the state as it was.
 */
export class ShadowState {
  readonly objects = new Map<number, Held>();
  nextId = 1;
  #seed: Map<number, Held> | null = null;

  /** A seed begins: the objects that follow replace everything, once it ends. */
  beginSeed(): void {
    this.abortSeed();
    this.#seed = new Map();
  }

  /** The seed is complete: its objects become the state. */
  endSeed(nextId: number): void {
    const seed = this.#seed;
    this.#seed = null;
    if (seed !== null) {
      for (const h of this.objects.values()) closeQuietly(h.fd);
      this.objects.clear();
      for (const [id, h] of seed) {
        this.objects.set(id, h);
        this.nextId = Math.max(this.nextId, id + 1);
      }
    }
    this.nextId = Math.max(this.nextId, nextId);
  }

  /** The seeding broker is gone before the seed's end: forget what it sent. */
  abortSeed(): void {
    for (const h of this.#seed?.values() ?? []) closeQuietly(h.fd);
    this.#seed = null;
  }

  /** Hold an object (its descriptor is now owned here); into the seed while one runs. */
  add(meta: WireObject, fd: number): void {
    const into = this.#seed ?? this.objects;
    const old = into.get(meta.id);
    if (old !== undefined) closeQuietly(old.fd);
    into.set(meta.id, { meta, fd });
    if (into === this.objects) this.nextId = Math.max(this.nextId, meta.id + 1);
  }

  /** Forget an object. */
  remove(id: number): void {
    const from = this.#seed ?? this.objects;
    const h = from.get(id);
    if (h === undefined) return;
    closeQuietly(h.fd);
    from.delete(id);
  }

  /** Queue the whole state on a link: OBJECTS batches, then `end` with the next id. */
  send(link: FrameConn, end: number): void {
    let batch: Held[] = [];
    const emit = (): void => {
      if (batch.length === 0) return;
      link.queue(Frame.OBJECTS, batch.map((h) => h.meta), batch.map((h) => h.fd));
      batch = [];
    };
    for (const h of [...this.objects.values()].sort((a, b) => a.meta.id - b.meta.id)) {
      batch.push(h);
      if (batch.length === FDS_PER_FRAME) emit();
    }
    emit();
    link.queue(end, { nextId: this.nextId });
  }
}

/** Apply one frame from a broker to the state; returns true when it must be acknowledged. */
export function applyFrame(state: ShadowState, f: FrameIn, link: FrameConn): void {
  switch (f.type) {
    case Frame.HELLO:
      state.send(link, Frame.STATE_END);
      return;
    case Frame.SEED:
      state.beginSeed();
      return;
    case Frame.OBJECTS: {
      const metas = f.payload as WireObject[];
      metas.forEach((m, i) => state.add(m, f.fds[i] ?? -1));
      return;
    }
    case Frame.SEED_END:
      state.endSeed((f.payload as { nextId: number }).nextId);
      link.queue(Frame.ACK, null);
      return;
    case Frame.ADD: {
      const p = f.payload as { object: WireObject; nextId: number };
      state.add(p.object, f.fds[0] ?? -1);
      state.nextId = Math.max(state.nextId, p.nextId);
      link.queue(Frame.ACK, null);
      return;
    }
    case Frame.REMOVE:
      state.remove((f.payload as { id: number }).id);
      link.queue(Frame.ACK, null);
      return;
    default:
      for (const fd of f.fds) closeQuietly(fd);
  }
}

/**
 * Run a shadow on `path` until SIGTERM or SIGINT stops it (it then removes its socket file, if
 * that is still the one it created, and resolves with exit code 0) or the process is killed.
 * The poll waits off the main thread so the signal handlers can run. At most one broker is
 * served at a time:
 * a new connection replaces the previous one (the broker it belonged to is gone or handing
 * over) once it sends its first frame. Until then it is only a candidate, so a connection that
 * says nothing (the liveness probe of a second `memfdbus shadow` or broker on the same path)
 * does not cost the attached broker its link.
 */
export async function runShadow(path: string, onReady: () => void = () => {}): Promise<number> {
  libc.symbols.setsid();
  const listener = openListener(path, 0o600, 16, "shadow");
  const poller = new Poller(16);
  let stopped = false;
  const stop = (): void => {
    stopped = true;
    poller.wake();
  };
  Deno.addSignalListener("SIGTERM", stop);
  Deno.addSignalListener("SIGINT", stop);
  poller.add(listener.fd, EPOLLIN, LISTEN_TOKEN);
  const state = new ShadowState();
  let link: FrameConn | null = null;
  const candidates = new Map<number, FrameConn>();
  let nextToken = LINK_TOKEN + 1;
  const drop = (conn: FrameConn): void => {
    if (conn === link) state.abortSeed();
    poller.remove(conn.fd);
    conn.close();
  };
  const serve = (conn: FrameConn, frames: readonly FrameIn[]): void => {
    try {
      for (const f of frames) applyFrame(state, f, conn);
      conn.flushBlocking(10_000);
    } catch (e) {
      if (!(e instanceof LinkClosed)) throw e;
      drop(conn);
      if (link === conn) link = null;
    }
  };
  onReady();
  const events: PollEvent[] = [];
  while (!stopped) {
    await poller.wait(-1, events);
    for (const ev of events) {
      if (ev.token === LISTEN_TOKEN) {
        const fd = acceptUnix(listener.fd);
        if (fd < 0) continue;
        const token = nextToken++;
        candidates.set(token, new FrameConn(fd));
        poller.add(fd, EPOLLIN, token);
        continue;
      }
      if (ev.token === LINK_TOKEN) {
        if (link === null) continue;
        let frames: FrameIn[];
        try {
          frames = link.read();
        } catch (e) {
          if (!(e instanceof LinkClosed)) throw e;
          drop(link);
          link = null;
          continue;
        }
        serve(link, frames);
        continue;
      }
      const conn = candidates.get(ev.token);
      if (conn === undefined) continue;
      let frames: FrameIn[];
      try {
        frames = conn.read();
      } catch (e) {
        if (!(e instanceof LinkClosed)) throw e;
        candidates.delete(ev.token);
        drop(conn);
        continue;
      }
      if (frames.length === 0) continue;
      // A broker: it replaces the previous one.
      candidates.delete(ev.token);
      poller.remove(conn.fd);
      if (link !== null) drop(link);
      link = conn;
      poller.add(conn.fd, EPOLLIN, LINK_TOKEN);
      serve(conn, frames);
    }
  }
  Deno.removeSignalListener("SIGTERM", stop);
  Deno.removeSignalListener("SIGINT", stop);
  // Remove the socket file only if it is still ours (a newer shadow may have replaced it).
  try {
    if (Deno.lstatSync(path).ino === Number(listener.ino)) Deno.removeSync(path);
  } catch {
    // Already gone.
  }
  return 0;
}
