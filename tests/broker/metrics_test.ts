/**
 * Broker metrics: the registry's text parses with a Prometheus text-format parser from npm and
 * holds the values recorded, and the server answers real HTTP requests on TCP and on a Unix
 * socket (404 elsewhere, 405 for other methods) without printing anything.
 */
import { assertEquals, ok, throws } from "../support/assert.ts";
import parsePrometheus from "parse-prometheus-text-format";
import {
  type BrokerGauges,
  BrokerMetrics,
  escapeLabel,
  METRICS_CONTENT_TYPE,
  MetricsRegistry,
  serveMetrics,
} from "../../src/broker/metrics.ts";
import { bindUnix, sockaddrUn, unixSocket } from "../../src/sys/unix_socket.ts";
import { closeQuietly } from "../../src/ffi.ts";

interface Sample {
  value?: string;
  labels?: Record<string, string>;
  buckets?: Record<string, string>;
  count?: string;
  sum?: string;
}
interface ParsedFamily {
  name: string;
  help: string;
  type: string;
  metrics: Sample[];
}

function parse(text: string): Map<string, ParsedFamily> {
  const families = parsePrometheus(text) as ParsedFamily[];
  return new Map(families.map((f) => [f.name, f]));
}

function value(
  families: Map<string, ParsedFamily>,
  name: string,
  labels: Record<string, string> = {},
): number {
  const f = families.get(name);
  ok(f !== undefined, `no family ${name}`);
  const m = f.metrics.find((s) => JSON.stringify(s.labels ?? {}) === JSON.stringify(labels));
  ok(m !== undefined, `no ${name} sample with ${JSON.stringify(labels)}`);
  return Number(m.value);
}

function gauges(state: { objects: number }): BrokerGauges {
  return {
    objects: () => state.objects,
    storedBytes: () => 300,
    uniqueBytes: () => 200,
    connections: () => 2,
    parkedWaits: () => 1,
    watchers: () => 3,
    hashQueueDepth: () => 0,
    jobs:
      () => [["trainer", { objects: 2, bytes: 150 }], ['we"ird\\job', { objects: 1, bytes: 50 }]],
  };
}

Deno.test("the broker metrics render as Prometheus text that a real parser reads back with the recorded values", () => {
  const state = { objects: 4 };
  const m = new BrokerMetrics(gauges(state));
  m.request("put", "ok", 0.0002);
  m.request("put", "ok", 0.003);
  m.request("get", "not_found", 0.00001);
  m.released("retention");
  m.released("retention");
  m.released("broker_bytes");
  m.watchLost.inc(undefined, 7);
  m.dedupHits.inc();
  const f = parse(m.render());
  assertEquals(value(f, "memfdbus_requests_total", { op: "put", result: "ok" }), 2);
  assertEquals(value(f, "memfdbus_requests_total", { op: "get", result: "not_found" }), 1);
  assertEquals(value(f, "memfdbus_objects"), 4);
  assertEquals(value(f, "memfdbus_stored_bytes"), 300);
  assertEquals(value(f, "memfdbus_unique_bytes"), 200);
  assertEquals(value(f, "memfdbus_connections"), 2);
  assertEquals(value(f, "memfdbus_parked_waits"), 1);
  assertEquals(value(f, "memfdbus_watchers"), 3);
  assertEquals(value(f, "memfdbus_releases_total", { reason: "retention" }), 2);
  assertEquals(value(f, "memfdbus_releases_total", { reason: "broker_bytes" }), 1);
  assertEquals(value(f, "memfdbus_watch_events_lost_total"), 7);
  assertEquals(value(f, "memfdbus_dedup_hits_total"), 1);
  assertEquals(value(f, "memfdbus_job_bytes", { job: "trainer" }), 150);
  assertEquals(value(f, "memfdbus_job_objects", { job: 'we"ird\\job' }), 1);
  assertEquals(f.get("memfdbus_requests_total")?.type, "COUNTER");
  assertEquals(f.get("memfdbus_objects")?.type, "GAUGE");
  const h = f.get("memfdbus_request_duration_seconds");
  assertEquals(h?.type, "HISTOGRAM");
  const all = h?.metrics[0];
  assertEquals([
    all?.count,
    all?.buckets?.["0.000025"],
    all?.buckets?.["0.00025"],
    all?.buckets?.["0.0025"],
    all?.buckets?.["0.005"],
    all?.buckets?.["+Inf"],
  ], ["3", "1", "2", "2", "3", "3"]);
  ok(Math.abs(Number(all?.sum) - 0.00321) < 1e-12, String(all?.sum));
  // Gauges are read at scrape time.
  state.objects = 9;
  assertEquals(value(parse(m.render()), "memfdbus_objects"), 9);
  assertEquals(value(parse(m.render()), "memfdbus_hash_queue_depth"), 0);
});

