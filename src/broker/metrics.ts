/**
 * Broker metrics: a tiny registry (counters, gauges read at scrape time, one latency histogram),
 * its Prometheus text rendering (exposition format 0.0.4, which Prometheus and OpenMetrics
 * scrapers both read), and a small bounded HTTP server that answers `GET /metrics` on a TCP
 * address or a Unix socket path.
 *
 * The server never blocks the broker: a scrape only reads numbers the broker already keeps and
 * formats a few kilobytes of text; it takes no lock and waits for nothing.
 *
 * @module
 */

import { checkSocketPath } from "../sys/path_safety.ts";
import type { MetricsAddress } from "../core/options.ts";

/** Label names to values. */
export type Labels = Readonly<Record<string, string>>;

/** Escape a label value: backslash, double quote and newline. */
export function escapeLabel(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

function labelText(labels: Labels | undefined, extra?: string): string {
  const parts = labels === undefined
    ? []
    : Object.entries(labels).map(([k, v]) => `${k}="${escapeLabel(v)}"`);
  if (extra !== undefined) parts.push(extra);
  return parts.length === 0 ? "" : `{${parts.join(",")}}`;
}

function keyOf(labels: Labels | undefined): string {
  return labels === undefined ? "" : JSON.stringify(Object.entries(labels));
}

function num(v: number): string {
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  return Number.isNaN(v) ? "NaN" : String(v);
}

interface Family {
  readonly name: string;
  readonly help: string;
  readonly type: "counter" | "gauge" | "histogram";
  lines(): string[];
}

/** A monotonically increasing count, optionally per label set. */
export class Counter implements Family {
  /** The metric name. */
  readonly name: string;
  /** Its help text. */
  readonly help: string;
  /** Always `counter`. */
  readonly type = "counter" as const;
  readonly #values = new Map<string, { labels: Labels | undefined; value: number }>();

  /**
   * @param name metric name, ending in `_total`
   * @param help one line of help
   */
  constructor(name: string, help: string) {
    this.name = name;
    this.help = help;
  }

  /** Add `n` (default 1) to the count of `labels`. */
  inc(labels?: Labels, n = 1): void {
    const key = keyOf(labels);
    const entry = this.#values.get(key);
    if (entry === undefined) this.#values.set(key, { labels, value: n });
    else entry.value += n;
  }

  /** The count of `labels` (0 if never counted). */
  get(labels?: Labels): number {
    return this.#values.get(keyOf(labels))?.value ?? 0;
  }

  /** The sample lines. */
  lines(): string[] {
    return [...this.#values.values()].map((e) =>
      `${this.name}${labelText(e.labels)} ${num(e.value)}`
    );
  }
}

/** A value read when scraped: one number, or numbers per label set. */
export class Gauge implements Family {
  /** The metric name. */
  readonly name: string;
  /** Its help text. */
  readonly help: string;
  /** Always `gauge`. */
  readonly type = "gauge" as const;
  readonly #read: () => number | Iterable<readonly [Labels, number]>;

  /**
   * @param name metric name
   * @param help one line of help
   * @param read returns the current value (or values per label set); called on every scrape
   */
  constructor(
    name: string,
    help: string,
    read: () => number | Iterable<readonly [Labels, number]>,
  ) {
    this.name = name;
    this.help = help;
    this.#read = read;
  }

  /** The sample lines. */
  lines(): string[] {
    const v = this.#read();
    if (typeof v === "number") return [`${this.name} ${num(v)}`];
    return [...v].map(([labels, value]) => `${this.name}${labelText(labels)} ${num(value)}`);
  }
}

/** Latency bucket bounds in seconds: 25 µs to 10 s. */
export const LATENCY_BUCKETS: readonly number[] = [
  0.000025,
  0.00005,
  0.0001,
  0.00025,
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  10,
];

interface Series {
  readonly labels: Labels | undefined;
  readonly counts: number[];
  sum: number;
  count: number;
}

/** A histogram with fixed buckets, optionally per label set. */
export class Histogram implements Family {
  /** The metric name. */
  readonly name: string;
  /** Its help text. */
  readonly help: string;
  /** Always `histogram`. */
  readonly type = "histogram" as const;
  /** Upper bounds of the buckets (the +Inf bucket is implicit). */
  readonly buckets: readonly number[];
  readonly #series = new Map<string, Series>();

  /**
   * @param name metric name (the samples are `_bucket`, `_sum`, `_count`)
   * @param help one line of help
   * @param buckets ascending upper bounds
   */
  constructor(name: string, help: string, buckets: readonly number[] = LATENCY_BUCKETS) {
    this.name = name;
    this.help = help;
    this.buckets = buckets;
  }

  /** Record one observation. */
  observe(value: number, labels?: Labels): void {
    const key = keyOf(labels);
    let s = this.#series.get(key);
    if (s === undefined) {
      s = { labels, counts: new Array(this.buckets.length).fill(0), sum: 0, count: 0 };
      this.#series.set(key, s);
    }
    // Counts per bucket (not cumulative); rendering accumulates.
    let i = 0;
    while (i < this.buckets.length && value > (this.buckets[i] ?? Infinity)) i++;
    if (i < s.counts.length) s.counts[i] = (s.counts[i] ?? 0) + 1;
    s.sum += value;
    s.count++;
  }

  /** Observations recorded for `labels`. */
  count(labels?: Labels): number {
    return this.#series.get(keyOf(labels))?.count ?? 0;
  }

  /** The sample lines. */
  lines(): string[] {
    const out: string[] = [];
    for (const s of this.#series.values()) {
      let acc = 0;
      this.buckets.forEach((le, i) => {
        acc += s.counts[i] ?? 0;
        out.push(`${this.name}_bucket${labelText(s.labels, `le="${num(le)}"`)} ${acc}`);
      });
      out.push(`${this.name}_bucket${labelText(s.labels, 'le="+Inf"')} ${s.count}`);
      out.push(`${this.name}_sum${labelText(s.labels)} ${num(s.sum)}`);
      out.push(`${this.name}_count${labelText(s.labels)} ${s.count}`);
    }
    return out;
  }
}

/** A set of metric families rendered together. */
export class MetricsRegistry {
  readonly #families: Family[] = [];

  /** Register and return a counter. */
  counter(name: string, help: string): Counter {
    return this.#add(new Counter(name, help));
  }

  /** Register and return a gauge read on every scrape. */
  gauge(
    name: string,
    help: string,
    read: () => number | Iterable<readonly [Labels, number]>,
  ): Gauge {
    return this.#add(new Gauge(name, help, read));
  }

  /** Register and return a histogram. */
  histogram(name: string, help: string, buckets?: readonly number[]): Histogram {
    return this.#add(new Histogram(name, help, buckets));
  }

  #add<F extends Family>(f: F): F {
    if (this.#families.some((x) => x.name === f.name)) {
      throw new RangeError(`Metric ${f.name} is already registered`);
    }
    this.#families.push(f);
    return f;
  }

  /** The Prometheus text exposition (format 0.0.4) of every family. */
  render(): string {
    let out = "";
    for (const f of this.#families) {
      out += `# HELP ${f.name} ${f.help.replace(/\\/g, "\\\\").replace(/\n/g, "\\n")}\n`;
      out += `# TYPE ${f.name} ${f.type}\n`;
      for (const line of f.lines()) out += line + "\n";
    }
    return out;
  }
}

