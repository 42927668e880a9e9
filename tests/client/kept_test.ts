/**
 * Kept connections against a broker in another process, where a GET runs on the calling thread
 * (its reply arrives within the sync wait) and concurrent requests of one process go out
 * together: every reply is read whole and matched to its request, error replies are thrown and
 * the connection is not reused for them, names longer than the read-ahead buffer still arrive,
 * and no descriptor is left open.
 */

import { assertEquals, ok, rejects } from "../support/assert.ts";
import { BrokerProcess, tempDir } from "../support/harness.ts";
import { fdGuard } from "../support/fds.ts";
import { Client } from "../../src/client.ts";
import { BrokerError, Status } from "../../src/errors.ts";
import { digestBytes } from "../../src/hash/digest.ts";

function bytesOf(seed: number, size: number): Uint8Array {
  const out = new Uint8Array(size);
  for (let i = 0; i < size; i++) out[i] = (seed * 31 + i * 7) & 0xff;
  return out;
}

Deno.test("kept connections: GETs in a row, concurrent GETs, long names and errors", async () => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path);
  const guard = fdGuard();
  {
    await using setup = new Client({ socket: broker.socket, jobId: null });
    const objects: { id: bigint; name: string; data: Uint8Array }[] = [];
    for (let i = 0; i < 6; i++) {
      // The last name is longer than the client's read-ahead buffer (4 KiB).
      const name = i === 5 ? `long-${"n".repeat(5000)}` : `obj-${i}`;
      const data = bytesOf(i, 100 + i * 1000);
      const { id } = await setup.put(data, { name });
      objects.push({ id, name, data });
    }
    const check = (
      obj: { id: bigint; name: string; size: number; digest: string; bytes(): Uint8Array },
      i: number,
    ): void => {
      const want = objects[i];
      if (want === undefined) throw new Error(`no object ${i}`);
      assertEquals(obj.id, want.id);
      assertEquals(obj.name, want.name);
      assertEquals(obj.size, want.data.length);
      assertEquals(obj.digest, digestBytes(want.data));
      assertEquals(obj.bytes(), want.data);
    };

    // One client, one request at a time: the same kept connection, on the calling thread.
    await using one = new Client({ socket: broker.socket, jobId: null });
    for (let round = 0; round < 50; round++) {
      const i = round % objects.length;
      const want = objects[i];
      if (want === undefined) throw new Error("unreachable");
      using obj = round % 2 === 0 ? await one.get(want.id) : await one.get({ name: want.name });
      check(obj, i);
    }

    // A missing object between good ones: a BrokerError, and the next request still works.
    await rejects(one.get(999_999n), (e: unknown) => {
      ok(e instanceof BrokerError && e.status === Status.NOT_FOUND, String(e));
      return true;
    });
    using again = await one.get(objects[0]?.id ?? 0n);
    check(again, 0);

    // Several clients, and one client's concurrent calls, with misses among them.
    const clients = Array.from(
      { length: 4 },
      () => new Client({ socket: broker.socket, jobId: null }),
    );
    try {
      const work: Promise<void>[] = [];
      for (let k = 0; k < 4; k++) {
        const client = clients[k];
        if (client === undefined) throw new Error("unreachable");
        work.push((async () => {
          for (let round = 0; round < 30; round++) {
            const i = (k + round) % objects.length;
            const want = objects[i];
            if (want === undefined) throw new Error("unreachable");
            if (round % 7 === 3) {
              await rejects(client.get({ name: `missing-${k}-${round}` }), BrokerError);
              continue;
            }
            using obj = await client.get(want.id);
            check(obj, i);
          }
        })());
      }
      for (let j = 0; j < 8; j++) {
        const i = j % objects.length;
        work.push(
          one.get(objects[i]?.id ?? 0n).then((obj) => {
            using o = obj;
            check(o, i);
          }),
        );
      }
      await Promise.all(work);
    } finally {
      for (const c of clients) c.close();
    }
  }
  await guard.waitClean("after the clients closed");
});
