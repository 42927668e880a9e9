/**
 * The broker: one event loop over nonblocking sockets, one state machine per connection.
 *
 * The loop keeps a single epoll_wait outstanding on Deno's blocking pool (woken by an eventfd);
 * accept4, recvmsg, sendmsg, open and close are synchronous calls on O_NONBLOCK descriptors, so a
 * slow or silent client can never stall another one (defects D3, D4). Digests of large objects
 * are verified on Workers (D5). Every received descriptor is either stored or closed (D7), and
 * running out of descriptors is answered, not fatal (D6).
 *
 * @example Running a broker inside a Deno program
 * ```ts ignore
 * import { Broker } from "@memfdbus/memfdbus";
 * await using broker = await Broker.start({ socket: "/tmp/demo.sock" });
 * await broker.closed; // until close() is called
 * ```
 *
 * @module
 */

import {
  AuditLog,
  type AuditPeer,
  type AuditRecord,
  type AuditResult,
  blankRecord,
  formatRecord,
  realtimeNs,
} from "./core/audit.ts";
import { fetchState, serveState, type ShadowConfig, ShadowLink } from "./shadow/link.ts";
import { FrameConn } from "./shadow/frame_conn.ts";
import { FDS_PER_FRAME, Frame } from "./protocol/shadow_frames.ts";
import { Status } from "./errors.ts";
import { check, closeQuietly, cstr, errno, libc } from "./ffi.ts";
import { isRegular, setCloexec, setNonblocking, tryFstat, tryLstat } from "./sys/fd.ts";
import { type HashOutcome, HashPool } from "./hash/verifier.ts";
import { inProcess } from "./sys/inprocess.ts";
import { closeAllDropped, closeDropped, closesSettled } from "./sys/closer.ts";
import { peerUid, requireSameUid } from "./sys/peer_uid.ts";
import { type Refused, verifyRecovered } from "./shadow/admit.ts";
import { openListener } from "./sys/listener.ts";
import {
  AF_UNIX,
  EAGAIN,
  ECONNABORTED,
  EMFILE,
  ENFILE,
  ENOBUFS,
  ENOMEM,
  EPOLLERR,
  EPOLLET,
  EPOLLHUP,
  EPOLLIN,
  EPOLLOUT,
  EPOLLRDHUP,
  F_DUPFD_CLOEXEC,
  O_CLOEXEC,
  O_DIRECTORY,
  O_RDONLY,
  O_RDWR,
  RLIMIT_NOFILE,
  SHUT_WR,
  SOCK_CLOEXEC,
  SOCK_STREAM,
} from "./sys/linux.ts";
import { type BrokerOptions, defaultBrokerOptions } from "./core/options.ts";
import { Poller, type PollEvent } from "./sys/poller.ts";
import {
  badHeaderOutcome,
  clientQuotaOutcome,
  type DigestAnswer,
  errorOutcome,
  fdLimitOutcome,
  handle,
  type Handler,
  type Outcome,
  type RequestContext,
  type Step,
  type StepInput,
  unknownCommandOutcome,
} from "./core/handlers.ts";
import { Store, type StoredObject } from "./core/store.ts";
import {
  acceptUnix,
  closeAll,
  inheritedListener,
  peerCredentials,
  recvMsg,
  sendMsg,
  sendSome,
  shutdownQuietly,
} from "./sys/unix_socket.ts";
import {
  Cmd,
  decodeHeader,
  encodeHeader,
  extFlags,
  Flag,
  type Header,
  HEADER_SIZE,
  isValidHeader,
  Off,
  requestBytes,
  Text,
  withExt,
} from "./protocol/wire.ts";

/**
 * Where audit records go: a descriptor (stdout is 1), a callback per line, or nowhere.
 *
 * @example Collecting the audit records of an in-process broker
 * ```ts
 * import { Broker, Client } from "@memfdbus/memfdbus";
 * const dir = Deno.makeTempDirSync();
 * const records: string[] = [];
 * {
 *   await using broker = await Broker.start({
 *     socket: `${dir}/bus.sock`,
 *     audit: (line) => records.push(line), // or 1 (stdout, the default), 2, or null
 *   });
 *   await using client = new Client({ socket: broker.socket });
 *   await client.list();
 * }
 * console.log(records[0]); // memfdbus broker listening on .../bus.sock
 * console.log(JSON.parse(records[1] ?? "{}").op); // "list"
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export type AuditSink = number | ((line: string) => void) | null;

/**
 * Options of {@link Broker.start}: the CLI options plus in-process conveniences.
 *
 * @example A small, quiet broker for tests
 * ```ts
 * import { Broker } from "@memfdbus/memfdbus";
 * const dir = Deno.makeTempDirSync();
 * const broker = await Broker.start({
 *   socket: `${dir}/bus.sock`,
 *   maxObjects: 100n,
 *   requestTimeoutMs: 2000,
 *   audit: null,
 *   hashWorkers: 2,
 * });
 * await broker.close();
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export interface BrokerStartOptions extends Partial<Omit<BrokerOptions, "shadow">> {
  /** Audit destination; stdout by default. */
  readonly audit?: AuditSink;
  /** Workers verifying large digests (default 1). */
  readonly hashWorkers?: number;
  /** Largest object whose digest is verified on the event loop (default 1 MiB). */
  readonly inlineHashLimit?: number;
  /** Raise the soft descriptor limit to the hard limit (default true). */
  readonly raiseFdLimit?: boolean;
  /**
   * Wait for events on the JavaScript thread itself while busy (lowest latency; the event loop
   * still runs every few milliseconds). Only for a broker that has its process to itself, as the
   * `memfdbus broker` command does; an in-process broker must leave it off (the default) or it
   * starves its own clients.
   */
  readonly blockingWait?: boolean;
  /**
   * A listening socket to serve instead of creating one (systemd socket activation passes it as
   * descriptor 3 with LISTEN_FDS). Its file is left in place at shutdown.
   */
  readonly listenFd?: number;
  /** Mirror every committed change to a shadow process and recover from it at startup. */
  readonly shadow?: ShadowConfig;
  /**
   * Take over from an old broker: a connected socket on which that broker hands over its
   * objects (see {@link Broker.handover} and `memfdbus broker --takeover`). Use with
   * `listenFd`, the old broker's listening socket.
   */
  readonly takeoverFd?: number;
}