/** What the broker's gauges read; every function is called on each scrape. */
export interface BrokerGauges {
  /** Objects stored. */
  objects(): number;
  /** Sum of stored object sizes. */
  storedBytes(): number;
  /** Bytes of memory the stored objects occupy (shared contents once). */
  uniqueBytes(): number;
  /** Open client connections. */
  connections(): number;
  /** GET/STAT --wait requests parked. */
  parkedWaits(): number;
  /** Open watch streams. */
  watchers(): number;
  /** Digests waiting for a hash worker. */
  hashQueueDepth(): number;
  /** Metadata bytes charged to stored objects (names, job ids, per-object overhead). */
  metadataBytes?(): number;
  /** --max-metadata-bytes, or null for no limit. */
  maxMetadataBytes?(): number | null;
  /** Objects and bytes held per job (job ids as UTF-8 text). */
  jobs(): Iterable<readonly [string, { readonly objects: number; readonly bytes: number }]>;
}

/**
 * The broker's metric families. The broker calls {@link BrokerMetrics.request} once per finished
 * request, {@link BrokerMetrics.released} once per retention release or eviction, and the other
 * counters as their events happen; gauges are read from {@link BrokerGauges} at scrape time.
 */
export class BrokerMetrics {
  /** The registry, for {@link MetricsRegistry.render}. */
  readonly registry: MetricsRegistry = new MetricsRegistry();
  /** Requests by op and result (`memfdbus_requests_total`). */
  readonly requests: Counter;
  /**
   * Request latency of every operation (`memfdbus_request_duration_seconds`; one series, so
   * requests by op live in the counter and the histogram stays small).
   */
  readonly latency: Histogram;
  /** Objects released by the broker by reason (`memfdbus_releases_total`). */
  readonly releases: Counter;
  /** Watch events a slow watcher did not receive one by one (`memfdbus_watch_events_lost_total`). */
  readonly watchLost: Counter;
  /** Audit lines that could not be written (`memfdbus_audit_lines_dropped_total`). */
  readonly auditDropped: Counter;
  /**
   * Audit records not written because their uid exceeded its audit budget
   * (`memfdbus_audit_records_over_share_total`, see `src/core/audit_budget.ts`).
   */
  readonly auditUidDropped: Counter;
  /** PUTs stored on the memfd of identical content (`memfdbus_dedup_hits_total`). */
  readonly dedupHits: Counter;

