/**
 * The tier's link to the engine: the NATS connection and both buckets, connected (and
 * reconnected) by itself in the background, and the helpers every engine call goes through —
 * a deadline per request, retries for interactive calls, sleeps that end when the tier closes,
 * and tracking of background work so `close()` can wait for it. Loaded only with `--cluster`.
 *
 * @module
 */

import {
  connect,
  credsAuthenticator,
  type NatsConnection,
  nkeyAuthenticator,
  type NodeConnectionOptions,
} from "@nats-io/transport-node";
import { jetstream, StorageType } from "@nats-io/jetstream";
import { type KV, Kvm } from "@nats-io/kv";
import { type ObjectStore, Objm } from "@nats-io/obj";
import type { ClusterOptions } from "./options.ts";
import type { ClusterEntry, ClusterVersion } from "./model.ts";
import { KV_HISTORY } from "./model.ts";
import {
  ClusterChangedError,
  ClusterClosedError,
  ClusterCorruptError,
  ClusterDataError,
  type ClusterQueueFullError,
  ClusterUnavailableError,
} from "./errors.ts";

/** Attempts of one interactive call before it gives up. */
export const ATTEMPTS = 3;

/** Callbacks through which the tier tells the broker what happened in the background. */
export interface ClusterHooks {
  /** The upload queue refused an object (the broker audits it and counts it in a metric). */
  readonly onQueueOverflow?: (entry: ClusterEntry, error: ClusterQueueFullError) => void;
  /** A queued object was committed (uploaded or known, and named in the KV bucket). */
  readonly onCommitted?: (version: ClusterVersion, uploaded: boolean) => void;
  /** A background step failed and will be retried (connect, upload, watch). */
  readonly onRetry?: (what: string, error: unknown) => void;
  /** The connection to the engine came up or went down. */
  readonly onConnection?: (connected: boolean) => void;
}

/** Both buckets, while connected. */
export interface Buckets {
  /** The names (`<bucket>-names`). */
  readonly kv: KV;
  /** The blobs (`<bucket>-blobs`). */
  readonly os: ObjectStore;
}

/** True for errors that say the engine could not be reached or answered too late. */
export function transient(e: unknown): boolean {
  return !(e instanceof ClusterCorruptError || e instanceof ClusterDataError ||
    e instanceof ClusterClosedError || e instanceof ClusterChangedError);
}

/** The connection to the engine and the helpers every engine call uses. */
export class EngineLink {
  /** The cluster options. */
  readonly options: ClusterOptions;
  /** The broker's callbacks. */
  readonly hooks: ClusterHooks;
  #nc: NatsConnection | null = null;
  #buckets: Buckets | null = null;
  #connected = false;
  #closed = false;
  readonly #abort = new AbortController();
  #waiters: (() => void)[] = [];
  readonly #background = new Set<Promise<unknown>>();
  readonly #onUp: () => void;

  /**
   * @param options the cluster options
   * @param hooks the broker's callbacks
   * @param onUp called each time the connection comes (back) up
   */
  constructor(options: ClusterOptions, hooks: ClusterHooks, onUp: () => void) {
    this.options = options;
    this.hooks = hooks;
    this.#onUp = onUp;
  }

