/**
 * A nonblocking stream socket that carries {@link encodeFrame} frames with descriptors: the
 * transport of the shadow link and of takeovers. Descriptors that arrive are queued in order and
 * handed to the frame that declares them.
 *
 * @module
 */

import { closeQuietly } from "../ffi.ts";
import { pollOne } from "../sys/fd.ts";
import { EAGAIN, POLLIN, POLLOUT } from "../sys/linux.ts";
import { type DecodedFrame, decodeFrame, encodeFrame } from "../protocol/shadow_frames.ts";
import { ProtocolError } from "../errors.ts";
import { closeAll, recvMsg, sendMsg, sendSome } from "../sys/unix_socket.ts";

/** A received frame with its descriptors (owned by the receiver). */
export interface FrameIn extends DecodedFrame {
  /** The descriptors the frame declared. */
  readonly fds: number[];
}

interface Out {
  bytes: Uint8Array;
  off: number;
  fds: readonly number[];
}

/** Thrown when the peer closed the connection or it failed. */
export class LinkClosed extends Error {
  /** Describe why. */
  constructor(why: string) {
    super(why);
    this.name = "LinkClosed";
  }
}

/** Frames over one nonblocking socket. */
export class FrameConn implements Disposable {
  #fd: number;
  #in = new Uint8Array(64 * 1024);
  #len = 0;
  #fds: number[] = [];
  #eof = false;
  /** Frames decoded but not handed out yet (see {@link FrameConn.nextBlocking}). */
  #ready: FrameIn[] = [];
  readonly #out: Out[] = [];
  /** What the peer is, for messages (the shadow's path). */
  label = "";

  /**
   * @param fd a connected nonblocking stream socket, now owned by this object
   */
  constructor(fd: number) {
    this.#fd = fd;
  }

  /** The socket descriptor (-1 once closed). */
  get fd(): number {
    return this.#fd;
  }

  /** True while frames wait to be sent. */
  get pending(): boolean {
    return this.#out.length > 0;
  }

  /** Queue a frame; `fds` stay the caller's (the kernel duplicates them). */
  queue(type: number, payload: unknown, fds: readonly number[] = []): void {
    this.#out.push({ bytes: encodeFrame(type, payload, fds.length), off: 0, fds });
  }

  /** Send what is queued; true when everything went out, false when the socket is full. */
  flush(): boolean {
    while (this.#out.length > 0) {
      const o = this.#out[0] as Out;
      const part = o.off === 0 ? o.bytes : o.bytes.subarray(o.off);
      const n = o.off === 0 && o.fds.length > 0
        ? sendMsg(this.#fd, part, o.fds)
        : sendSome(this.#fd, part);
      if (n === -EAGAIN) return false;
      if (n <= 0) throw new LinkClosed(`shadow link send failed (${-n})`);
      o.off += n;
      if (o.off >= o.bytes.length) this.#out.shift();
    }
    return true;
  }

  /**
   * Read what is available and return the complete frames. Throws LinkClosed at the end of the
   * stream and when the peer sends what is not a frame (a corrupt header, a payload over
   * `MAX_FRAME_PAYLOAD`): the peer is then dropped. Frames are decoded as bytes arrive, so
   * the buffer holds at most one frame and one read.
   */
  read(): FrameIn[] {
    if (this.#ready.length > 0) return this.#ready.splice(0);
    const frames: FrameIn[] = [];
    for (;;) {
      if (this.#in.length - this.#len < 4096) {
        const grown = new Uint8Array(this.#in.length * 2);
        grown.set(this.#in.subarray(0, this.#len));
        this.#in = grown;
      }
      const r = recvMsg(this.#fd, this.#in.subarray(this.#len));
      if (typeof r === "number") {
        if (r === -EAGAIN) break;
        throw new LinkClosed(`shadow link receive failed (${-r})`);
      }
      this.#fds.push(...r.fds);
      if (r.truncated) throw new LinkClosed("shadow link lost descriptors (MSG_CTRUNC)");
      if (r.bytes === 0) {
        this.#eof = true;
        break;
      }
      this.#len += r.bytes;
      this.#decode(frames);
    }
    this.#decode(frames);
    if (this.#eof && frames.length === 0) throw new LinkClosed("shadow link closed");
    return frames;
  }

  #decode(frames: FrameIn[]): void {
    let off = 0;
    try {
      for (;;) {
        const f = decodeFrame(this.#in.subarray(off, this.#len));
        if (f === null) break;
        if (f.fdCount > this.#fds.length) break;
        frames.push({ ...f, fds: this.#fds.splice(0, f.fdCount) });
        off += f.length;
      }
    } catch (e) {
      if (!(e instanceof ProtocolError)) throw e;
      for (const f of frames) closeAll(f.fds);
      throw new LinkClosed(`shadow link dropped: ${e.message}`);
    }
    if (off > 0) {
      this.#in.copyWithin(0, off, this.#len);
      this.#len -= off;
    }
  }

  /** Block until readable or writable (used only where blocking is allowed). */
  waitBlocking(write: boolean, timeoutMs: number): boolean {
    return pollOne(this.#fd, write ? POLLOUT : POLLIN, timeoutMs);
  }

  /** Send everything queued, blocking up to `timeoutMs` in total. */
  flushBlocking(timeoutMs: number): void {
    const end = performance.now() + timeoutMs;
    while (!this.flush()) {
      const left = end - performance.now();
      if (left <= 0 || !this.waitBlocking(true, Math.ceil(left))) {
        throw new LinkClosed("shadow link stalled");
      }
    }
  }

  /** Wait for and return at least one frame, blocking up to `timeoutMs`. */
  readBlocking(timeoutMs: number): FrameIn[] {
    const end = performance.now() + timeoutMs;
    for (;;) {
      const frames = this.read();
      if (frames.length > 0) return frames;
      const left = end - performance.now();
      if (left <= 0 || !this.waitBlocking(false, Math.ceil(left))) {
        throw new LinkClosed("shadow link timed out");
      }
    }
  }

  /** The next frame, blocking up to `timeoutMs`; later frames of the same read stay queued. */
  nextBlocking(timeoutMs: number): FrameIn {
    if (this.#ready.length === 0) this.#ready = this.readBlocking(timeoutMs);
    return this.#ready.shift() as FrameIn;
  }

  /** Close the socket and any descriptor not handed out. */
  close(): void {
    for (const f of this.#ready) closeAll(f.fds);
    this.#ready = [];
    closeAll(this.#fds);
    this.#fds = [];
    if (this.#fd >= 0) closeQuietly(this.#fd);
    this.#fd = -1;
  }

  /** Same as close(). */
  [Symbol.dispose](): void {
    this.close();
  }
}