  /**
   * @param gauges where the gauges read their values
   */
  constructor(gauges: BrokerGauges) {
    const r = this.registry;
    this.requests = r.counter(
      "memfdbus_requests_total",
      "Requests handled, by operation and result.",
    );
    this.latency = r.histogram(
      "memfdbus_request_duration_seconds",
      "Time from a request's header to its reply.",
    );
    r.gauge("memfdbus_objects", "Objects stored.", () => gauges.objects());
    r.gauge(
      "memfdbus_stored_bytes",
      "Sum of the sizes of stored objects.",
      () => gauges.storedBytes(),
    );
    r.gauge(
      "memfdbus_unique_bytes",
      "Bytes of memory stored objects occupy, identical contents counted once.",
      () => gauges.uniqueBytes(),
    );
    const metadata = gauges.metadataBytes;
    if (metadata !== undefined) {
      r.gauge(
        "memfdbus_metadata_bytes",
        "Metadata bytes charged to stored objects: names, job ids and a fixed per-object overhead.",
        () => metadata(),
      );
    }
    const maxMetadata = gauges.maxMetadataBytes;
    if (maxMetadata !== undefined) {
      r.gauge(
        "memfdbus_metadata_limit_bytes",
        "The broker-wide metadata limit (--max-metadata-bytes; +Inf: none).",
        () => maxMetadata() ?? Infinity,
      );
    }
    r.gauge("memfdbus_connections", "Open client connections.", () => gauges.connections());
    r.gauge(
      "memfdbus_parked_waits",
      "Requests waiting for a name to be published.",
      () => gauges.parkedWaits(),
    );
    r.gauge("memfdbus_watchers", "Open watch streams.", () => gauges.watchers());
    r.gauge(
      "memfdbus_hash_queue_depth",
      "Digests waiting for a hash worker.",
      () => gauges.hashQueueDepth(),
    );
    r.gauge(
      "memfdbus_job_objects",
      "Objects held per job.",
      () => [...gauges.jobs()].map(([job, u]) => [{ job }, u.objects] as const),
    );
    r.gauge(
      "memfdbus_job_bytes",
      "Bytes held per job, each content once.",
      () => [...gauges.jobs()].map(([job, u]) => [{ job }, u.bytes] as const),
    );
    this.releases = r.counter(
      "memfdbus_releases_total",
      "Objects the broker released on its own, by reason (retention or the limit that evicted).",
    );
    this.dedupHits = r.counter(
      "memfdbus_dedup_hits_total",
      "PUTs stored on the memfd of an object with the same verified digest.",
    );
    this.watchLost = r.counter(
      "memfdbus_watch_events_lost_total",
      "Watch events coalesced or dropped because a watcher read too slowly.",
    );
    this.auditDropped = r.counter(
      "memfdbus_audit_lines_dropped_total",
      "Audit lines not written because the audit output failed.",
    );
    this.auditUidDropped = r.counter(
      "memfdbus_audit_records_over_share_total",
      "Audit records not written because their peer uid exceeded its audit share (--audit-uid-rate).",
    );
  }