  /** Connect in the background; resolves after the first attempt or one request deadline. */
  async start(): Promise<void> {
    const first = this.track(this.#connectLoop());
    await Promise.race([first, this.sleep(this.options.timeoutMs)]);
  }

  /** True while connected with both buckets bound. */
  get connected(): boolean {
    return this.#connected && !this.#closed;
  }

  /** True once {@link EngineLink.shut} ran. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Mark closed: sleeps end, waiters reject. The connection closes in {@link EngineLink.close}. */
  shut(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#abort.abort();
    this.#wake();
  }

  /** Shut, close the connection and wait for every tracked background task. */
  async close(): Promise<void> {
    this.shut();
    const nc = this.#nc;
    this.#nc = null;
    this.#buckets = null;
    if (nc !== null) await nc.close().catch(() => {});
    await Promise.allSettled([...this.#background]);
  }

  /** Resolves once connected; rejects with ClusterClosedError once closed. */
  waitConnected(): Promise<void> {
    if (this.#closed) return Promise.reject(new ClusterClosedError());
    if (this.#connected) return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.#waiters.push(() => (this.#closed ? reject(new ClusterClosedError()) : resolve()));
    });
  }

  /**
   * Both buckets, or ClusterUnavailableError (`WHAT: not connected`) while disconnected.
   *
   * @param what the step, for the error
   */
  bound(what: string): Buckets {
    if (this.#closed) throw new ClusterClosedError();
    const b = this.#buckets;
    if (!this.#connected || b === null) throw new ClusterUnavailableError(`${what}: not connected`);
    return b;
  }

  /**
   * Run an interactive call: at once ClusterUnavailableError while disconnected, otherwise up
   * to `attempts` tries with a deadline each.
   *
   * @param what the step, for errors
   * @param fn the call
   * @param attempts tries before giving up
   */
  async interactive<T>(
    what: string,
    fn: (b: Buckets) => Promise<T>,
    attempts = ATTEMPTS,
  ): Promise<T> {
    for (let attempt = 1;; attempt++) {
      const b = this.bound(what);
      try {
        return await this.deadline(what, fn(b));
      } catch (e) {
        if (!transient(e) || attempt >= attempts || this.#closed) throw this.wrap(what, e);
      }
    }
  }

  /** A transient error as ClusterUnavailableError (`WHAT: message`); others unchanged. */
  wrap(what: string, e: unknown): unknown {
    if (!transient(e) || e instanceof ClusterUnavailableError) return e;
    return new ClusterUnavailableError(`${what}: ${e instanceof Error ? e.message : String(e)}`, e);
  }

  /** Race `p` against a timer (cleared either way); a late rejection of `p` is ignored. */
  deadline<T>(what: string, p: Promise<T>, ms = this.options.timeoutMs): Promise<T> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new ClusterUnavailableError(`${what}: no answer in ${ms} ms`)),
        ms,
      );
    });
    p.catch(() => {});
    return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
  }

  /** Sleep `ms`, or less when the link closes meanwhile. */
  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const signal = this.#abort.signal;
      if (signal.aborted) return resolve();
      const done = (): void => {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal.addEventListener("abort", done);
    });
  }

  /** Remember a background task, so that {@link EngineLink.close} waits for it. */
  track<T>(p: Promise<T>): Promise<T> {
    const settled = p.then(() => {}, () => {});
    this.#background.add(settled);
    settled.finally(() => this.#background.delete(settled));
    return p;
  }

  async #connectLoop(): Promise<void> {
    let backoff = 100;
    while (!this.#closed) {
      try {
        await this.#connectOnce();
        return;
      } catch (e) {
        if (this.#closed) return;
        this.hooks.onRetry?.("connect", e);
        await this.sleep(backoff);
        backoff = Math.min(backoff * 2, 2000);
      }
    }
  }

  async #connectOnce(): Promise<void> {
    const o = this.options;
    const opts: NodeConnectionOptions = {
      servers: [...o.servers],
      name: `memfdbus ${o.hostId}`,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 250,
      timeout: o.timeoutMs,
      pingInterval: 10_000,
    };
    if (o.auth.kind === "token") opts.token = o.auth.token;
    if (o.auth.kind === "credentials") {
      opts.authenticator = credsAuthenticator(await Deno.readFile(o.auth.file));
    }
    if (o.auth.kind === "nkey") {
      const seed = new TextDecoder().decode(await Deno.readFile(o.auth.file)).trim();
      opts.authenticator = nkeyAuthenticator(new TextEncoder().encode(seed));
    }
    if (o.tls !== null) {
      opts.tls = {
        ...(o.tls.ca === undefined ? {} : { caFile: o.tls.ca }),
        ...(o.tls.cert === undefined ? {} : { certFile: o.tls.cert }),
        ...(o.tls.key === undefined ? {} : { keyFile: o.tls.key }),
      };
    }
    const nc = await connect(opts);
    try {
      const js = jetstream(nc, { timeout: o.timeoutMs });
      const storage = o.storage === "memory" ? StorageType.Memory : StorageType.File;
      const kv = await new Kvm(js).create(`${o.bucket}-names`, {
        history: KV_HISTORY,
        replicas: o.replicas,
        storage,
      });
      const os = await new Objm(js).create(`${o.bucket}-blobs`, {
        replicas: o.replicas,
        storage,
        ...(o.maxBytes === null ? {} : { max_bytes: o.maxBytes }),
      });
      if (o.maxBytes !== null) {
        // create() leaves an existing bucket's configuration alone: bring its limit in line.
        const jsm = await js.jetstreamManager();
        const stream = `OBJ_${o.bucket}-blobs`;
        const si = await jsm.streams.info(stream);
        if (si.config.max_bytes !== o.maxBytes) {
          await jsm.streams.update(stream, { max_bytes: o.maxBytes });
        }
      }
      if (this.#closed) throw new ClusterClosedError();
      this.#nc = nc;
      this.#buckets = { kv, os };
    } catch (e) {
      await nc.close().catch(() => {});
      throw e;
    }
    this.track(this.#statusLoop(nc));
    this.track(nc.closed());
    this.#setConnected(true);
  }

  async #statusLoop(nc: NatsConnection): Promise<void> {
    for await (const s of nc.status()) {
      if (s.type === "disconnect") this.#setConnected(false);
      else if (s.type === "reconnect") this.#setConnected(true);
    }
  }

  #setConnected(on: boolean): void {
    if (this.#connected === on) return;
    this.#connected = on;
    this.hooks.onConnection?.(on);
    if (on) {
      this.#wake();
      this.#onUp();
    }
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const w of waiters) w();
  }
}
