/**
 * Stopping under load: SIGTERM while clients hammer the broker. Every request is answered or
 * cleanly refused, the audit log is complete and flushed, the socket file is gone, exit 0.
 */

import { assertEquals, ok } from "../support/assert.ts";
import { Client } from "../../src/client.ts";
import { Connection } from "../../src/client/connection.ts";
import { BrokerError, ErrnoError, TimeoutError } from "../../src/errors.ts";
import { Cmd, DIGEST_LEN, encodeHeader } from "../../src/protocol/wire.ts";
import { AUDIT_KEYS, catchesSignal, CLI, CLI_PERMS, tempDir } from "../support/harness.ts";
import { waitFor } from "../support/wait.ts";
import { readOneReply } from "../support/faults.ts";

/** A broker subprocess whose stdout is kept byte for byte (to see the last line's newline). */
class RawBroker {
  readonly socket: string;
  readonly child: Deno.ChildProcess;
  stdout = new Uint8Array(0);
  stderr = "";
  readonly done: Promise<void>;

  constructor(socket: string, args: readonly string[] = []) {
    this.socket = socket;
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", ...CLI_PERMS, CLI, "broker", "--socket", socket, ...args],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.child = child;
    const out = (async () => {
      for await (const chunk of child.stdout) {
        const next = new Uint8Array(this.stdout.length + chunk.length);
        next.set(this.stdout);
        next.set(chunk, this.stdout.length);
        this.stdout = next;
      }
    })();
    const err = (async () => {
      for await (const chunk of child.stderr.pipeThrough(new TextDecoderStream())) {
        this.stderr += chunk;
      }
    })();
    this.done = Promise.all([out, err]).then(() => {});
  }

  text(): string {
    return new TextDecoder().decode(this.stdout);
  }

  async listening(): Promise<void> {
    await waitFor(() => this.text().includes("\n"), { what: "listening line", timeoutMs: 15000 });
    assertEquals(this.text().split("\n")[0], `memfdbus broker listening on ${this.socket}`);
  }
}

function socketExists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

const CLEAN_REFUSALS = new Set(["ECONNREFUSED", "ENOENT", "ECONNRESET", "EPIPE"]);

interface Tally {
  puts: bigint[];
  gets: number;
  lists: number;
  brokerErrors: Map<string, number>;
  refused: number;
  hangs: string[];
  unexpected: string[];
}

function classify(e: unknown, t: Tally, what: string): boolean {
  if (e instanceof BrokerError) {
    t.brokerErrors.set(e.text, (t.brokerErrors.get(e.text) ?? 0) + 1);
    return false;
  }
  if (e instanceof ErrnoError && CLEAN_REFUSALS.has(e.code)) {
    t.refused++;
    return true;
  }
  if (e instanceof TimeoutError) t.hangs.push(`${what}: ${e.message}`);
  else t.unexpected.push(`${what}: ${(e as Error).stack ?? e}`);
  return true;
}