  /** Count a finished request and its latency in seconds. */
  request(op: string, result: string, seconds: number): void {
    this.requests.inc({ op, result });
    this.latency.observe(seconds);
  }

  /** Count an object the broker released (retention) or evicted. */
  released(reason: string): void {
    this.releases.inc({ reason });
  }

  /** The text a scrape returns. */
  render(): string {
    return this.registry.render();
  }
}

/** The content type of the rendered text. */
export const METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/** A running metrics server. */
export interface MetricsServer extends AsyncDisposable {
  /** Where it listens (the real port when 0 was asked for). */
  readonly address: MetricsAddress;
  /** Stop serving; resolves once the listener is closed. */
  close(): Promise<void>;
}

/**
 * Run `serve`; a failure names the address: `metrics /run/m.sock: Permission denied`, or
 * `metrics 127.0.0.1:80: Address already in use` (the same error class, the cause kept).
 */
function listening<T>(address: MetricsAddress, serve: () => T): T {
  try {
    return serve();
  } catch (e) {
    if (!(e instanceof Error)) throw e;
    const where = address.kind === "unix" ? address.path : `${address.hostname}:${address.port}`;
    const reason = e.message.replace(/ \(os error \d+\)$/, "");
    const named = new (e.constructor as ErrorConstructor)(`metrics ${where}: ${reason}`, {
      cause: e,
    });
    throw named;
  }
}

/** Most metrics connections served at once; one more is closed as soon as it is accepted. */
export const METRICS_MAX_CONNECTIONS = 16;
/** Longest request head (request line and headers) a scrape may send. */
export const METRICS_MAX_HEAD = 8192;
/** A scrape that has not sent its request and taken its reply within this is closed. */
export const METRICS_DEADLINE_MS = 5000;
/** Largest request body read (and discarded) before answering, so the reply is not reset. */
const METRICS_MAX_BODY = 65536;
const REASON: Record<number, string> = {
  200: "OK",
  400: "Bad Request",
  404: "Not Found",
  405: "Method Not Allowed",
};

function closeConn(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // already closed (by the deadline or the server's close)
  }
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let off = 0;
  while (off < bytes.length) off += await conn.write(bytes.subarray(off));
}

/**
 * Read one request head, answer it and return (the caller closes). Anything malformed, over
 * {@link METRICS_MAX_HEAD} or a peer that goes away ends the connection without more ado.
 */
async function answerScrape(conn: Deno.Conn, render: () => string): Promise<void> {
  const buf = new Uint8Array(METRICS_MAX_HEAD + 4);
  let len = 0;
  let end = -1;
  const text = new TextDecoder("latin1");
  while (end < 0) {
    if (len >= METRICS_MAX_HEAD) return reply(conn, 400, "bad request\n", false);
    const n = await conn.read(buf.subarray(len, METRICS_MAX_HEAD));
    if (n === null) return;
    len += n;
    end = text.decode(buf.subarray(0, len)).indexOf("\r\n\r\n");
  }
  const head = text.decode(buf.subarray(0, end));
  const [method = "", target = ""] = (head.split("\r\n")[0] ?? "").split(" ");
  const declared = /\r\ncontent-length:[ \t]*(\d+)/i.exec(head);
  let left = declared === null ? 0 : Number(declared[1]) - (len - end - 4);
  if (left > METRICS_MAX_BODY) return reply(conn, 400, "bad request\n", false);
  while (left > 0) {
    const n = await conn.read(buf.subarray(0, Math.min(left, buf.length)));
    if (n === null) return;
    left -= n;
  }
  let path = "";
  try {
    path = new URL(target, "http://localhost").pathname;
  } catch {
    return reply(conn, 400, "bad request\n", false);
  }
  if (path !== "/metrics") return reply(conn, 404, "not found\n", false);
  if (method !== "GET" && method !== "HEAD") {
    return reply(conn, 405, "method not allowed\n", false, "allow: GET, HEAD\r\n");
  }
  return reply(conn, 200, method === "HEAD" ? "" : render(), true);
}

