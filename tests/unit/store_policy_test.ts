import { assertEquals, ok, throws } from "../support/assert.ts";
import { droppable, type Owned, visible } from "../../src/core/policy.ts";
import { type NewObject, Store, type StoredObject } from "../../src/core/store.ts";

const U64_MAX = 18446744073709551615n;

function unlimited(): Store {
  return new Store({ maxObjects: U64_MAX, maxTotalBytes: U64_MAX });
}

function obj(name: string, size = 1, extra: Partial<NewObject> = {}): NewObject {
  return {
    size,
    fd: -1,
    digest: "sha256:" + "0".repeat(64),
    name,
    owner: null,
    allowed: null,
    createdNs: 0n,
    ...extra,
  };
}

function ids(store: Store): number[] {
  return [...store.values()].map((o) => o.id);
}

Deno.test("Store ids ascend from 1 and the store starts empty", () => {
  const s = unlimited();
  assertEquals([s.count, s.totalBytes, s.nextId], [0, 0, 1]);
  const a = s.add(obj("a", 5));
  const b = s.add(obj("b", 7));
  const c = s.add(obj("a", 11));
  assertEquals([a.id, b.id, c.id], [1, 2, 3]);
  assertEquals([s.count, s.totalBytes, s.nextId], [3, 23, 4]);
});

Deno.test("Store.add keeps every given field and adds the id", () => {
  const s = unlimited();
  const fields = obj("model.bin", 42, { fd: 17, owner: "alpha", allowed: "beta", createdNs: 9n });
  const stored = s.add(fields);
  assertEquals(stored, { id: 1, ...fields });
  ok(s.byId(1) === stored);
});

Deno.test("Store ids are never reused after removals, even of the newest id", () => {
  const s = unlimited();
  s.add(obj("a"));
  s.add(obj("b"));
  const c = s.add(obj("c"));
  s.remove(c);
  assertEquals(s.nextId, 4);
  assertEquals(s.add(obj("d")).id, 4);
  for (const o of [...s.values()]) s.remove(o);
  assertEquals(s.count, 0);
  assertEquals(s.add(obj("e")).id, 5);
  assertEquals(ids(s), [5]);
});

Deno.test("Store.byId finds numbers and bigints, and nothing past the safe integer range", () => {
  const s = unlimited();
  const a = s.add(obj("a"));
  ok(s.byId(1) === a);
  ok(s.byId(1n) === a);
  assertEquals(s.byId(2), undefined);
  assertEquals(s.byId(0n), undefined);
  assertEquals(s.byId(U64_MAX), undefined);
  assertEquals(s.byId(BigInt(Number.MAX_SAFE_INTEGER) + 1n), undefined);
});

Deno.test("Store.newestByName and oldestByName pick the highest and lowest id of a name", () => {
  const s = unlimited();
  const a1 = s.add(obj("a"));
  s.add(obj("b"));
  const a2 = s.add(obj("a"));
  const a3 = s.add(obj("a"));
  ok(s.newestByName("a") === a3);
  ok(s.oldestByName("a") === a1);
  assertEquals(s.newestByName("b")?.id, 2);
  assertEquals(s.oldestByName("b")?.id, 2);
  assertEquals(s.newestByName("c"), undefined);
  assertEquals(s.oldestByName("c"), undefined);
  assertEquals(a2.id, 3);
});

Deno.test("Store names compare as exact byte strings", () => {
  const s = unlimited();
  s.add(obj("ab"));
  s.add(obj("a\u00ff"));
  assertEquals(s.newestByName("a"), undefined);
  assertEquals(s.newestByName("ab\0"), undefined);
  assertEquals(s.newestByName("AB"), undefined);
  assertEquals(s.newestByName("a\u00ff")?.id, 2);
});

Deno.test("Store.newestByName returns the previous version after the newest is removed", () => {
  const s = unlimited();
  s.add(obj("a", 1));
  const a2 = s.add(obj("a", 2));
  const a3 = s.add(obj("a", 3));
  s.remove(a3);
  ok(s.newestByName("a") === a2);
  assertEquals(s.oldestByName("a")?.id, 1);
  assertEquals([s.count, s.totalBytes], [2, 3]);
});

