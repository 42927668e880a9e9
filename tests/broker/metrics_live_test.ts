/**
 * `memfdbus broker --metrics ADDRESS` (issue 12, points 6 and 8): a real HTTP scrape of the
 * broker process, parsed with a Prometheus text-format parser from npm, whose values match what
 * the test did (requests by op and result, latency count, objects, stored and unique bytes,
 * dedup hits, releases by reason, watchers), and `/metrics` on a Unix socket path.
 */
import { assertEquals, ok } from "../support/assert.ts";
import parsePrometheus from "parse-prometheus-text-format";
import { Client } from "../../src/client.ts";
import { BrokerError } from "../../src/errors.ts";
import { BrokerProcess, enc, tempDir } from "../support/harness.ts";
import { waitFor } from "../support/wait.ts";

interface Sample {
  value?: string;
  labels?: Record<string, string>;
  count?: string;
}
interface Family {
  name: string;
  type: string;
  metrics: Sample[];
}

function parse(text: string): Map<string, Family> {
  return new Map((parsePrometheus(text) as Family[]).map((f) => [f.name, f]));
}

function value(
  fams: Map<string, Family>,
  name: string,
  labels: Record<string, string> = {},
): number {
  const f = fams.get(name);
  ok(f !== undefined, `no family ${name}`);
  const m = f.metrics.find((s) => JSON.stringify(s.labels ?? {}) === JSON.stringify(labels));
  ok(m !== undefined, `no ${name} sample with ${JSON.stringify(labels)}`);
  return Number(m.value ?? m.count);
}

/** A TCP port nobody listens on right now. */
function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

async function scrape(url: string): Promise<{ status: number; type: string; text: string }> {
  const r = await fetch(url);
  return { status: r.status, type: r.headers.get("content-type") ?? "", text: await r.text() };
}

Deno.test("broker --metrics serves values that match what clients did", async () => {
  using dir = tempDir();
  const port = freePort();
  await using broker = await BrokerProcess.start(dir.path, [
    "--metrics",
    `127.0.0.1:${port}`,
    "--keep-versions",
    "1",
  ]);
  const url = `http://127.0.0.1:${port}/metrics`;
  await using client = new Client({ socket: broker.socket, jobId: null, keepAlive: false });
  await client.put(enc("aaaa"), { name: "a" });
  await client.put(enc("aaaa"), { name: "b" }); // same bytes: one memfd, a dedup hit
  await client.put(enc("bbbbbb"), { name: "a" }); // retention releases the first "a"
  (await client.get({ name: "a" })).close();
  await client.get({ name: "missing" }).catch((e) => ok(e instanceof BrokerError));
  await client.put(enc("job"), { name: "j", jobId: "trainer" });
  using watch = await client.watch({});
  const seen = (async () => {
    for await (const _ of watch) break;
  })();
  await waitFor(
    () => broker.audit().filter((l) => l.op !== "release").length >= 7,
    { what: "seven audit records", timeoutMs: 10_000 },
  );

  const r = await scrape(url);
  assertEquals(r.status, 200);
  ok(r.type.startsWith("text/plain; version=0.0.4"), r.type);
  const m = parse(r.text);
  assertEquals(value(m, "memfdbus_requests_total", { op: "put", result: "ok" }), 4);
  assertEquals(value(m, "memfdbus_requests_total", { op: "get", result: "ok" }), 1);
  assertEquals(value(m, "memfdbus_requests_total", { op: "get", result: "not_found" }), 1);
  assertEquals(value(m, "memfdbus_requests_total", { op: "watch", result: "ok" }), 1);
  ok(!m.get("memfdbus_requests_total")?.metrics.some((s) => s.labels?.op === "release"));
  assertEquals(m.get("memfdbus_request_duration_seconds")?.type, "HISTOGRAM");
  assertEquals(value(m, "memfdbus_request_duration_seconds"), 7);
  assertEquals(value(m, "memfdbus_objects"), 3);
  assertEquals(value(m, "memfdbus_stored_bytes"), 4 + 6 + 3);
  // "b" (4 bytes) is alone on its memfd once the first "a" was released.
  assertEquals(value(m, "memfdbus_unique_bytes"), 4 + 6 + 3);
  assertEquals(value(m, "memfdbus_dedup_hits_total"), 1);
  assertEquals(value(m, "memfdbus_releases_total", { reason: "retention" }), 1);
  assertEquals(value(m, "memfdbus_watchers"), 1);
  assertEquals(value(m, "memfdbus_job_objects", { job: "trainer" }), 1);
  assertEquals(value(m, "memfdbus_job_bytes", { job: "trainer" }), 3);
  assertEquals(value(m, "memfdbus_audit_lines_dropped_total"), 0);
  assertEquals(value(m, "memfdbus_hash_queue_depth"), 0);
  ok(value(m, "memfdbus_connections") >= 1);
  // Metadata: "b", the second "a" and "j" (job "trainer"), each plus the 768 B overhead; the
  // released first "a" no longer counts. The limit is the default 1 GiB.
  assertEquals(value(m, "memfdbus_metadata_bytes"), 1 + 1 + 1 + 7 + 3 * 768);
  assertEquals(value(m, "memfdbus_metadata_limit_bytes"), 1073741824);

  // A second object of the same bytes as "b": unique bytes stay, stored bytes grow.
  await client.put(enc("aaaa"), { name: "c" });
  await client.put(enc("x"), { name: "wake" }); // ends the watch loop above
  await seen;
  watch.close();
  await waitFor(
    async () => {
      const again = parse((await scrape(url)).text);
      return value(again, "memfdbus_watchers") === 0 &&
        value(again, "memfdbus_stored_bytes") === 4 + 6 + 3 + 4 + 1 &&
        value(again, "memfdbus_unique_bytes") === 4 + 6 + 3 + 1 &&
        value(again, "memfdbus_dedup_hits_total") === 2;
    },
    { what: "the watcher gone, and a second dedup hit counted", timeoutMs: 10_000 },
  );
  assertEquals((await scrape(`http://127.0.0.1:${port}/other`)).status, 404);
});

Deno.test("broker --metrics PATH serves /metrics on a Unix socket and removes it at exit", async () => {
  using dir = tempDir();
  const path = `${dir.path}/metrics.sock`;
  const broker = await BrokerProcess.start(dir.path, ["--metrics", path]);
  try {
    // The socket file appears at bind(2); connect until the server accepts.
    const conn = await waitFor(
      async () => {
        try {
          return await Deno.connect({ transport: "unix", path });
        } catch {
          return null;
        }
      },
      { what: "the metrics socket to accept a connection" },
    );
    await conn.write(enc("GET /metrics HTTP/1.1\r\nHost: bus\r\nConnection: close\r\n\r\n"));
    let text = "";
    const buf = new Uint8Array(65536);
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) break;
      text += new TextDecoder().decode(buf.subarray(0, n));
    }
    conn.close();
    ok(text.startsWith("HTTP/1.1 200"), text.slice(0, 80));
    ok(text.includes("\nmemfdbus_objects 0\n"), text);
  } finally {
    await broker.stop();
    await broker[Symbol.asyncDispose]();
  }
  await waitFor(
    () => {
      try {
        Deno.lstatSync(path);
        return false;
      } catch {
        return true;
      }
    },
    { what: "the metrics socket removed", timeoutMs: 10_000 },
  );
});