const enum State {
  Header,
  Body,
  Hash,
  Mirror,
  Handover,
  Wait,
  Send,
  Linger,
  Closed,
}

const LISTEN_TOKEN = 0xfffffffe;
const SHADOW_TOKEN = 0xfffffffd;
/** Longest a PUT or DROP reply waits for the shadow before going out unmirrored. */
const SHADOW_ACK_MS = 5000;
const EMPTY = new Uint8Array(0);
const CONN_BUF = 4096;
const SWEEP_MS = 100;
const LINGER_MS = 1000;
const LINGER_BYTES = 1 << 20;
const MAX_LINGERING = 64;
const READ_CHUNK = 64 * 1024;
const GRACE_MS = 2000;
/** In blocking-wait mode: longest stretch without letting the event loop run. */
const YIELD_MS = 5;
/** In blocking-wait mode: quiet time after which the loop waits off-thread again. */
const IDLE_SWITCH_MS = 50;

class Conn {
  readonly token: number;
  fd: number;
  state: State = State.Header;
  buf: Uint8Array = EMPTY;
  len = 0;
  eof = false;
  header: Header | null = null;
  reqFd = -1;
  fdLost = false;
  handler: Handler | null = null;
  step: Step | null = null;
  consumed = 0;
  outcome: Outcome | null = null;
  out: Uint8Array = EMPTY;
  outOff = 0;
  replyFd = -1;
  registered = false;
  keepAlive = false;
  served = 0;
  deadline: number;
  lingerLeft = 0;
  peer: AuditPeer | undefined;
  /** A digest started as soon as a PUT's sealed memfd arrived, before its digest bytes. */
  speculative: { fd: number; answer: Promise<HashOutcome> } | null = null;
  /** The request was parked by Flag.WAIT: the reply carries the bit to say it was honoured. */
  waited = false;
  /** The peer closed both directions (EPOLLHUP), not just its writing side. */
  hup = false;
  /** The last read came back short: nothing more is queued until epoll reports an edge. */
  drained = false;

  constructor(token: number, fd: number, deadline: number) {
    this.token = token;
    this.fd = fd;
    this.deadline = deadline;
  }
}

/**
 * A running broker. Start one with {@link Broker.start}; stop it with {@link Broker.close} (the
 * socket file is unlinked and every stored descriptor closed).
 *
 * @example A broker and a client in one program
 * ```ts
 * import { Broker, Client } from "@memfdbus/memfdbus";
 * const dir = Deno.makeTempDirSync();
 * {
 *   await using broker = await Broker.start({ socket: `${dir}/bus.sock`, audit: null });
 *   await using client = new Client({ socket: broker.socket });
 *   await client.put(new TextEncoder().encode("hello"), { name: "greeting" });
 *   using obj = await client.get({ name: "greeting" });
 *   console.log(obj.text(), broker.objectCount); // "hello" 1
 * } // the client, then the broker, are closed here
 * Deno.removeSync(dir, { recursive: true });
 * ```
 */
export class Broker implements AsyncDisposable {
  readonly #options: BrokerOptions;
  readonly #poller: Poller;
  readonly #listenFd: number;
  readonly #socketIno: bigint;
  readonly #store: Store;
  readonly #audit: AuditLog;
  readonly #auditCallback: ((line: string) => void) | null;
  readonly #hash: HashPool;
  readonly #conns = new Map<number, Conn>();
  readonly #events: PollEvent[] = [];
  readonly #scratch = new Uint8Array(READ_CHUNK);
  readonly #procDirFd: number;
  readonly #fdNames = new WeakMap<StoredObject, Uint8Array<ArrayBuffer>>();
  readonly #bufPool: Uint8Array[] = [];
  /** Connections parked by GET --wait, by the name they wait for. */
  readonly #waiting = new Map<string, Set<Conn>>();
  #shadow: ShadowLink | null = null;
  #handover:
    | { command: readonly string[]; done: (ok: boolean) => void }
    | { conn: Conn; done: (ok: boolean) => void }
    | null = null;
  #listenOpen = true;
  #nextShadowRetry = 0;
  #waiters = 0;
  #nextToken = 1;
  #reserveFd = -1;
  #lingering = 0;
  #nextSweep = 0;
  #acceptBlocked = false;
  #stopping = false;
  #graceDeadline = 0;
  readonly #blocking: boolean;
  readonly #needPeer: boolean;
  readonly #inlineHashLimit: number;
  #resolveClosed: () => void = () => {};
  #failure: Error | null = null;
  /** Resolves once the broker has stopped and released everything. */
  readonly closed: Promise<void>;

  /**
   * The internal error that stopped the broker, or null (running, or stopped by
   * {@link Broker.close}). A supervisor should treat a non-null value as a failure: the
   * `memfdbus broker` command then exits with status 1.
   */
  get failure(): Error | null {
    return this.#failure;
  }