Deno.test("a labelled histogram renders cumulative buckets, +Inf, sum and count per label set", () => {
  const r = new MetricsRegistry();
  const h = r.histogram("lat_seconds", "l", [0.1, 1]);
  h.observe(0.05, { op: "get" });
  h.observe(0.5, { op: "get" });
  h.observe(5, { op: "get" });
  h.observe(0.1, { op: "put" });
  assertEquals(h.count({ op: "get" }), 3);
  assertEquals(
    r.render(),
    "# HELP lat_seconds l\n# TYPE lat_seconds histogram\n" +
      'lat_seconds_bucket{op="get",le="0.1"} 1\nlat_seconds_bucket{op="get",le="1"} 2\n' +
      'lat_seconds_bucket{op="get",le="+Inf"} 3\nlat_seconds_sum{op="get"} 5.55\n' +
      'lat_seconds_count{op="get"} 3\n' +
      'lat_seconds_bucket{op="put",le="0.1"} 1\nlat_seconds_bucket{op="put",le="1"} 1\n' +
      'lat_seconds_bucket{op="put",le="+Inf"} 1\nlat_seconds_sum{op="put"} 0.1\n' +
      'lat_seconds_count{op="put"} 1\n',
  );
});

Deno.test("label values are escaped and families cannot be registered twice", () => {
  assertEquals(escapeLabel('a"b\\c\nd'), 'a\\"b\\\\c\\nd');
  const r = new MetricsRegistry();
  r.counter("x_total", "x");
  throws(() => r.counter("x_total", "again"), {
    name: "RangeError",
    message: "Metric x_total is already registered",
  });
  assertEquals(r.render(), "# HELP x_total x\n# TYPE x_total counter\n");
});

Deno.test("serveMetrics answers GET /metrics over TCP with the rendered text, 404 elsewhere and 405 for POST", async () => {
  let scrapes = 0;
  await using server = await serveMetrics({ kind: "tcp", hostname: "127.0.0.1", port: 0 }, () => {
    scrapes++;
    return "# HELP up_total x\n# TYPE up_total counter\nup_total 1\n";
  });
  ok(server.address.kind === "tcp" && server.address.port > 0);
  const base = `http://127.0.0.1:${server.address.kind === "tcp" ? server.address.port : 0}`;
  const res = await fetch(`${base}/metrics`);
  assertEquals([res.status, res.headers.get("content-type")], [200, METRICS_CONTENT_TYPE]);
  assertEquals(value(parse(await res.text()), "up_total"), 1);
  const missing = await fetch(`${base}/`);
  assertEquals([missing.status, await missing.text()], [404, "not found\n"]);
  const post = await fetch(`${base}/metrics`, { method: "POST", body: "x" });
  assertEquals([post.status, await post.text()], [405, "method not allowed\n"]);
  assertEquals(scrapes, 1);
});

async function httpOverUnix(path: string, target: string): Promise<string> {
  const conn = await Deno.connect({ transport: "unix", path });
  try {
    await conn.write(
      new TextEncoder().encode(
        `GET ${target} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n`,
      ),
    );
    let text = "";
    const buf = new Uint8Array(65536);
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) break;
      text += new TextDecoder().decode(buf.subarray(0, n));
    }
    return text;
  } finally {
    conn.close();
  }
}

Deno.test("serveMetrics serves on a Unix socket path, replaces a stale socket and removes it on close", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/metrics.sock`;
  try {
    const first = await serveMetrics({ kind: "unix", path }, () => "a_total 1\n");
    // A second server on the same path (as after a crash) replaces the socket file.
    await first.close();
    // A socket bound and closed without unlinking, as a killed broker leaves it.
    const fd = unixSocket(true);
    bindUnix(fd, sockaddrUn(path) ?? new Uint8Array(0));
    closeQuietly(fd);
    ok(Deno.lstatSync(path).isSocket);
    const server = await serveMetrics({ kind: "unix", path }, () => "# TYPE g gauge\ng 42\n");
    const reply = await httpOverUnix(path, "/metrics");
    ok(reply.startsWith("HTTP/1.1 200"), reply);
    const body = reply.slice(reply.indexOf("\r\n\r\n") + 4);
    assertEquals(value(parse(body), "g"), 42);
    ok((await httpOverUnix(path, "/other")).startsWith("HTTP/1.1 404"));
    await server.close();
    await server.close(); // twice is fine
    throws(() => Deno.lstatSync(path), Deno.errors.NotFound);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("serveMetrics refuses to replace a file that is not a socket", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/metrics.sock`;
  try {
    await Deno.writeTextFile(path, "keep me");
    let failed = false;
    try {
      const s = await serveMetrics({ kind: "unix", path }, () => "");
      await s.close();
    } catch (e) {
      failed = e instanceof Deno.errors.AddrInUse;
    }
    ok(failed, "expected AddrInUse");
    assertEquals(await Deno.readTextFile(path), "keep me");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