Deno.test("Store.remove of a middle version keeps the newest and the oldest", () => {
  const s = unlimited();
  const a1 = s.add(obj("a", 1));
  const a2 = s.add(obj("a", 2));
  const a3 = s.add(obj("a", 4));
  s.remove(a2);
  ok(s.newestByName("a") === a3);
  ok(s.oldestByName("a") === a1);
  assertEquals(ids(s), [1, 3]);
  // Removing the newest now reveals the oldest, not the removed middle one.
  s.remove(a3);
  ok(s.newestByName("a") === a1);
  assertEquals(s.totalBytes, 1);
});

Deno.test("Store.oldestByName moves to the next version after the oldest is removed", () => {
  const s = unlimited();
  const a1 = s.add(obj("a", 1));
  const a2 = s.add(obj("a", 2));
  const a3 = s.add(obj("a", 4));
  s.remove(a1);
  ok(s.oldestByName("a") === a2);
  ok(s.newestByName("a") === a3);
  assertEquals(s.totalBytes, 6);
});

Deno.test("Store.remove of the last version forgets the name entirely", () => {
  const s = unlimited();
  const a = s.add(obj("a", 3));
  s.remove(a);
  assertEquals(s.newestByName("a"), undefined);
  assertEquals(s.oldestByName("a"), undefined);
  assertEquals(s.byId(1), undefined);
  assertEquals([s.count, s.totalBytes], [0, 0]);
  const again = s.add(obj("a", 1));
  ok(s.newestByName("a") === again);
  assertEquals(again.id, 2);
});

Deno.test("Store.remove ignores an object that is not stored, or removed twice", () => {
  const s = unlimited();
  const a = s.add(obj("a", 5));
  s.add(obj("b", 7));
  s.remove(a);
  s.remove(a);
  assertEquals([s.count, s.totalBytes], [1, 7]);
  // A look-alike with a stored id is not the stored object.
  const fake: StoredObject = { id: 2, ...obj("b", 7) };
  s.remove(fake);
  assertEquals([s.count, s.totalBytes], [1, 7]);
  assertEquals(s.newestByName("b")?.id, 2);
});

Deno.test("Store.values lists objects in ascending id order across names and removals", () => {
  const s = unlimited();
  s.add(obj("z"));
  const b = s.add(obj("a"));
  s.add(obj("m"));
  s.add(obj("a"));
  s.remove(b);
  s.add(obj("b"));
  assertEquals(ids(s), [1, 3, 4, 5]);
  assertEquals([...s.values()].map((o) => o.name), ["z", "m", "a", "b"]);
});

Deno.test("Store.restore puts back a known id and moves nextId past it", () => {
  const s = unlimited();
  s.restore({ id: 3, ...obj("a", 2) }, 5);
  assertEquals(s.nextId, 5);
  s.restore({ id: 7, ...obj("a", 3) }, 5);
  assertEquals(s.nextId, 8);
  assertEquals(s.newestByName("a")?.id, 7);
  assertEquals([s.count, s.totalBytes], [2, 5]);
  assertEquals(s.add(obj("b")).id, 8);
  throws(() => s.restore({ id: 3, ...obj("x") }, 1), {
    name: "RangeError",
    message: "Object 3 is already stored",
  });
});

Deno.test("Store.exceedsQuota refuses once count reaches maxObjects", () => {
  const s = new Store({ maxObjects: 2n, maxTotalBytes: U64_MAX });
  assertEquals(s.exceedsQuota(0), false);
  s.add(obj("a"));
  assertEquals(s.exceedsQuota(0), false);
  s.add(obj("b"));
  assertEquals(s.exceedsQuota(0), true);
  assertEquals(s.exceedsQuota(1), true);
  const first = s.byId(1);
  if (first === undefined) throw new Error("object 1 missing");
  s.remove(first);
  assertEquals(s.exceedsQuota(0), false);
});

