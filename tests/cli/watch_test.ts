/**
 * `memfdbus watch` (not yet dispatched by the CLI entry): its arguments and messages, its text
 * and JSON lines, and a run against an in-test server speaking WATCH over a real Unix socket.
 */
import { assertEquals, ok, throws } from "../support/assert.ts";
import {
  eventJson,
  eventLine,
  isoTime,
  parseWatchArgs,
  watchCommand,
} from "../../src/cli/watch.ts";
import type { BusEvent } from "../../src/client/watch.ts";
import { encodeWatchEvent, encodeWatchRequest } from "../../src/protocol/watch.ts";
import { Cmd, encodeHeader } from "../../src/protocol/wire.ts";

const DIGEST = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

function busEvent(extra: Partial<BusEvent> = {}): BusEvent {
  return {
    kind: "publish",
    id: 5,
    name: "model/a b",
    nameBytes: new TextEncoder().encode("model/a b"),
    size: 10,
    digest: DIGEST,
    timeNs: 1_700_000_000_123_456_789n,
    missed: 0,
    ...extra,
  };
}

Deno.test("watch arguments: --name or --prefix (not both), --json, --once, --socket, --job-id, --timeout", () => {
  assertEquals(parseWatchArgs([]), {
    socket: "/tmp/memfdbus.sock",
    target: {},
    jobFlag: undefined,
    json: false,
    once: false,
    timeoutMs: 30_000,
  });
  assertEquals(
    parseWatchArgs(["--prefix=m/", "--json", "--once", "--socket", "/s", "--job-id", "j"]),
    {
      socket: "/s",
      target: { prefix: "m/" },
      jobFlag: "j",
      json: true,
      once: true,
      timeoutMs: 30_000,
    },
  );
  assertEquals(parseWatchArgs(["--name", "a"]).target, { name: "a" });
  assertEquals(parseWatchArgs(["--timeout=2.5"]).timeoutMs, 2500);
  assertEquals(parseWatchArgs(["--timeout", "7"]).timeoutMs, 7000);
  const usage = (args: string[], message: string): void =>
    throws(() => parseWatchArgs(args), { name: "UsageError", message });
  usage(["--name", "a", "--prefix", "b"], "--name cannot be combined with --prefix");
  usage(["--name", ""], "object name must not be empty");
  usage(["--prefix", ""], "--prefix must not be empty");
  usage(["--name"], "missing value for --name");
  usage(["x"], "unexpected argument: x");
});

Deno.test("watch lines: tab-separated time, kind, id, size, digest, missed, name; JSON lines", () => {
  assertEquals(isoTime(1_700_000_000_123_456_789n), "2023-11-14T22:13:20.123456789Z");
  assertEquals(
    eventLine(busEvent()),
    `2023-11-14T22:13:20.123456789Z\tpublish\t5\t10\t${DIGEST}\t0\tmodel/a b\n`,
  );
  assertEquals(
    eventLine(busEvent({ kind: "missed", id: 0, size: 0, digest: null, name: "", missed: 4 })),
    "2023-11-14T22:13:20.123456789Z\tmissed\t0\t0\t-\t4\t*\n",
  );
  assertEquals(JSON.parse(eventJson(busEvent({ kind: "release", missed: 2 }))), {
    kind: "release",
    id: 5,
    name: "model/a b",
    size: 10,
    digest: DIGEST,
    time: "2023-11-14T22:13:20.123456789Z",
    time_ns: "1700000000123456789",
    missed: 2,
  });
});

async function serveOnce(
  path: string,
  request: Uint8Array,
  reply: Uint8Array,
  replied: () => void = () => {},
): Promise<void> {
  const listener = Deno.listen({ transport: "unix", path });
  try {
    const conn = await listener.accept();
    try {
      const got = new Uint8Array(request.length);
      let off = 0;
      while (off < got.length) {
        const n = await conn.read(got.subarray(off));
        if (n === null) throw new Error("server: request cut short");
        off += n;
      }
      assertEquals(got, request);
      await conn.write(reply);
      replied();
      // Wait for the client to hang up.
      const buf = new Uint8Array(16);
      while ((await conn.read(buf).catch(() => null)) !== null) { /* drain */ }
    } finally {
      conn.close();
    }
  } finally {
    listener.close();
  }
}

Deno.test("watch --once --json prints the first event as one JSON line and exits 0", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/bus.sock`;
  try {
    const ack = encodeHeader({ cmd: Cmd.WATCH, objectId: 1n, size: 1024n });
    const ev = encodeWatchEvent({
      kind: "publish",
      id: 2,
      name: "m/x",
      size: 3,
      digest: DIGEST,
      timeNs: 5n,
      missed: 0,
    });
    const reply = new Uint8Array([...ack, ...ev, ...ev]);
    const server = serveOnce(
      path,
      encodeWatchRequest({ kind: "prefix", prefix: "m/" }, "j"),
      reply,
    );
    const lines: string[] = [];
    const code = await watchCommand(
      ["--socket", path, "--prefix", "m/", "--job-id", "j", "--json", "--once"],
      (l) => lines.push(l),
    );
    await server;
    assertEquals(code, 0);
    assertEquals(lines.length, 1);
    assertEquals(JSON.parse(lines[0] ?? "").id, 2);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("watch stops with status 0 when its signal aborts while it waits", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/bus.sock`;
  try {
    const ack = encodeHeader({ cmd: Cmd.WATCH, objectId: 1n, size: 1024n });
    const stop = new AbortController();
    // Abort once the server has answered: the watch is then starting or waiting for events,
    // and either way it stops.
    const server = serveOnce(
      path,
      encodeWatchRequest({ kind: "all" }, null),
      ack,
      () => stop.abort(),
    );
    const lines: string[] = [];
    const running = watchCommand(["--socket", path], (l) => lines.push(l), stop.signal);
    assertEquals(await running, 0);
    await server;
    ok(lines.length === 0);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
