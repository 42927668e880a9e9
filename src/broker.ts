/**
 * The broker: one event loop over nonblocking sockets, one state machine per connection.
 *
 * The loop keeps a single epoll_wait outstanding on Deno's blocking pool (woken by an eventfd);
 * accept4, recvmsg, sendmsg, open and close are synchronous calls on O_NONBLOCK descriptors, so a
 * slow or silent client can never stall another one (defects D3, D4). Digests of large objects
 * are verified on Workers (D5). Every received descriptor is either stored or closed (D7), and
 * running out of descriptors is answered, not fatal (D6).
 *
 * This file is the facade that starts and stops the parts in `src/broker/`. A request goes:
 * `loop.ts` (readiness) -> `admission.ts` (accept, limits) -> `session.ts` (read, reply, linger,
 * over `connection.ts`) -> `src/protocol/wire.ts` (header codec) -> `src/core/handlers.ts`
 * (checks, in the C broker's order) -> `src/core/store.ts` -> `audit_sink.ts`. Beside it:
 * `waits.ts` (GET --wait), `mirror.ts` (the shadow), `takeover.ts` (upgrades),
 * `descriptors.ts` (descriptor work for handlers), and the seams `events.ts` (publish, drop,
 * release announcements) and `counters.ts` (numbers for metrics).
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

import { type BrokerOptions, defaultBrokerOptions } from "./core/options.ts";
import { type ClusterShare, Store, type StoredObject } from "./core/store.ts";
import { closeQuietly } from "./ffi.ts";
import { HashPool } from "./hash/verifier.ts";
import type { ShadowConfig } from "./shadow/link.ts";
import { realtimeNs } from "./sys/clock.ts";
import { raiseDescriptorLimit, setCloexec, setNonblocking, tryLstat } from "./sys/fd.ts";
import { closesSettled } from "./sys/closer.ts";
import { inProcess } from "./sys/inprocess.ts";
import { openListener } from "./sys/listener.ts";
import type { PollEvent } from "./sys/poller.ts";
import { inheritedListener } from "./sys/unix_socket.ts";
import { Admission, type Listener } from "./broker/admission.ts";
import {
  AuditOutput,
  type AuditSink,
  type Diagnostics,
  stderrDiagnostics,
} from "./broker/audit_sink.ts";
import { type Conn, State } from "./broker/connection.ts";
import { BrokerCounters } from "./broker/counters.ts";
import { ObjectDescriptors } from "./broker/descriptors.ts";
import { ObjectEvents } from "./broker/events.ts";
import { EventLoop, LISTEN_TOKEN, type LoopDriver, SHADOW_TOKEN } from "./broker/loop.ts";
import { ShadowMirror } from "./broker/mirror.ts";
import { type RunState, Sessions } from "./broker/session.ts";
import { Handover, receiveTakeover } from "./broker/takeover.ts";
import { ParkedWaits } from "./broker/waits.ts";
import { Governor } from "./core/governance.ts";
import { GovernorHooks } from "./broker/governor_hooks.ts";
import { Watchers } from "./broker/watchers.ts";
import { type BrokerMetrics, type MetricsServer, serveMetrics } from "./broker/metrics.ts";
import { brokerMetrics } from "./broker/observe.ts";
import type { MetricsAddress } from "./core/options.ts";
import { FairShares } from "./broker/fair_shares.ts";
import { withJobShares } from "./core/fair_shares.ts";
import { defaultAuditBurst } from "./core/audit_budget.ts";
import { effectiveUid } from "./sys/spawn.ts";
// Only the type: the bridge and the NATS client are imported when the broker runs with --cluster.
import type { ClusterBridge } from "./broker/cluster_bridge.ts";

export type { AuditSink } from "./broker/audit_sink.ts";

/** How long requests in flight may take to finish once the broker stops. */
const GRACE_MS = 2000;

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
  /**
   * Where operator diagnostics go that are not audit records (the audit output broke, the shadow
   * had to be started, an internal error); one line each. Default: a line on stderr.
   */
  readonly diagnostics?: (message: string) => void;
}

