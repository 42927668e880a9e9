/**
 * Consumers keep what they fetched: the descriptor reads the same bytes and a mapping stays
 * valid after the object is dropped and after the broker is gone (SIGTERM or SIGKILL).
 */

import { assertEquals, ok } from "../support/assert.ts";
import { Buffer } from "node:buffer";
import { type BusObject, Client } from "../../src/client.ts";
import { ReadOnlyMapping } from "../../src/sys/mapping.ts";
import { getSeals, Seal } from "../../src/sys/memfd.ts";
import { tempDir } from "../support/harness.ts";
import { accessMode, readAllAt, startBroker } from "../support/faults.ts";

/** A few MiB of patterned bytes, so a stale or wrong page would show. */
function pattern(size: number, salt: number): Uint8Array {
  const out = new Uint8Array(size);
  for (let i = 0; i < size; i++) out[i] = (i * 31 + salt + (i >>> 12)) & 0xff;
  return out;
}

async function assertReadable(
  obj: BusObject,
  map: ReadOnlyMapping,
  expected: Uint8Array,
  when: string,
): Promise<void> {
  // Through the mapping made before the event...
  ok(map.bytes.length === expected.length, `${when}: mapping length`);
  ok(Buffer.compare(map.bytes, expected) === 0, `${when}: mapping content`);
  // ...through a mapping made after it...
  using fresh = ReadOnlyMapping.of(obj.fd, obj.size);
  ok(Buffer.compare(fresh.bytes, expected) === 0, `${when}: fresh mapping content`);
  // ...and through read(2).
  ok(Buffer.compare(readAllAt(obj.fd, obj.size), expected) === 0, `${when}: pread content`);
  assertEquals(getSeals(obj.fd) & Seal.IMMUTABLE, Seal.IMMUTABLE, `${when}: seals`);
  assertEquals(accessMode(obj.fd), 2, `${when}: O_RDWR (writes are refused by the seals)`);
  ok(await obj.verify(), `${when}: digest`);
}

for (const signal of ["SIGTERM", "SIGKILL"] as const) {
  Deno.test(`a fetched descriptor and its mapping stay valid after a drop and after the broker dies by ${signal}`, async () => {
    using dir = tempDir();
    const broker = await startBroker(dir.path);
    try {
      const small = new TextEncoder().encode("tiny object");
      const big = pattern(3 << 20, signal.length);
      await using client = new Client({ socket: broker.socket, jobId: null });
      const a = await client.put(small, { name: "small" });
      const b = await client.put(big, { name: "big" });
      using objA = await client.get(a.id);
      using objB = await client.get({ name: "big" });
      using mapA = objA.map();
      using mapB = objB.map();
      // One object is never dropped: the broker closes its own descriptor when it exits.
      const kept = pattern(64 << 10, 7);
      const c = await client.put(kept, { name: "kept" });
      using objC = await client.get(c.id);
      using mapC = objC.map();
      await assertReadable(objA, mapA, small, "before the drop");
      await assertReadable(objB, mapB, big, "before the drop");

      assertEquals((await client.drop(a.id)).id, a.id);
      assertEquals((await client.drop(b.id)).id, b.id);
      assertEquals((await client.list()).map((e) => e.id), [c.id]);
      await assertReadable(objA, mapA, small, "after the drop");
      await assertReadable(objB, mapB, big, "after the drop");

      client.close();
      const status = await broker.stop(signal);
      if (signal === "SIGTERM") assertEquals(status.code, 0);
      else assertEquals(status.signal, "SIGKILL");
      await assertReadable(objA, mapA, small, `after ${signal}`);
      await assertReadable(objB, mapB, big, `after ${signal}`);
      await assertReadable(objC, mapC, kept, `after ${signal} (never dropped)`);
      // The view the object maps lazily works too, after everything else is gone.
      ok(Buffer.compare(objB.view, big) === 0);
    } finally {
      await broker.stop("SIGKILL");
    }
  });
}
