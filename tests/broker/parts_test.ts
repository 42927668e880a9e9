import { assertEquals, ok } from "../support/assert.ts";
import { blankRecord } from "../../src/core/audit.ts";
import type { StoredObject } from "../../src/core/store.ts";
import { BrokerCounters } from "../../src/broker/counters.ts";
import { ObjectEvents, type ObjectEventType } from "../../src/broker/events.ts";
import { ParkedWaits } from "../../src/broker/waits.ts";

const OBJ = { id: 7, name: "n", size: 1, fd: -1 } as unknown as StoredObject;

Deno.test("ObjectEvents tells every listener in order, and a removed listener hears nothing", () => {
  const events = new ObjectEvents();
  ok(!events.active);
  const heard: string[] = [];
  const offA = events.on((type, obj) => heard.push(`a:${type}:${obj.id}`));
  events.on((type) => heard.push(`b:${type}`));
  ok(events.active);
  events.emit("publish", OBJ);
  offA();
  events.emit("drop", OBJ);
  assertEquals(heard, ["a:publish:7", "b:publish", "b:drop"]);
});

Deno.test("ObjectEvents removes a listener that throws and keeps telling the others", () => {
  const events = new ObjectEvents();
  const heard: ObjectEventType[] = [];
  events.on(() => {
    throw new Error("listener bug");
  });
  events.on((type) => heard.push(type));
  events.emit("publish", OBJ);
  events.emit("release", OBJ);
  assertEquals(heard, ["publish", "release"]);
});

Deno.test("BrokerCounters counts records by op and result and snapshots the gauges", () => {
  const c = new BrokerCounters();
  c.count(blankRecord("get", "ok", null));
  c.count(blankRecord("get", "ok", null));
  c.count(blankRecord("put", "bad_request", "x"));
  c.accepted += 3;
  c.refused += 1;
  c.attach({ connections: () => 2, parkedWaits: () => 1, hashQueue: () => 4 });
  const snap = c.snapshot();
  assertEquals(snap.requests.get.ok, 2);
  assertEquals(snap.requests.put.bad_request, 1);
  assertEquals(snap.requests.list.ok, 0);
  assertEquals([snap.accepted, snap.refused, snap.connections, snap.parkedWaits, snap.hashQueue], [
    3,
    1,
    2,
    1,
    4,
  ]);
  // A snapshot is a copy: later counts do not change it.
  c.count(blankRecord("get", "ok", null));
  assertEquals(snap.requests.get.ok, 2);
});

Deno.test("ParkedWaits keeps count across park, unpark and a publish that wakes them one by one", () => {
  const w = new ParkedWaits<string>();
  ok(w.empty);
  w.park("model", "a");
  w.park("model", "b");
  w.park("other", "c");
  assertEquals(w.count, 3);
  w.unpark("other", "c");
  w.unpark("other", "c"); // twice: counted once
  assertEquals(w.count, 2);
  const woken = w.takeAll("model");
  assertEquals([...woken ?? []], ["a", "b"]);
  ok(w.empty);
  assertEquals(w.count, 2); // still parked until each is answered
  w.woken();
  w.woken();
  assertEquals(w.count, 0);
  assertEquals(w.takeAll("model"), undefined);
});
