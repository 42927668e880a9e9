/**
 * The WATCH extension's bytes: request and event frames byte for byte, the header checks and
 * their texts, hostile event frames, and the slow-watcher queue.
 */
import { assertEquals, ok, throws } from "../support/assert.ts";
import {
  checkWatchHeader,
  decodeWatchEvent,
  decodeWatchHead,
  encodeWatchEvent,
  encodeWatchRequest,
  selectorMatches,
  WATCH_FRAME_SIZE,
  type WatchEvent,
  watchSelectorOf,
  WatchText,
} from "../../src/protocol/watch.ts";
import { Cmd, decodeHeader, emptyHeader, type Header, Text } from "../../src/protocol/wire.ts";
import { WatchQueue } from "../../src/core/watch_queue.ts";
import { ProtocolError } from "../../src/errors.ts";

const DIGEST = "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
const hex = (b: Uint8Array): string => [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
const ascii = (s: string): string => hex(new TextEncoder().encode(s));

function ev(name: string, id: number, extra: Partial<WatchEvent> = {}): WatchEvent {
  return {
    kind: "publish",
    id,
    name,
    size: 3,
    digest: DIGEST,
    timeNs: BigInt(id),
    missed: 0,
    ...extra,
  };
}

Deno.test("encodeWatchRequest writes a v1 header with cmd 0x103, the kind in size, then name and job", () => {
  assertEquals(
    hex(encodeWatchRequest({ kind: "name", name: "ab" }, "j")),
    "4244464d" + "0100" + "0301" + "00000000" + "01000000" +
      "0000000000000000" + "0100000000000000" + "02000000" + "00000000" + "00000000" +
      "00000000" + ascii("ab") + ascii("j"),
  );
  const prefix = encodeWatchRequest({ kind: "prefix", prefix: "m/" }, null);
  const h = decodeHeader(prefix);
  assertEquals([h.cmd, h.size, h.nameLen, h.jobLen, prefix.length], [Cmd.WATCH, 2n, 2, 0, 50]);
  const all = decodeHeader(encodeWatchRequest({ kind: "all" }, null));
  assertEquals([all.size, all.nameLen], [0n, 0]);
});

Deno.test("an event frame is MFDW, kind, digest and name lengths, id, size, time, missed, name, digest", () => {
  const bytes = encodeWatchEvent(ev("a", 5, { timeNs: 0x0102030405060708n, missed: 2 }));
  assertEquals(
    hex(bytes),
    "4d464457" + "0100" + "4700" + "01000000" + "00000000" + "0500000000000000" +
      "0300000000000000" + "0807060504030201" + "0200000000000000" + ascii("a") + ascii(DIGEST),
  );
  assertEquals(decodeWatchEvent(bytes), {
    event: ev("a", 5, { timeNs: 0x0102030405060708n, missed: 2 }),
    length: 48 + 1 + 71,
  });
  const missed: WatchEvent = {
    kind: "missed",
    id: 0,
    name: "",
    size: 0,
    digest: null,
    timeNs: 9n,
    missed: 7,
  };
  const m = encodeWatchEvent(missed);
  assertEquals(m.length, WATCH_FRAME_SIZE);
  assertEquals(hex(m.subarray(4, 8)), "05000000");
  assertEquals(decodeWatchEvent(m)?.event, missed);
  for (const kind of ["drop", "release", "evict"] as const) {
    assertEquals(decodeWatchEvent(encodeWatchEvent(ev("x", 1, { kind })))?.event.kind, kind);
  }
});

Deno.test("decodeWatchEvent waits for a whole frame and decodes frames back to back", () => {
  const a = encodeWatchEvent(ev("a", 1));
  const b = encodeWatchEvent(ev("bb", 2));
  const both = new Uint8Array([...a, ...b]);
  for (let cut = 0; cut < a.length; cut++) {
    assertEquals(decodeWatchEvent(both.subarray(0, cut)), null);
  }
  const first = decodeWatchEvent(both);
  assertEquals(first?.event.name, "a");
  assertEquals(decodeWatchEvent(both.subarray(first?.length ?? 0))?.event.name, "bb");
  // Names are raw bytes (binary strings), including bytes >= 0x80.
  assertEquals(decodeWatchEvent(encodeWatchEvent(ev("\xff\x00n", 3)))?.event.name, "\xff\x00n");
});

Deno.test("a publish or drop with id 0 (on another host of the cluster) decodes", () => {
  for (const kind of ["publish", "drop"] as const) {
    const frame = encodeWatchEvent(ev("remote", 0, { kind }));
    const head = decodeWatchHead(frame);
    assertEquals([head.kind, head.id], [kind, 0]);
  }
});

Deno.test("hostile event frames are refused with ProtocolError naming what was wrong", () => {
  const good = encodeWatchEvent(ev("a", 5));
  const mutate = (f: (v: DataView, b: Uint8Array) => void): Uint8Array => {
    const b = good.slice();
    f(new DataView(b.buffer), b);
    return b;
  };
  const cases: [Uint8Array, string][] = [
    [mutate((v) => v.setUint32(0, 0x4d464442, true)), "bad magic"],
    [mutate((v) => v.setUint16(4, 0, true)), "unknown kind 0"],
    [mutate((v) => v.setUint16(4, 6, true)), "unknown kind 6"],
    [mutate((v) => v.setUint16(6, 70, true)), "bad digest length"],
    [mutate((v) => v.setUint16(6, 0, true)), "bad digest length"],
    [mutate((v) => v.setUint32(8, 65537, true)), "name too long"],
    [mutate((v) => v.setUint32(8, 0, true)), "missing id or name"],
    [
      mutate((v) => {
        v.setUint16(4, 3, true);
        v.setBigUint64(16, 0n, true);
      }),
      "missing id or name",
    ],
    [mutate((v) => v.setBigUint64(16, 1n << 53n, true)), "id out of range"],
    [mutate((v) => v.setBigUint64(24, 1n << 63n, true)), "size out of range"],
    [mutate((v) => v.setBigUint64(40, 1n << 60n, true)), "missed count out of range"],
    [mutate((_, b) => (b[48 + 1 + 10] = 0x41)), "bad digest"],
    [mutate((v) => v.setUint16(4, 5, true)), "malformed missed event"],
    [
      mutate((v) => {
        v.setUint16(4, 5, true);
        v.setUint16(6, 0, true);
        v.setBigUint64(16, 0n, true);
        v.setBigUint64(24, 0n, true);
      }),
      "malformed missed event",
    ],
  ];
  for (const [bytes, what] of cases) {
    throws(() => decodeWatchEvent(bytes), (e: unknown) => {
      ok(e instanceof ProtocolError, `${what}: ${String(e)}`);
      assertEquals(e.message, `broker sent an invalid watch event: ${what}`);
      return true;
    });
  }
});

Deno.test("random bytes never make the event decoder fail with anything but ProtocolError", () => {
  let seed = 12345;
  const rand = (): number => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
  const good = encodeWatchEvent(ev("name", 9));
  for (let i = 0; i < 5000; i++) {
    const b = i % 2 === 0 ? good.slice() : new Uint8Array(Math.floor(rand() * 200));
    if (i % 2 === 0) b[Math.floor(rand() * b.length)] = Math.floor(rand() * 256);
    else for (let j = 0; j < b.length; j++) b[j] = Math.floor(rand() * 256);
    if (i % 7 === 0 && b.length >= 4) b.set([0x4d, 0x46, 0x44, 0x57]);
    try {
      const r = decodeWatchEvent(b);
      if (r !== null) ok(r.length <= b.length);
    } catch (e) {
      ok(e instanceof ProtocolError, String(e));
    }
  }
  throws(() => decodeWatchHead(new Uint8Array(10)), ProtocolError);
});

Deno.test("checkWatchHeader refuses bad selectors and lengths with the texts of GET", () => {
  const limits = { maxRequestBytes: 1000, maxNameBytes: 100 };
  const h = (f: Partial<Header>): Header => ({ ...emptyHeader(), cmd: Cmd.WATCH, ...f });
  assertEquals(checkWatchHeader(h({}), limits), null);
  assertEquals(checkWatchHeader(h({ size: 1n, nameLen: 3 }), limits), null);
  assertEquals(checkWatchHeader(h({ size: 2n, nameLen: 3, jobLen: 4 }), limits), null);
  const bad = WatchText.badSelector;
  assertEquals(bad, "invalid watch selector");
  assertEquals(checkWatchHeader(h({ size: 3n, nameLen: 1 }), limits), bad);
  assertEquals(checkWatchHeader(h({ size: 0n, nameLen: 1 }), limits), bad);
  assertEquals(checkWatchHeader(h({ size: 1n }), limits), bad);
  assertEquals(checkWatchHeader(h({ size: 2n }), limits), bad);
  assertEquals(checkWatchHeader(h({ objectId: 1n }), limits), bad);
  assertEquals(checkWatchHeader(h({ textLen: 1 }), limits), bad);
  assertEquals(checkWatchHeader(h({ allowLen: 1 }), limits), bad);
  assertEquals(checkWatchHeader(h({ size: 1n, nameLen: 65537 }), limits), Text.nameTooLong);
  assertEquals(checkWatchHeader(h({ jobLen: 257 }), limits), Text.jobTooLong);
  assertEquals(
    checkWatchHeader(h({ size: 1n, nameLen: 990, jobLen: 11 }), limits),
    Text.requestTooLarge,
  );
  assertEquals(checkWatchHeader(h({ size: 1n, nameLen: 101 }), limits), Text.nameOverLimit);
  assertEquals(watchSelectorOf(h({ size: 1n }), "a\0b"), { error: Text.nulInName });
  assertEquals(watchSelectorOf(h({ size: 2n }), "m/"), { kind: "prefix", prefix: "m/" });
});

Deno.test("selectorMatches: a name exactly, a prefix by bytes, all everything", () => {
  ok(selectorMatches({ kind: "name", name: "a" }, "a"));
  ok(!selectorMatches({ kind: "name", name: "a" }, "ab"));
  ok(selectorMatches({ kind: "prefix", prefix: "m/" }, "m/x"));
  ok(!selectorMatches({ kind: "prefix", prefix: "m/" }, "m"));
  ok(selectorMatches({ kind: "all" }, "anything"));
});

Deno.test("WatchQueue keeps order while it has room", () => {
  const q = new WatchQueue({ events: 4, bytes: 1 << 20 });
  for (let i = 1; i <= 4; i++) q.push(ev(`n${i}`, i));
  assertEquals(q.length, 4);
  assertEquals([q.shift(), q.shift(), q.shift(), q.shift()].map((e) => e?.id), [1, 2, 3, 4]);
  assertEquals([q.shift(), q.lost, q.bytes], [undefined, 0, 0]);
});

Deno.test("WatchQueue, full: a new event replaces its name's newest queued event, at the tail, counting what it stands for", () => {
  const q = new WatchQueue({ events: 3, bytes: 1 << 20 });
  q.push(ev("a", 1));
  q.push(ev("b", 2));
  q.push(ev("a", 3));
  q.push(ev("a", 4)); // replaces a3
  q.push(ev("a", 5)); // replaces a4, which stood for a3
  assertEquals(q.length, 3);
  const out = [q.shift(), q.shift(), q.shift()].map((e) => [e?.id, e?.missed]);
  assertEquals(out, [[1, 0], [2, 0], [5, 2]]);
  assertEquals(q.lost, 2);
});

Deno.test("WatchQueue, full: events of other names are dropped and reported as one missed event", () => {
  const q = new WatchQueue({ events: 2, bytes: 1 << 20 });
  q.push(ev("a", 1));
  q.push(ev("b", 2));
  q.push(ev("c", 3));
  q.push(ev("d", 4, { timeNs: 44n }));
  assertEquals(q.length, 2);
  assertEquals(q.shift()?.id, 1);
  // The freed slot went to the missed event; later drops add to it while it waits.
  q.push(ev("e", 5));
  q.push(ev("b", 6)); // coalesces with b2
  assertEquals(q.length, 2);
  assertEquals(q.shift(), {
    kind: "missed",
    id: 0,
    name: "",
    size: 0,
    digest: null,
    timeNs: 5n,
    missed: 3,
  });
  assertEquals(q.shift()?.id, 6);
  assertEquals(q.lost, 4);
  assertEquals(q.shift(), undefined);
});

Deno.test("WatchQueue bounds bytes as well as events, but always takes one event", () => {
  const q = new WatchQueue({ events: 100, bytes: 200 });
  q.push(ev("x".repeat(1000), 1));
  assertEquals(q.length, 1, "a huge name still gets through alone");
  q.push(ev("y", 2));
  assertEquals(q.length, 1);
  assertEquals(q.shift()?.id, 1);
  assertEquals(q.shift()?.kind, "missed");
  q.clear();
  assertEquals([q.length, q.bytes], [0, 0]);
});

Deno.test("WatchQueue under a burst of 1,000 events of 10 names holds at most its bound and ends with every name's last event", () => {
  const q = new WatchQueue({ events: 16, bytes: 1 << 20 });
  for (let i = 1; i <= 1000; i++) {
    q.push(ev(`n${i % 10}`, i));
    ok(q.length <= 16);
  }
  const seen = new Map<string, number>();
  let total = 0;
  for (let e = q.shift(); e !== undefined; e = q.shift()) {
    seen.set(e.name, e.id);
    total += 1 + e.missed;
  }
  for (let n = 0; n < 10; n++) assertEquals(seen.get(`n${n}`), 991 + ((n + 9) % 10));
  assertEquals(total, 1000, "every event is delivered or counted in a missed");
});