Deno.test("SIGTERM during load answers or cleanly refuses every request, flushes a complete audit log, unlinks the socket and exits 0", async () => {
  using dir = tempDir();
  const broker = new RawBroker(`${dir.path}/load.sock`);
  try {
    await broker.listening();
    await waitFor(() => catchesSignal(broker.child.pid, "SIGTERM"), {
      what: "the broker's SIGTERM handler",
    });
    const tally: Tally = {
      puts: [],
      gets: 0,
      lists: 0,
      brokerErrors: new Map(),
      refused: 0,
      hangs: [],
      unexpected: [],
    };
    let signalled = false;
    const worker = async (w: number): Promise<void> => {
      const client = new Client({
        socket: broker.socket,
        jobId: null,
        keepAlive: w % 2 === 0,
        timeoutMs: 8000,
      });
      try {
        const mine: bigint[] = [];
        for (let i = 0; i < 100_000; i++) {
          const what = `worker ${w} op ${i}`;
          try {
            const r = i % 5;
            if (r <= 1 || mine.length === 0) {
              // Mostly small objects, now and then one hashed on a Worker.
              const size = i % 17 === 0 ? (2 << 20) + i : 1 + ((i * 7919) % 5000);
              const { id } = await client.put(new Uint8Array(size).fill(i & 0xff), {
                name: `w${w}`,
              });
              tally.puts.push(id);
              mine.push(id);
            } else if (r <= 3) {
              using o = await client.get(mine[i % mine.length] ?? 1n);
              ok(o.size > 0);
              tally.gets++;
            } else {
              await client.list();
              tally.lists++;
            }
          } catch (e) {
            if (classify(e, tally, what) && signalled) return;
            if (tally.hangs.length + tally.unexpected.length > 0) return;
          }
        }
      } finally {
        client.close();
      }
    };
    // A client that started a PUT body and stalls: the grace period ends it.
    const stalled = await Connection.connect(broker.socket, 5000);
    await stalled.send(
      encodeHeader({ cmd: Cmd.PUT, size: 1n, nameLen: 4, textLen: DIGEST_LEN }),
      performance.now() + 5000,
      "send",
    );
    const workers = Array.from({ length: 6 }, (_, w) => worker(w));
    // The signal lands in the middle of the load: every worker has had requests answered.
    await waitFor(() => tally.puts.length > 20 && tally.gets + tally.lists >= 12, {
      what: "21 puts and 12 gets or lists answered before the signal",
    });
    const t0 = performance.now();
    signalled = true;
    broker.child.kill("SIGTERM");
    const status = await broker.child.status;
    const exitMs = performance.now() - t0;
    await Promise.all(workers);
    await broker.done;
    const stalledEnd = await readOneReply(stalled, performance.now() + 20_000);
    stalled.close();

    assertEquals(tally.hangs, []);
    assertEquals(tally.unexpected, []);
    assertEquals([status.code, status.signal], [0, null]);
    ok(exitMs < 20_000, `the broker took ${exitMs.toFixed(0)} ms to exit`);
    ok(!socketExists(broker.socket), "the socket file is unlinked");
    ok(tally.puts.length > 20, `only ${tally.puts.length} PUTs went through before the signal`);
    ok(tally.refused > 0, "requests after the signal are refused");
    assertEquals(stalledEnd.kind, "closed", "the stalled request is closed after the grace period");
    assertEquals(broker.stderr, "");

    // The audit log: flushed to the last byte, every line a whole record with the twelve keys.
    const text = broker.text();
    ok(text.endsWith("\n"), "the last audit line is complete");
    const records = text.slice(0, -1).split("\n").slice(1).map((l) => JSON.parse(l));
    for (const r of records) assertEquals(Object.keys(r), AUDIT_KEYS);
    const putOk = new Set(
      records.filter((r) => r.op === "put" && r.result === "ok").map((r) => BigInt(r.object_id)),
    );
    const missing = tally.puts.filter((id) => !putOk.has(id));
    assertEquals(missing, [], "every acknowledged PUT is in the audit log");
    const getOk = records.filter((r) => r.op === "get" && r.result === "ok").length;
    ok(getOk >= tally.gets, `${getOk} get records for ${tally.gets} answered GETs`);
    const listOk = records.filter((r) => r.op === "list" && r.result === "ok").length;
    ok(listOk >= tally.lists, `${listOk} list records for ${tally.lists} answered LISTs`);
    for (const [text, n] of tally.brokerErrors) {
      const logged = records.filter((r) => r.error === text).length;
      ok(logged >= n, `${logged} records of "${text}" for ${n} replies`);
    }
  } finally {
    try {
      broker.child.kill("SIGKILL");
    } catch {
      // Already gone.
    }
    await broker.child.status;
    await broker.done;
  }
});

Deno.test("a SIGTERM sent as soon as the listening line appears stops the broker cleanly (handlers come before the line)", async () => {
  using dir = tempDir();
  const results: string[] = [];
  for (let i = 0; i < 5; i++) {
    const broker = new RawBroker(`${dir.path}/early-${i}.sock`);
    await broker.listening();
    broker.child.kill("SIGTERM");
    const status = await broker.child.status;
    await broker.done;
    results.push(
      `code=${status.code} signal=${status.signal} socket=${
        socketExists(broker.socket) ? "left" : "gone"
      }`,
    );
  }
  assertEquals(results, Array(5).fill("code=0 signal=null socket=gone"));
});