  private constructor(
    options: BrokerOptions,
    listenFd: number,
    socketIno: bigint,
    audit: AuditSink,
    start: BrokerStartOptions,
  ) {
    this.#options = options;
    this.#listenFd = listenFd;
    this.#socketIno = socketIno;
    this.#store = new Store(options);
    this.#auditCallback = typeof audit === "function" ? audit : null;
    this.#audit = new AuditLog(typeof audit === "number" ? audit : -1);
    this.#inlineHashLimit = start.inlineHashLimit ?? 1 << 20;
    this.#hash = new HashPool(start.hashWorkers ?? 1, this.#inlineHashLimit);
    this.#poller = new Poller(256);
    this.#poller.add(listenFd, EPOLLIN, LISTEN_TOKEN);
    this.#reserveFd = libc.symbols.open(cstr("/dev/null"), O_RDONLY | O_CLOEXEC, 0);
    this.#procDirFd = libc.symbols.open(
      cstr("/proc/self/fd"),
      O_RDONLY | O_DIRECTORY | O_CLOEXEC,
      0,
    );
    this.#blocking = start.blockingWait ?? false;
    this.#audit.withPeer = options.auditPeer;
    this.#needPeer = options.auditPeer || options.policy.jobs.size > 0;
    this.closed = new Promise((resolve) => (this.#resolveClosed = resolve));
  }

  /**
   * Create the socket, print the `memfdbus broker listening on PATH` line to the audit sink and
   * start serving. Startup failures throw with the C broker's message (for example
   * `refusing to unlink non-socket path: /tmp/x`).
   *
   * @example
   * ```ts
   * import { Broker } from "@memfdbus/memfdbus";
   * const dir = Deno.makeTempDirSync();
   * const broker = await Broker.start({ socket: `${dir}/bus.sock`, audit: null });
   * console.log(broker.socket, broker.objectCount, broker.connectionCount);
   * await broker.close();
   * Deno.removeSync(dir, { recursive: true });
   * ```
   *
   * @param start options; anything left out takes the C broker's default
   */
  static async start(start: BrokerStartOptions = {}): Promise<Broker> {
    const options: BrokerOptions = { ...defaultBrokerOptions() };
    for (const [k, v] of Object.entries(start)) {
      if (v !== undefined && k in options && k !== "shadow") {
        (options as unknown as Record<string, unknown>)[k] = v;
      }
    }
    if (start.raiseFdLimit ?? true) raiseDescriptorLimit();
    let listener: { fd: number; ino: bigint };
    if (start.listenFd !== undefined) {
      const path = inheritedListener(start.listenFd);
      if (path !== "") options.socket = path;
      setNonblocking(start.listenFd, true);
      setCloexec(start.listenFd, true);
      // A socket taken over from an old broker is this broker's to unlink at the end; one
      // passed by systemd stays systemd's.
      const st = start.takeoverFd === undefined ? 0 : tryLstat(options.socket);
      listener = { fd: start.listenFd, ino: typeof st === "number" ? 0n : st.ino };
    } else {
      listener = openListener(options.socket, options.socketMode, options.listenBacklog);
    }
    const { fd, ino } = listener;
    const broker = new Broker(options, fd, ino, start.audit === undefined ? 1 : start.audit, start);
    inProcess.brokers++;
    try {
      if (start.takeoverFd !== undefined) {
        await broker.#takeOver(start.takeoverFd, start.shadow);
      } else {
        broker.#line(`memfdbus broker listening on ${options.socket}`);
        if (start.shadow !== undefined) await broker.#attachShadow(start.shadow, true);
      }
    } catch (e) {
      broker.#beginStop();
      broker.#finishStop();
      throw e;
    }
    broker.#flush();
    void broker.#run();
    return broker;
  }

  /** The socket path. */
  get socket(): string {
    return this.#options.socket;
  }

  /**
   * Objects currently stored.
   *
   * @example
   * ```ts
   * import { Broker, Client } from "@memfdbus/memfdbus";
   * const dir = Deno.makeTempDirSync();
   * {
   *   await using broker = await Broker.start({ socket: `${dir}/bus.sock`, audit: () => {} });
   *   await using client = new Client({ socket: broker.socket });
   *   await client.put(new Uint8Array([1]), { name: "one" });
   *   console.log(broker.objectCount, broker.connectionCount >= 0); // 1 true
   * }
   * Deno.removeSync(dir, { recursive: true });
   * ```
   */
  get objectCount(): number {
    return this.#store.count;
  }

  /** Connections currently open. */
  get connectionCount(): number {
    return this.#conns.size;
  }

  /**
   * Stop accepting, let requests in flight finish (up to two seconds), then close every
   * connection and stored descriptor and unlink the socket. Resolves when done.
   *
   * @example Stopping on SIGTERM
   * ```ts ignore
   * import { Broker } from "@memfdbus/memfdbus";
   * const broker = await Broker.start({ socket: "/tmp/memfdbus.sock" });
   * Deno.addSignalListener("SIGTERM", () => void broker.close());
   * await broker.closed;
   * ```
   */
  close(): Promise<void> {
    this.#beginStop();
    return this.closed;
  }

  /** Same as {@link Broker.close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  // ---- shadow ------------------------------------------------------------------------------

  /**
   * Take the objects of an old broker over `fd` (before any client is served), then tell it to
   * go. The audit log (inherited from the old broker) gets one takeover record.
   */
  async #takeOver(fd: number, shadow: ShadowConfig | undefined): Promise<void> {
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
    for (const obj of objects) {
      this.#store.restore(obj, nextId);
      bytes += obj.size;
    }
    this.#store.restore(null, nextId);
    if (shadow !== undefined) await this.#attachShadow(shadow, false);
    const rec = blankRecord("takeover", "ok", null);
    rec.count = objects.length;
    rec.size = bytes;
    this.#recordRaw(rec);
    link.queue(Frame.ACK, null);
    link.flushBlocking(10_000);
    for (const c of conns) {
      setNonblocking(c, true);
      this.#admit(c);
    }
  }

  /**
   * Connect to the shadow. With `recover`, its objects become the store's (before any client is
   * served); otherwise the store (taken over) is authoritative and the shadow is seeded with it.
   */
  async #attachShadow(config: ShadowConfig, recover: boolean): Promise<void> {
    // Taking over, the old broker lets go of the shadow just before this: wait for that.
    const attached = ShadowLink.attach(config, recover ? 0 : 5_000);
    const { link, started } = attached;
    let { objects, nextId } = attached;
    let refused: Refused[] = attached.refused;
    if (recover) {
      // No recovered object is served before its digest is verified.
      const checked = await verifyRecovered(objects, (fd, size) => this.#hash.digest(fd, size));
      objects = checked.kept;
      refused = [...refused, ...checked.refused];
    } else {
      for (const obj of objects) closeQuietly(obj.fd);
      objects = [];
      nextId = this.#store.nextId;
      link.seed(this.#store.values(), nextId, () => {});
    }
    this.#shadow = link;
    link.onReconnect = (oldFd, newFd) => {
      if (oldFd >= 0) this.#poller.remove(oldFd);
      if (newFd >= 0) this.#poller.add(newFd, EPOLLIN | EPOLLOUT | EPOLLET, SHADOW_TOKEN);
    };
    link.onTrouble = (message) => this.#recoverRecord("error", message, this.#store.count);
    this.#poller.add(link.fd, EPOLLIN | EPOLLOUT | EPOLLET, SHADOW_TOKEN);
    let bytes = 0;
    for (const obj of objects) {
      this.#store.restore(obj, nextId);
      bytes += obj.size;
    }
    this.#store.restore(null, nextId);
    if (!recover) return;
    if (started) {
      this.#recoverRecord(
        "not_found",
        `no shadow state at ${config.path}: started a new shadow, no objects recovered`,
        0,
      );
      console.error(
        `memfdbus broker: no shadow was running on ${config.path}; started one, nothing to recover`,
      );
    } else {
      this.#recoverRecord("ok", null, objects.length, bytes);
    }
    for (const r of refused) {
      if (r.id > 0) link.remove(r.id, () => {});
      const rec = blankRecord("recover", "error", `${r.reason}: object removed`);
      rec.objectId = r.id;
      rec.name = r.name;
      this.#recordRaw(rec);
    }
  }