/** What the private constructor is given. */
interface BrokerInit {
  readonly options: BrokerOptions;
  readonly listener: Listener;
  readonly start: BrokerStartOptions;
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
  readonly #run: RunState = { stopping: false };
  readonly #store: Store;
  readonly #loop: EventLoop;
  readonly #audit: AuditOutput;
  readonly #diagnostics: Diagnostics;
  readonly #hash: HashPool;
  readonly #events = new ObjectEvents();
  readonly #counters = new BrokerCounters();
  readonly #descriptors: ObjectDescriptors;
  readonly #waits = new ParkedWaits<Conn>();
  readonly #sessions: Sessions;
  readonly #admission: Admission;
  readonly #mirror: ShadowMirror;
  readonly #handover: Handover;
  readonly #governor: Governor;
  readonly #governorHooks: GovernorHooks;
  readonly #watchers: Watchers;
  readonly #metrics: BrokerMetrics | null;
  #metricsServer: MetricsServer | null = null;
  #cluster: ClusterBridge | null = null;
  #graceDeadline = 0;
  #stopped = false;
  #failure: Error | null = null;
  #resolveClosed: () => void = () => {};
  /** Resolves once the broker has stopped and released everything. */
  readonly closed: Promise<void>;

  private constructor({ options, listener, start }: BrokerInit) {
    this.#options = options;
    const run = this.#run;
    const store = this.#store = new Store(options);
    const events = this.#events;
    const counters = this.#counters;
    const diagnostics = this.#diagnostics = start.diagnostics ?? stderrDiagnostics;
    const sink = start.audit === undefined ? 1 : start.audit;
    const audit = this.#audit = new AuditOutput(sink, {
      withPeer: options.auditPeer,
      counters,
      report: diagnostics,
      clock: realtimeNs,
      // Per-uid audit budget (src/core/audit_budget.ts), exempt as the fair shares are; the
      // time is the loop's one reading per turn.
      budget: {
        rate: options.auditUidRate,
        burst: options.auditUidBurst ?? defaultAuditBurst(options.auditUidRate),
        exempt: [0, effectiveUid()],
      },
      now: () => this.#loop.now,
    });
    const inlineHashLimit = start.inlineHashLimit ?? 1 << 20;
    const hash = this.#hash = new HashPool(start.hashWorkers ?? 1, inlineHashLimit);
    const loop = this.#loop = new EventLoop(start.blockingWait ?? false);
    const poller = loop.poller;
    const waits = this.#waits;
    const descriptors = this.#descriptors = new ObjectDescriptors(options.readOnlyFds, events);
    // Jobs the policy binds hold at most a share of the store (src/core/fair_shares.ts).
    const governor = this.#governor = new Governor({
      ...options,
      quotas: withJobShares(options.quotas, options.policy.jobs.keys(), options),
    }, store);
    const watchers = this.#watchers = new Watchers({
      events,
      clock: realtimeNs,
      lost: (n) => (counters.watchLost += n),
    });
    const mirror = this.#mirror = new ShadowMirror({
      store,
      poller,
      hash,
      audit,
      events,
      run,
      diagnostics,
      governor,
      ...(options.cluster === null ? {} : { share: (o: StoredObject) => this.#shareOf(o) }),
    });
    const hooks = this.#governorHooks = new GovernorHooks({
      store,
      governor,
      descriptors,
      events,
      audit,
      counters,
      unmirror: (id) => mirror.removed(id),
    });
    const metrics = this.#metrics = options.metrics === null ? null : brokerMetrics({
      store,
      governor,
      counters,
      ...(options.cluster === null ? {} : { cluster: () => this.#cluster }),
    });
    // Fair shares per peer uid (src/core/fair_shares.ts); objects and bytes are counted by the
    // governor, which the PUT, DROP and release paths keep current.
    const ledger = new FairShares({
      peerLimits: options.peerLimits,
      quotas: options.quotas,
      global: options,
      exempt: [0, effectiveUid()],
      boundJobs: new Set(options.policy.jobs.keys()),
    }, governor);
    const sessions = this.#sessions = new Sessions({
      options,
      store,
      poller,
      audit,
      hash,
      waits,
      descriptors,
      events,
      run,
      mirror,
      inlineHashLimit,
      takeover: (conn) => this.#handover.request(conn),
      ledger,
      governor: { rules: governor, hooks },
      watchers,
      latency: metrics === null ? null : (s) => metrics.latency.observe(s),
      deduped: () => counters.dedupHits++,
      report: diagnostics,
    }, realtimeNs);
    this.#admission = new Admission(listener, {
      options,
      poller,
      sessions,
      waits,
      audit,
      counters,
      run,
      ledger,
      // Fair shares and uid quotas count by uid: every connection's credentials are looked up.
      needPeer: true,
    });
    this.#handover = new Handover({
      store,
      audit,
      sessions,
      listenFd: listener.fd,
      beginStop: () => this.#beginStop(true),
      stopping: () => run.stopping,
      releaseShadow: () => this.#mirror.release(),
      ...(options.cluster === null ? {} : {
        share: (o: StoredObject) => this.#shareOf(o),
        handedOver: () => this.#cluster?.handedOver(),
      }),
    });
    counters.attach({
      connections: () => sessions.size,
      parkedWaits: () => waits.count,
      hashQueue: () => hash.inFlight,
      watchers: () => watchers.count,
    });
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
    // Nothing runs before the caller has its promise: failures arrive as rejections.
    await Promise.resolve();
    const options: BrokerOptions = { ...defaultBrokerOptions() };
    for (const [k, v] of Object.entries(start)) {
      if (v !== undefined && k in options && k !== "shadow") {
        (options as unknown as Record<string, unknown>)[k] = v;
      }
    }
    if (start.raiseFdLimit ?? true) raiseDescriptorLimit();
    let listener: Listener;
    if (start.listenFd !== undefined) {
      const path = inheritedListener(start.listenFd);
      if (path !== "") options.socket = path;
      setNonblocking(start.listenFd, true);
      setCloexec(start.listenFd, true);
      // A socket taken over from an old broker is this broker's to unlink at the end; one
      // passed by systemd stays systemd's.
      const st = start.takeoverFd === undefined ? 0 : tryLstat(options.socket);
      listener = {
        fd: start.listenFd,
        path: options.socket,
        ino: typeof st === "number" ? 0n : st.ino,
      };
    } else {
      const { fd, ino } = openListener(options.socket, options.socketMode, options.listenBacklog);
      listener = { fd, path: options.socket, ino };
    }
    const broker = new Broker({ options, listener, start });
    inProcess.brokers++;
    try {
      if (options.cluster !== null) await broker.#openCluster(options.cluster);
      // Metrics are served before the listening line, so whoever waits for it can scrape.
      const metrics = broker.#metrics;
      if (options.metrics !== null && metrics !== null) {
        broker.#metricsServer = await serveMetrics(options.metrics, () => metrics.render());
      }
      if (start.takeoverFd !== undefined) {
        await receiveTakeover(start.takeoverFd, start.shadow, {
          store: broker.#store,
          audit: broker.#audit,
          events: broker.#events,
          mirror: broker.#mirror,
          admit: (fd) => broker.#admission.admit(fd),
          governor: broker.#governor,
        });
      } else {
        // With a shadow, the line waits until the shadow accepted this broker: a shadow that
        // serves another broker refuses it, and then it never listened.
        const listening = (): void =>
          broker.#audit.line(`memfdbus broker listening on ${options.socket}`);
        if (start.shadow === undefined) listening();
        else await broker.#mirror.attach(start.shadow, true, listening);
      }
      // Objects taken over or recovered go on where they were: queued uploads are queued again.
      broker.#cluster?.recovered();
    } catch (e) {
      broker.#beginStop();
      broker.#finishStop();
      throw e;
    }
    broker.#audit.flush();
    void broker.#loop.run(broker.#driver());
    return broker;
  }

  /**
   * The internal error that stopped the broker, or null (running, or stopped by
   * {@link Broker.close}). A supervisor should treat a non-null value as a failure: the
   * `memfdbus broker` command then exits with status 1.
   */
  get failure(): Error | null {
    return this.#failure;
  }

  /** An object's cluster state, handed over and mirrored with it (with `--cluster`). */
  #shareOf(o: StoredObject): ClusterShare | undefined {
    return this.#cluster === null ? o.cluster : this.#cluster.shareOf(o);
  }

  async #openCluster(cluster: NonNullable<BrokerOptions["cluster"]>): Promise<void> {
    const { ClusterBridge } = await import("./broker/cluster_bridge.ts");
    const bridge = await ClusterBridge.open(cluster, {
      store: this.#store,
      events: this.#events,
      descriptors: this.#descriptors,
      audit: this.#audit,
      diagnostics: this.#diagnostics,
      wake: (name) => this.#sessions.wake(name),
      governor: this.#governor,
      retire: (list, causeId) => this.#governorHooks.retire(list, causeId),
      mirrorAdd: (id) => this.#mirror.added(id),
      mirrorRemove: (id) => this.#mirror.removed(id),
    });
    this.#cluster = bridge;
    this.#sessions.attachCluster(bridge);
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

  /** Connections currently open (watchers included). */
  get connectionCount(): number {
    return this.#sessions.size;
  }

  /** Watch streams currently open. */
  get watcherCount(): number {
    return this.#watchers.count;
  }

  /**
   * Where `/metrics` is served (with the real port when port 0 was asked for), or null without
   * `metrics`.
   */
  get metricsAddress(): MetricsAddress | null {
    return this.#metricsServer?.address ?? null;
  }

  /** The Prometheus text a scrape of `/metrics` would return now, or null without `metrics`. */
  metricsText(): string | null {
    return this.#metrics?.render() ?? null;
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

  /**
   * Hand this broker's listening socket and objects to a new broker process started with
   * `command` (it finds both through MEMFDBUS_TAKEOVER), for an upgrade that loses nothing:
   * accepting stops (new clients wait in the listen backlog), requests in flight finish, the
   * new broker takes the state and starts serving, and this broker closes. Resolves true once
   * handed over; false (and this broker serves on) when the new broker did not take over.
   */
  handover(command: readonly string[]): Promise<boolean> {
    return this.#handover.spawn(command);
  }

  /** What the event loop calls: events routed by token, timers, and the stop check. */
  #driver(): LoopDriver {
    const sessions = this.#sessions;
    const admission = this.#admission;
    const mirror = this.#mirror;
    const run = this.#run;
    return {
      event: (ev: PollEvent): void => {
        if (ev.token === LISTEN_TOKEN) admission.acceptReady();
        else if (ev.token === SHADOW_TOKEN) mirror.event();
        else {
          try {
            sessions.event(ev);
          } catch (e) {
            // A bug in one request's handling fails that request, not the broker.
            sessions.fault(ev.token, e);
          }
        }
      },
      sweep: (now: number): void => {
        // Summaries of records dropped over a uid's audit budget, for uids that went quiet.
        this.#audit.sweep(now);
        // Audit lines held for a stalled output get another chance at every sweep.
        this.#audit.flush();
        mirror.sweep(now);
        admission.sweep();
        sessions.sweep(now);
      },
      beforeSleep: (): void => this.#audit.flush(),
      finished: (): boolean => run.stopping && this.#finishStopIfDone(),
      quiet: (): boolean =>
        sessions.size === 0 && !admission.blocked && !run.stopping && !this.#audit.waiting &&
        !this.#audit.owing,
      offLoopWork: (): boolean => this.#hash.inFlight !== 0 || this.#cluster?.busy === true,
      crashed: (e: unknown): void => {
        // A bug, not a client's doing: report it and stop cleanly rather than hang.
        this.#diagnostics(`memfdbus broker: internal error: ${(e as Error).stack ?? e}`);
        this.#failure = e instanceof Error ? e : new Error(String(e));
        run.stopping = true;
        this.#finishStop();
      },
    };
  }

  // ---- stopping ----------------------------------------------------------------------------

  #beginStop(handover = false): void {
    if (this.#run.stopping) return;
    this.#run.stopping = true;
    this.#graceDeadline = performance.now() + GRACE_MS;
    const admission = this.#admission;
    admission.pause();
    if (!handover) {
      admission.closeListener();
      admission.unlinkSocket();
    }
    for (const conn of this.#sessions.all()) {
      // Idle connections are closed on a stop, but handed to the new broker on a handover.
      if (conn.idle) {
        if (!handover) this.#sessions.close(conn);
      } else if (conn.state === State.Wait) {
        // A waiting client asks again after a handover: answer as a broker that does not wait.
        if (handover) conn.waited = false;
        this.#sessions.expire(conn);
      }
    }
    this.#loop.wake();
  }

  #finishStopIfDone(): boolean {
    const busy = this.#sessions.all().some((c) =>
      c.state !== State.Linger && c.state !== State.Handover && c.state !== State.Watch &&
      !c.idle
    );
    if (busy && performance.now() < this.#graceDeadline) return false;
    const handed = this.#handover.perform();
    if (handed === "failed") {
      // The new broker did not take over: carry on serving.
      this.#run.stopping = false;
      this.#admission.resume();
      return false;
    }
    this.#finishStop();
    return true;
  }

  #finishStop(): void {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#admission.closeListener();
    // Watchers get what their sockets take now; after a takeover they reconnect.
    this.#watchers.flushAll();
    for (const conn of this.#sessions.all()) this.#sessions.close(conn);
    const closedFds = new Set<number>();
    for (const obj of this.#store.values()) {
      // Objects that share a memfd share its descriptor: close it once.
      if (closedFds.has(obj.fd)) continue;
      closedFds.add(obj.fd);
      closeQuietly(obj.fd);
      this.#events.emit("release", obj);
    }
    this.#mirror.close();
    this.#hash.close();
    this.#admission.close();
    this.#descriptors.close();
    // The last records (the stop, a takeover) must reach a slow reader too.
    this.#audit.drain(2000);
    this.#loop.close();
    inProcess.brokers--;
    const server = this.#metricsServer;
    this.#metricsServer = null;
    const cluster = this.#cluster;
    this.#cluster = null;
    // Descriptors being closed off the loop are released before `closed` resolves.
    void Promise.all([closesSettled(), server?.close(), cluster?.close()])
      .finally(() => this.#resolveClosed());
  }
}