async function reply(
  conn: Deno.Conn,
  status: number,
  body: string,
  metrics: boolean,
  extra = "",
): Promise<void> {
  const bytes = new TextEncoder().encode(body);
  const type = metrics ? METRICS_CONTENT_TYPE : "text/plain;charset=UTF-8";
  await writeAll(
    conn,
    new TextEncoder().encode(
      `HTTP/1.1 ${status} ${REASON[status]}\r\ncontent-type: ${type}\r\n${extra}` +
        `content-length: ${bytes.length}\r\nconnection: close\r\n\r\n`,
    ),
  );
  if (bytes.length > 0) await writeAll(conn, bytes);
}

/**
 * Serve `render()` at `GET /metrics` (404 for other paths, 405 for other methods) on a TCP
 * address or a Unix socket path. Prints nothing (the broker's stdout is its audit log). A stale
 * socket file at the path is replaced; any other file is an error.
 *
 * Any local user can connect, so the server is bounded: at most
 * {@link METRICS_MAX_CONNECTIONS} connections (more are closed at once), a request head of at
 * most {@link METRICS_MAX_HEAD} bytes, {@link METRICS_DEADLINE_MS} per scrape, one request per
 * connection; running out of descriptors while accepting waits and retries, never stops the
 * broker (`Deno.serve` let an unhandled `EMFILE` end the process).
 *
 * @param address where to listen
 * @param render produces the text; it must not block
 */
export async function serveMetrics(
  address: MetricsAddress,
  render: () => string,
): Promise<MetricsServer> {
  let listener: Deno.Listener;
  let bound: MetricsAddress;
  if (address.kind === "unix") {
    // As for the broker's own socket: in a directory others can write, they could take the
    // name first or replace the file.
    checkSocketPath(address.path);
    try {
      if (Deno.lstatSync(address.path).isSocket) await Deno.remove(address.path);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    listener = listening(address, () => Deno.listen({ transport: "unix", path: address.path }));
    bound = address;
  } else {
    const tcp = listening(
      address,
      () => Deno.listen({ hostname: address.hostname, port: address.port }),
    );
    listener = tcp;
    bound = { kind: "tcp", hostname: address.hostname, port: tcp.addr.port };
  }
  let stopping = false;
  let retry: { timer: ReturnType<typeof setTimeout>; wake: () => void } | null = null;
  const open = new Map<Deno.Conn, Promise<void>>();
  const accepting = (async () => {
    while (!stopping) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch {
        if (stopping) return;
        // EMFILE, ENFILE, ECONNABORTED: the connection waits in the backlog; try again shortly.
        await new Promise<void>((wake) => {
          retry = { timer: setTimeout(wake, 100), wake };
        });
        retry = null;
        continue;
      }
      if (open.size >= METRICS_MAX_CONNECTIONS) {
        closeConn(conn);
        continue;
      }
      const timer = setTimeout(() => closeConn(conn), METRICS_DEADLINE_MS);
      const served = answerScrape(conn, render).catch(() => {}).finally(() => {
        clearTimeout(timer);
        closeConn(conn);
        open.delete(conn);
      });
      open.set(conn, served);
    }
  })();
  let closed: Promise<void> | null = null;
  const close = (): Promise<void> => {
    closed ??= (async () => {
      stopping = true;
      const r = retry as { timer: ReturnType<typeof setTimeout>; wake: () => void } | null;
      if (r !== null) {
        clearTimeout(r.timer);
        r.wake();
      }
      try {
        listener.close();
      } catch {
        // already closed
      }
      await accepting;
      const pending = [...open.values()];
      for (const conn of open.keys()) closeConn(conn);
      await Promise.all(pending);
      if (address.kind === "unix") await Deno.remove(address.path).catch(() => {});
    })();
    return closed;
  };
  return { address: bound, close, [Symbol.asyncDispose]: close };
}