  #recoverRecord(result: AuditResult, error: string | null, count: number, size = 0): void {
    const rec = blankRecord("recover", result, error);
    rec.count = count;
    rec.size = size;
    this.#recordRaw(rec);
  }

  /** Mirror a finished PUT or DROP to the shadow, then reply. */
  #mirror(conn: Conn, o: Outcome, shadow: ShadowLink): void {
    conn.state = State.Mirror;
    const go = (): void => {
      if (conn.state !== State.Mirror) return;
      this.#reply(conn, o);
      this.#pump(conn);
    };
    const id = Number(o.audit.objectId ?? 0);
    const obj = o.keptFd ? this.#store.byId(id) : undefined;
    if (obj !== undefined) shadow.add(obj, this.#store.nextId, go);
    else shadow.remove(id, go);
    if (shadow.lost) this.#reviveShadow();
  }

  #reviveShadow(): void {
    const shadow = this.#shadow;
    if (shadow === null || this.#stopping) return;
    this.#nextShadowRetry = performance.now() + 1000;
    shadow.revive(() => this.#store.values(), this.#store.nextId);
  }

  // ---- audit -------------------------------------------------------------------------------

  #line(text: string): void {
    if (this.#auditCallback !== null) this.#auditCallback(text);
    else this.#audit.line(text);
  }

  #recordRaw(rec: AuditRecord): void {
    if (this.#auditCallback !== null) {
      this.#auditCallback(formatRecord(realtimeNs(), rec).slice(0, -1));
    } else this.#audit.record(rec);
  }

  /** The peer's credentials when the audit log wants them. */
  #peerOf(fd: number): AuditPeer | undefined {
    if (!this.#audit.withPeer) return undefined;
    try {
      return peerCredentials(fd);
    } catch {
      return undefined;
    }
  }

  #record(
    o: Outcome,
    conn: Conn | null,
    override?: { error: string },
    peer: AuditPeer | undefined = conn?.peer,
  ): void {
    const rec = override === undefined
      ? o.audit
      : { ...o.audit, result: "error" as const, error: override.error };
    if (this.#auditCallback !== null) {
      const line = formatRecord(realtimeNs(), rec, this.#audit.withPeer ? peer : undefined);
      this.#auditCallback(line.slice(0, -1));
    } else {
      this.#audit.record(rec, peer);
    }
  }

  #flush(): void {
    this.#audit.flush();
  }

  // ---- the loop ----------------------------------------------------------------------------

  async #run(): Promise<void> {
    let lastEvent = performance.now();
    let lastYield = lastEvent;
    try {
      for (;;) {
        if (this.#stopping && this.#finishStopIfDone()) return;
        const now = performance.now();
        // While a Worker verifies a digest, wait off-thread: the event loop then takes the
        // Worker's answer the moment it comes (a thread blocked in epoll_wait would only see it
        // at its next yield, which measured up to tens of milliseconds late).
        const busy = this.#blocking && now - lastEvent < IDLE_SWITCH_MS &&
          this.#hash.inFlight === 0;
        let events: PollEvent[];
        if (busy && now - lastYield < YIELD_MS) {
          // Block on this thread: the kernel wakes it directly, without a pool-thread hop. While
          // busy, audit lines are written at every yield (at most YIELD_MS apart), not after
          // every request.
          const slice = Math.max(1, Math.ceil(YIELD_MS - (now - lastYield)));
          events = this.#poller.poll(this.#events, Math.min(slice, this.#waitTimeout() >>> 0));
        } else {
          events = this.#blocking ? [] : this.#poller.poll(this.#events);
          if (events.length === 0) {
            // Write the audit log, let the event loop run (signals, Worker messages), then
            // wait off-thread.
            this.#flush();
            lastYield = now;
            events = await this.#poller.wait(busy ? 0 : this.#waitTimeout(), this.#events);
          }
        }
        if (events.length > 0) lastEvent = performance.now();
        for (const ev of events) {
          try {
            this.#dispatch(ev);
          } catch (e) {
            // A bug in one request's handling fails that request, not the broker.
            this.#requestFault(ev.token, e);
          }
        }
        const after = performance.now();
        if (after >= this.#nextSweep) this.#sweep(after);
      }
    } catch (e) {
      // A bug, not a client's doing: report it and stop cleanly rather than hang.
      console.error(`memfdbus broker: internal error: ${(e as Error).stack ?? e}`);
      this.#failure = e instanceof Error ? e : new Error(String(e));
      this.#stopping = true;
      this.#finishStop();
    }
  }

  /** An exception escaped while serving the connection `token`: answer it and close it. */
  #requestFault(token: number, e: unknown): void {
    const conn = this.#conns.get(token);
    if (conn === undefined) throw e;
    console.error(`memfdbus broker: internal error in a request: ${(e as Error).stack ?? e}`);
    try {
      if (conn.state !== State.Send && conn.state !== State.Linger) {
        const o = errorOutcome(
          conn.header?.cmd ?? 0,
          Status.ERR,
          "internal error",
          blankRecord("unknown", "error", null),
        );
        this.#record(o, conn);
        for (const seg of o.segments) sendSome(conn.fd, seg.bytes);
      }
    } finally {
      this.#close(conn);
    }
  }

  #waitTimeout(): number {
    if (this.#conns.size === 0 && !this.#acceptBlocked && !this.#stopping) return -1;
    return Math.max(1, Math.ceil(this.#nextSweep - performance.now()));
  }

  #dispatch(ev: PollEvent): void {
    if (ev.token === LISTEN_TOKEN) {
      this.#acceptAll();
      return;
    }
    if (ev.token === SHADOW_TOKEN) {
      this.#shadow?.onEvent();
      if (this.#shadow?.lost) this.#reviveShadow();
      return;
    }
    const conn = this.#conns.get(ev.token);
    if (conn === undefined) return;
    if (ev.events & (EPOLLHUP | EPOLLERR)) conn.hup = true;
    conn.drained = false;
    if (ev.events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR | EPOLLOUT)) this.#pump(conn);
  }

  #sweep(now: number): void {
    this.#nextSweep = now + SWEEP_MS;
    const shadow = this.#shadow;
    if (shadow !== null && shadow.stalled(now, SHADOW_ACK_MS)) {
      shadow.abandon(`did not acknowledge within ${SHADOW_ACK_MS} ms`);
    }
    if (shadow !== null && shadow.fd < 0 && now >= this.#nextShadowRetry) this.#reviveShadow();
    if (this.#acceptBlocked && !this.#stopping) {
      this.#acceptBlocked = false;
      this.#poller.add(this.#listenFd, EPOLLIN, LISTEN_TOKEN);
    }
    for (const conn of this.#conns.values()) {
      if (conn.drained && (conn.state === State.Header || conn.state === State.Body)) {
        // A short read normally means the socket is empty, but the kernel also stops a read at
        // data from another writing process: look again now and then, so that case cannot stall.
        conn.drained = false;
        this.#pump(conn);
      }
      if (conn.state === State.Hash || conn.state === State.Mirror || now < conn.deadline) continue;
      this.#expire(conn);
    }
  }

  /** A connection ran out of time in its current state. */
  #expire(conn: Conn): void {
    switch (conn.state) {
      case State.Body:
        // The body never arrived: answer with the handler's read-failure text, as the C broker
        // does for a failed read, then close.
        conn.eof = true;
        this.#pump(conn);
        return;
      case State.Send:
        this.#sendFailed(conn);
        return;
      case State.Wait:
        this.#unpark(conn);
        this.#resume(conn, false);
        this.#pump(conn);
        return;
      default:
        this.#close(conn);
    }
  }

  // ---- accepting ---------------------------------------------------------------------------

  /**
   * Accept one pending connection. The listener is level-triggered, so a backlog keeps waking the
   * loop; accepting one per wake-up saves the accept4 that would only return EAGAIN.
   */
  #acceptAll(): void {
    this.#acceptBlocked = false;
    if (this.#stopping) return;
    for (;;) {
      const fd = acceptUnix(this.#listenFd);
      if (fd >= 0) {
        this.#admit(fd);
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
      this.#acceptBlocked = true;
      this.#poller.remove(this.#listenFd);
      return;
    }
  }

  /** At the descriptor limit: use the reserve descriptor to tell one client why, then close. */
  #rejectWithReserve(): "rejected" | "empty" | "failed" {
    if (this.#reserveFd < 0) {
      this.#reserveFd = libc.symbols.open(cstr("/dev/null"), O_RDONLY | O_CLOEXEC, 0);
      if (this.#reserveFd < 0) return "failed";
    }
    closeQuietly(this.#reserveFd);
    this.#reserveFd = -1;
    const fd = acceptUnix(this.#listenFd);
    if (fd >= 0) {
      const o = fdLimitOutcome();
      this.#record(o, null, undefined, this.#peerOf(fd));
      for (const s of o.segments) sendSome(fd, s.bytes);
      closeQuietly(fd);
    }
    this.#reserveFd = libc.symbols.open(cstr("/dev/null"), O_RDONLY | O_CLOEXEC, 0);
    if (fd === -EAGAIN) return "empty";
    return fd >= 0 && this.#reserveFd >= 0 ? "rejected" : "failed";
  }

  #admit(fd: number): void {
    const now = performance.now();
    const active = this.#conns.size - this.#lingering - this.#waiters;
    if (active >= this.#options.maxClients && !this.#evictIdle()) {
      const o = clientQuotaOutcome();
      this.#record(o, null, undefined, this.#peerOf(fd));
      if (this.#lingering >= MAX_LINGERING) {
        for (const s of o.segments) sendSome(fd, s.bytes);
        closeQuietly(fd);
        return;
      }
      const conn = this.#register(fd, now + LINGER_MS);
      this.#reply(conn, o);
      this.#pump(conn);
      return;
    }
    const conn = this.#register(fd, now + this.#options.requestTimeoutMs);
    if (this.#needPeer) {
      try {
        conn.peer = peerCredentials(fd);
      } catch {
        // The peer already left; its request will fail on its own.
      }
    }
    this.#pump(conn);
  }

  #register(fd: number, deadline: number): Conn {
    let token = this.#nextToken;
    while (this.#conns.has(token) || token === 0 || token >= LISTEN_TOKEN) {
      token = token >= LISTEN_TOKEN - 1 ? 1 : token + 1;
    }
    this.#nextToken = token + 1;
    const conn = new Conn(token, fd, deadline);
    this.#conns.set(token, conn);
    return conn;
  }

  /**
   * Ask epoll about a connection that has to wait. Registration is edge-triggered and made only
   * on the first EAGAIN: a request that arrives whole is answered without any epoll_ctl. Data
   * that arrived before registering is reported at once, so no wake-up is lost.
   */
  #watch(conn: Conn): void {
    if (conn.registered || conn.fd < 0) return;
    conn.registered = true;
    this.#poller.add(conn.fd, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, conn.token);
  }

  /** Close the longest-idle kept-alive connection to make room; true if one was closed. */
  #evictIdle(): boolean {
    for (const conn of this.#conns.values()) {
      if (conn.state === State.Header && conn.len === 0 && conn.served > 0) {
        this.#close(conn);
        return true;
      }
    }
    return false;
  }

  // ---- per-connection state machine --------------------------------------------------------

  #context(conn: Conn): RequestContext {
    return {
      store: this.#store,
      options: this.#options,
      fd: conn.reqFd,
      fdLost: conn.fdLost,
      peer: conn.peer,
      reopen: (obj) => this.#reopen(obj),
      release: (obj) => closeQuietly(obj.fd),
      now: realtimeNs,
    };
  }

  /**
   * A fresh descriptor for a consumer: a new open file description of the same memfd (its own
   * offset), by opening /proc/self/fd/N relative to a held directory descriptor. O_RDWR like the
   * C broker (the seals refuse writes with EPERM, which C programs check), or O_RDONLY with
   * --read-only-fds. Without /proc it falls back to a duplicate, which shares the file offset.
   */
  #reopen(obj: StoredObject): number {
    if (this.#procDirFd < 0) {
      const d = libc.symbols.fcntl(obj.fd, F_DUPFD_CLOEXEC, 0);
      return d >= 0 ? d : -errno();
    }
    let path = this.#fdNames.get(obj);
    if (path === undefined) {
      path = cstr(String(obj.fd));
      this.#fdNames.set(obj, path);
    }
    const mode = this.#options.readOnlyFds ? O_RDONLY : O_RDWR;
    const fd = libc.symbols.openat(this.#procDirFd, path, mode | O_CLOEXEC, 0);
    return fd >= 0 ? fd : -errno();
  }

  /** Drive a connection as far as it can go without blocking. */
  #pump(conn: Conn): void {
    for (;;) {
      switch (conn.state) {
        case State.Header:
          if (conn.len >= HEADER_SIZE) {
            this.#startRequest(conn);
            continue;
          }
          if (conn.eof) {
            // Closed before a whole header: no reply and no audit record, as in protocol v1.
            this.#close(conn);
            return;
          }
          if (!this.#fill(conn, HEADER_SIZE)) return;
          continue;
        case State.Body: {
          const need = conn.step?.kind === "read" ? conn.step.length : 0;
          if (conn.len >= need) {
            const bytes = conn.buf.slice(0, need);
            this.#consume(conn, need);
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
        case State.Closed:
          return;
      }
    }
  }

  /**
   * Read what is available into the connection buffer, up to what the current step needs plus a
   * bounded read-ahead. Returns false when nothing more can be read now.
   */
  #fill(conn: Conn, need: number): boolean {
    if (conn.drained) {
      // A short read emptied the socket: wait for the next edge instead of a recvmsg that
      // would only say EAGAIN.
      this.#watch(conn);
      return false;
    }
    const want = Math.max(need, HEADER_SIZE) - conn.len;
    if (conn.buf.length < conn.len + Math.max(want, 1)) {
      const size = Math.max(conn.buf.length * 2, conn.len + want, CONN_BUF);
      const grown = size === CONN_BUF
        ? this.#bufPool.pop() ?? new Uint8Array(CONN_BUF)
        : new Uint8Array(size);
      grown.set(conn.buf.subarray(0, conn.len));
      this.#releaseBuf(conn);
      conn.buf = grown;
    }
    const space = conn.buf.length - conn.len;
    const limit = Math.min(space, Math.max(want, READ_CHUNK));
    const headerPhase = conn.state === State.Header && conn.len < HEADER_SIZE;
    const r = recvMsg(conn.fd, conn.buf.subarray(conn.len, conn.len + limit));
    if (typeof r === "number") {
      if (r === -EAGAIN) {
        this.#watch(conn);
        return false;
      }
      conn.eof = true; // ECONNRESET and friends end the request like an end of stream.
      return true;
    }
    if (r.fds.length > 0 || r.truncated) this.#takeFds(conn, r.fds, r.truncated, headerPhase);
    if (r.bytes === 0) {
      conn.eof = true;
      return true;
    }
    if (r.bytes < limit && r.fds.length === 0) conn.drained = true;
    if (conn.len === 0 && conn.served > 0 && conn.state === State.Header) {
      // The next request on a kept-alive connection has begun.
      conn.deadline = performance.now() + this.#options.requestTimeoutMs;
    }
    conn.len += r.bytes;
    return true;
  }

  /** Keep the first descriptor that came with the header; close every other one (D7). */
  #takeFds(conn: Conn, fds: number[], truncated: boolean, headerPhase: boolean): void {
    let rest = fds;
    if (headerPhase) {
      if (truncated) conn.fdLost = true;
      if (conn.reqFd < 0 && fds.length > 0) {
        conn.reqFd = fds[0] ?? -1;
        rest = fds.slice(1);
      }
    }
    closeAllDropped(rest);
  }

  #consume(conn: Conn, n: number): void {
    if (n === 0) return;
    conn.buf.copyWithin(0, n, conn.len);
    conn.len -= n;
  }

  #startRequest(conn: Conn): void {
    const h = decodeHeader(conn.buf);
    this.#consume(conn, HEADER_SIZE);
    conn.header = h;
    conn.consumed = 0;
    if (!isValidHeader(h)) {
      this.#dropReqFd(conn);
      this.#finish(conn, badHeaderOutcome());
      return;
    }
    if (h.cmd === Cmd.TAKEOVER && isValidHeader(h)) {
      this.#dropReqFd(conn);
      this.#takeoverRequest(conn);
      return;
    }
    if (h.cmd < Cmd.PUT || h.cmd > Cmd.STAT) {
      this.#dropReqFd(conn);
      this.#finish(conn, unknownCommandOutcome(h.cmd));
      return;
    }
    if (h.cmd !== Cmd.PUT) {
      this.#dropReqFd(conn);
    } else if (conn.reqFd >= 0) {
      // Allow the publisher time to finish hashing its object before the digest arrives.
      const st = tryFstat(conn.reqFd);
      if (typeof st !== "number" && isRegular(st.mode)) conn.deadline += Number(st.size) / 100_000;
      // Nothing is hashed before the handler has checked the whole request (no speculative
      // digest here any more: it let any peer make the broker hash without a valid request).
    }
    conn.keepAlive = (extFlags(h.reserved) & Flag.KEEP_ALIVE) !== 0;
    conn.handler = handle(h, this.#context(conn));
    this.#resume(conn, null);
  }

  #dropReqFd(conn: Conn): void {
    const fd = conn.reqFd;
    conn.reqFd = -1;
    if (fd < 0) return;
    const spec = conn.speculative;
    conn.speculative = null;
    // A Worker may still be mapping this descriptor: close it only once that is over.
    if (spec !== null && spec.fd === fd) void spec.answer.finally(() => closeDropped(fd));
    else closeDropped(fd);
  }

  #resume(conn: Conn, input: StepInput): void {
    const handler = conn.handler;
    if (handler === null) return;
    const r = handler.next(input);
    if (r.done) {
      conn.handler = null;
      conn.step = null;
      this.#finish(conn, r.value);
      return;
    }
    const step = r.value;
    conn.step = step;
    if (step.kind === "read") {
      conn.state = State.Body;
      return;
    }
    if (step.kind === "wait") {
      if (this.#waiters >= this.#options.maxWaiters || this.#stopping) {
        conn.handler = null;
        conn.step = null;
        const rec = blankRecord(conn.header?.cmd === Cmd.STAT ? "stat" : "get", "error", null);
        rec.name = step.name;
        this.#finish(conn, errorOutcome(conn.header?.cmd ?? 0, Status.ERR, Text.waitQuota, rec));
        return;
      }
      conn.state = State.Wait;
      conn.waited = true;
      const limit = this.#options.maxWaitMs;
      conn.deadline = performance.now() + (step.ms > 0 ? Math.min(step.ms, limit) : limit);
      let set = this.#waiting.get(step.name);
      if (set === undefined) this.#waiting.set(step.name, set = new Set());
      set.add(conn);
      this.#waiters++;
      this.#watch(conn);
      return;
    }
    conn.state = State.Hash;
    const spec = conn.speculative;
    conn.speculative = null;
    const answer = spec !== null && spec.fd === step.fd
      ? spec.answer
      : this.#hash.digest(step.fd, step.size, conn.peer?.uid ?? peerUid(conn.fd));
    if (!(answer instanceof Promise)) {
      this.#resume(conn, answer);
      return;
    }
    answer.then((a: DigestAnswer) => {
      if (conn.state !== State.Hash) return;
      this.#resume(conn, a);
      this.#pump(conn);
      // This runs between loop turns: write the audit record now, not at the next wake-up.
      this.#flush();
    });
  }

  /** Take a connection out of the waiting lists. */
  #unpark(conn: Conn): void {
    const step = conn.step;
    if (step?.kind !== "wait") return;
    const set = this.#waiting.get(step.name);
    if (set?.delete(conn)) {
      this.#waiters--;
      if (set.size === 0) this.#waiting.delete(step.name);
    }
  }

  /** A name was published: answer everyone waiting for it. */
  #published(name: string): void {
    const set = this.#waiting.get(name);
    if (set === undefined) return;
    this.#waiting.delete(name);
    for (const conn of set) {
      this.#waiters--;
      if (conn.state !== State.Wait) continue;
      this.#resume(conn, true);
      this.#pump(conn);
    }
  }

  #finish(conn: Conn, o: Outcome): void {
    if (!o.keptFd) this.#dropReqFd(conn);
    conn.reqFd = -1;
    const h = conn.header;
    const inSync = h !== null && isValidHeader(h) && conn.consumed === requestBytes(h);
    conn.keepAlive = conn.keepAlive && inSync && !this.#stopping;
    const flags = (conn.keepAlive ? Flag.KEEP_ALIVE : 0) | (conn.waited ? Flag.WAIT : 0);
    conn.waited = false;
    if (flags !== 0) {
      new DataView(o.wire.buffer, o.wire.byteOffset).setUint32(Off.reserved, withExt(flags), true);
    }
    conn.lingerLeft = h === null || inSync
      ? 0
      : Math.min(requestBytes(h) - conn.consumed, LINGER_BYTES);
    if (!o.auditAfterSend) this.#record(o, conn);
    const shadow = this.#shadow;
    if (shadow !== null && o.ok && (o.keptFd || o.audit.op === "drop")) {
      this.#mirror(conn, o, shadow);
    } else this.#reply(conn, o);
    if (o.keptFd && o.audit.name !== null && this.#waiting.size > 0) {
      // Reply to the publisher first, then wake the waiters.
      this.#pump(conn);
      this.#published(o.audit.name);
    }
  }

  #reply(conn: Conn, o: Outcome): void {
    conn.outcome = o;
    conn.out = o.wire;
    conn.outOff = 0;
    conn.replyFd = o.fd;
    conn.state = State.Send;
    // A slow reader gets the request timeout to take its reply.
    conn.deadline = performance.now() + this.#options.requestTimeoutMs;
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
      this.#record(o, conn, { error: text });
    }
    this.#close(conn);
  }

  #afterSend(conn: Conn): void {
    const o = conn.outcome;
    if (o !== null && o.auditAfterSend) this.#record(o, conn);
    conn.outcome = null;
    conn.out = EMPTY;
    if (conn.replyFd >= 0) closeQuietly(conn.replyFd);
    conn.replyFd = -1;
    conn.served++;
    if (conn.keepAlive && !this.#stopping) {
      conn.header = null;
      conn.fdLost = false;
      conn.state = State.Header;
      conn.deadline = performance.now() +
        (conn.len > 0 ? this.#options.requestTimeoutMs : this.#options.idleTimeoutMs);
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
      this.#lingering++;
      return;
    }
    this.#close(conn);
  }

  #linger(conn: Conn): void {
    for (;;) {
      if (conn.eof || conn.lingerLeft <= 0) {
        this.#close(conn);
        return;
      }
      const r = recvMsg(conn.fd, this.#scratch.subarray(0, Math.min(READ_CHUNK, conn.lingerLeft)));
      if (typeof r === "number") {
        if (r === -EAGAIN) {
          this.#watch(conn);
          return;
        }
        conn.eof = true;
        continue;
      }
      closeAllDropped(r.fds);
      if (r.bytes === 0) conn.eof = true;
      conn.lingerLeft -= r.bytes;
    }
  }

  #close(conn: Conn): void {
    if (conn.state === State.Closed) return;
    if (conn.state === State.Wait) this.#unpark(conn);
    if (conn.state === State.Linger) this.#lingering--;
    conn.state = State.Closed;
    this.#conns.delete(conn.token);
    this.#dropReqFd(conn);
    if (conn.replyFd >= 0) closeQuietly(conn.replyFd);
    conn.replyFd = -1;
    conn.handler?.return(undefined as never);
    conn.handler = null;
    this.#releaseBuf(conn);
    closeQuietly(conn.fd);
    conn.fd = -1;
  }

  #releaseBuf(conn: Conn): void {
    if (conn.buf.length === CONN_BUF && this.#bufPool.length < 64) this.#bufPool.push(conn.buf);
    conn.buf = EMPTY;
  }

  // ---- handing over to a new broker --------------------------------------------------------

  /**
   * Hand this broker's listening socket and objects to a new broker process started with
   * `command` (it finds both through MEMFDBUS_TAKEOVER), for an upgrade that loses nothing:
   * accepting stops (new clients wait in the listen backlog), requests in flight finish, the
   * new broker takes the state and starts serving, and this broker closes. Resolves true once
   * handed over; false (and this broker serves on) when the new broker did not take over.
   */
  handover(command: readonly string[]): Promise<boolean> {
    if (this.#stopping) return Promise.resolve(false);
    return new Promise((done) => {
      this.#handover = { command, done };
      this.#beginStop(true);
    });
  }

  /** A `--takeover` broker asks for this broker's socket and objects. */
  #takeoverRequest(conn: Conn): void {
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
    if (uid !== libc.symbols.geteuid() || this.#stopping) {
      this.#finish(conn, errorOutcome(Cmd.TAKEOVER, Status.FORBIDDEN, Text.accessDenied, rec));
      return;
    }
    rec.result = "ok";
    rec.objectId = pid;
    this.#recordRaw(rec);
    conn.state = State.Handover;
    this.#handover = { conn, done: () => {} };
    this.#beginStop(true);
  }

  /** Transfer the listener and objects; true when the new broker confirmed it is serving. */
  #performHandover(
    h: { command: readonly string[] } | { conn: Conn },
  ): boolean {
    let link: FrameConn | null = null;
    let child: Deno.ChildProcess | null = null;
    try {
      if ("command" in h) {
        const pair = new Int32Array(2);
        check(
          libc.symbols.socketpair(
            AF_UNIX,
            SOCK_STREAM | SOCK_CLOEXEC,
            0,
            new Uint8Array(pair.buffer),
          ),
          "socketpair",
        );
        const mine = pair[0] ?? -1;
        const theirs = pair[1] ?? -1;
        link = new FrameConn(mine);
        setCloexec(this.#listenFd, false);
        setCloexec(theirs, false);
        const [cmd, ...args] = h.command;
        try {
          child = new Deno.Command(cmd ?? "", {
            args,
            env: { MEMFDBUS_TAKEOVER: `${this.#listenFd},${theirs}`, DENO_NO_UPDATE_CHECK: "1" },
            stdin: "null",
            stdout: "inherit",
            stderr: "inherit",
          }).spawn();
        } finally {
          setCloexec(this.#listenFd, true);
          closeQuietly(theirs);
        }
      } else {
        const conn = h.conn;
        const reply = encodeHeader({ cmd: Cmd.TAKEOVER });
        if (sendMsg(conn.fd, reply, [this.#listenFd]) !== reply.length) throw new Error("send");
        link = new FrameConn(conn.fd);
        // The connection now belongs to the link.
        this.#conns.delete(conn.token);
        conn.state = State.Closed;
        conn.fd = -1;
      }
      setNonblocking(link.fd, true);
      const hello = link.nextBlocking(5_000);
      if (hello.type !== Frame.HELLO) throw new Error("no HELLO from the new broker");
      serveState(link, this.#store.values(), this.#store.nextId);
      // Connections accepted but not read from yet go to the new broker too: their clients may
      // be sending a request right now, and it must be answered, not dropped.
      const idle = [...this.#conns.values()].filter((c) =>
        c.state === State.Header && c.len === 0 && !c.eof
      );
      for (let i = 0; i < idle.length; i += FDS_PER_FRAME) {
        const batch = idle.slice(i, i + FDS_PER_FRAME);
        link.queue(Frame.CONNS, { count: batch.length }, batch.map((c) => c.fd));
      }
      link.queue(Frame.CONNS_END, null);
      link.flushBlocking(30_000);
      // The shadow serves one broker: let go of it so the new broker can attach. Should the
      // handover fail, the sweep reconnects and seeds it again.
      this.#shadow?.release();
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
      this.#recordRaw(blankRecord("takeover", "error", `handover failed: ${(e as Error).message}`));
      return false;
    } finally {
      link?.close();
    }
  }

  // ---- stopping ----------------------------------------------------------------------------

  #beginStop(handover = false): void {
    if (this.#stopping) return;
    this.#stopping = true;
    this.#graceDeadline = performance.now() + GRACE_MS;
    this.#poller.remove(this.#listenFd);
    if (!handover) {
      this.#closeListener();
      this.#unlinkSocket();
    }
    for (const conn of [...this.#conns.values()]) {
      // Idle connections are closed on a stop, but handed to the new broker on a handover.
      if (conn.state === State.Header && conn.len === 0) {
        if (!handover) this.#close(conn);
      } else if (conn.state === State.Wait) {
        // A waiting client asks again after a handover: answer as a broker that does not wait.
        if (handover) conn.waited = false;
        this.#expire(conn);
      }
    }
    this.#poller.wake();
  }

  #closeListener(): void {
    if (!this.#listenOpen) return;
    this.#listenOpen = false;
    closeQuietly(this.#listenFd);
  }

  #unlinkSocket(): void {
    // Only unlink the path if it is still the socket this broker created.
    const st = tryLstat(this.#options.socket);
    if (typeof st !== "number" && st.ino === this.#socketIno) {
      libc.symbols.unlink(cstr(this.#options.socket));
    }
  }

  #finishStopIfDone(): boolean {
    const busy = [...this.#conns.values()].some((c) =>
      c.state !== State.Linger && c.state !== State.Handover &&
      !(c.state === State.Header && c.len === 0)
    );
    if (busy && performance.now() < this.#graceDeadline) return false;
    const h = this.#handover;
    if (h !== null) {
      this.#handover = null;
      if (!this.#performHandover(h)) {
        // The new broker did not take over: carry on serving.
        if ("conn" in h) this.#close(h.conn);
        this.#stopping = false;
        this.#poller.add(this.#listenFd, EPOLLIN, LISTEN_TOKEN);
        h.done(false);
        return false;
      }
      h.done(true);
    }
    this.#finishStop();
    return true;
  }

  #finishStop(): void {
    this.#closeListener();
    for (const conn of [...this.#conns.values()]) this.#close(conn);
    for (const obj of this.#store.values()) closeQuietly(obj.fd);
    this.#shadow?.close();
    this.#shadow = null;
    this.#hash.close();
    closeQuietly(this.#reserveFd);
    this.#reserveFd = -1;
    closeQuietly(this.#procDirFd);
    this.#flush();
    this.#poller.close();
    inProcess.brokers--;
    // Descriptors being closed off the loop are released before `closed` resolves.
    void closesSettled().then(() => this.#resolveClosed());
  }
}

/** Raise the soft RLIMIT_NOFILE to the hard limit: the broker holds one descriptor per object. */
export function raiseDescriptorLimit(): { soft: bigint; hard: bigint } {
  const buf = new BigUint64Array(2);
  const bytes = new Uint8Array(buf.buffer);
  if (libc.symbols.getrlimit(RLIMIT_NOFILE, bytes) !== 0) return { soft: 0n, hard: 0n };
  if ((buf[0] ?? 0n) < (buf[1] ?? 0n)) {
    buf[0] = buf[1] ?? 0n;
    libc.symbols.setrlimit(RLIMIT_NOFILE, bytes);
  }
  return { soft: buf[0] ?? 0n, hard: buf[1] ?? 0n };
}