Deno.test("Store.exceedsQuota with maxObjects 1 allows exactly one object", () => {
  const s = new Store({ maxObjects: 1n, maxTotalBytes: U64_MAX });
  assertEquals(s.exceedsQuota(1), false);
  s.add(obj("a"));
  assertEquals(s.exceedsQuota(1), true);
});

Deno.test("Store.exceedsQuota accepts a size equal to the remaining room and not one more", () => {
  const s = new Store({ maxObjects: U64_MAX, maxTotalBytes: 100n });
  assertEquals(s.exceedsQuota(100), false);
  assertEquals(s.exceedsQuota(101), true);
  s.add(obj("a", 60));
  assertEquals(s.exceedsQuota(40), false);
  assertEquals(s.exceedsQuota(41), true);
  s.add(obj("b", 40));
  assertEquals(s.totalBytes, 100);
  assertEquals(s.exceedsQuota(0), false);
  assertEquals(s.exceedsQuota(1), true);
});

Deno.test("Store.exceedsQuota with the 2^64-1 defaults accepts huge sizes and many objects", () => {
  const s = unlimited();
  assertEquals(s.exceedsQuota(Number.MAX_SAFE_INTEGER), false);
  s.add(obj("big", Number.MAX_SAFE_INTEGER));
  assertEquals(s.exceedsQuota(Number.MAX_SAFE_INTEGER), false);
  for (let i = 0; i < 1000; i++) s.add(obj(`o${i}`, 0));
  assertEquals(s.exceedsQuota(0), false);
  assertEquals(s.count, 1001);
});

Deno.test("Store.exceedsQuota with maxTotalBytes 1 takes one byte and a zero-byte object", () => {
  const s = new Store({ maxObjects: U64_MAX, maxTotalBytes: 1n });
  s.add(obj("a", 1));
  assertEquals(s.exceedsQuota(0), false);
  assertEquals(s.exceedsQuota(1), true);
});

// ---- policy (PROTOCOL.md 3.7) ---------------------------------------------------------------

const OWNERS: ReadonlyArray<Owned> = [
  { owner: null, allowed: null },
  { owner: "A", allowed: null },
  { owner: "A", allowed: "B" },
];
const CALLERS: ReadonlyArray<string | null> = [null, "A", "B", "C"];

// Expected [unscoped, A (owner), B (allowed), C (stranger)] per object shape.
const VISIBLE: boolean[][] = [
  [true, true, true, true], // unowned: everyone sees it
  [true, true, false, false], // owned by A: unscoped and A
  [true, true, true, false], // owned by A, allowed B: unscoped, A and B
];
const DROPPABLE: boolean[][] = [
  [true, true, true, true], // unowned: anyone may drop
  [true, true, false, false], // owned: unscoped and owner
  [true, true, false, false], // the allowed job B can read but never drop
];

Deno.test("visible follows the full truth table of PROTOCOL.md 3.7", () => {
  const got = OWNERS.map((o) => CALLERS.map((c) => visible(o, c)));
  assertEquals(got, VISIBLE);
});

Deno.test("droppable follows the full truth table of PROTOCOL.md 3.7", () => {
  const got = OWNERS.map((o) => CALLERS.map((c) => droppable(o, c)));
  assertEquals(got, DROPPABLE);
});

Deno.test("visible and droppable compare job ids exactly, case and bytes included", () => {
  const o: Owned = { owner: "job", allowed: "peer" };
  assertEquals(
    ["job", "Job", "job ", "jo", "peer", "PEER", ""].map((c) => visible(o, c)),
    [true, false, false, false, true, false, false],
  );
  assertEquals(
    ["job", "Job", "peer", ""].map((c) => droppable(o, c)),
    [true, false, false, false],
  );
});

Deno.test("an unowned object with an allowed job stays visible and droppable to everyone", () => {
  // The broker never stores this shape; the policy still treats no owner as public.
  const o: Owned = { owner: null, allowed: "B" };
  assertEquals(CALLERS.map((c) => visible(o, c)), [true, true, true, true]);
  assertEquals(CALLERS.map((c) => droppable(o, c)), [true, true, true, true]);
});
