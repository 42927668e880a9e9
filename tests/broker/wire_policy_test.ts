/**
 * The job policy of PROTOCOL.md §3.7 against a real broker subprocess (GET, LIST and DROP for
 * every kind of object and caller), the D9 name-shadowing rule that is kept on purpose, and the
 * byte-exact escaping of names and job ids in the audit log (§4).
 */

import { assertEquals, ok } from "../support/assert.ts";
import {
  BrokerProcess,
  digestOf,
  enc,
  RawClient,
  sealedMemfd,
  tempDir,
} from "../support/harness.ts";
import { waitFor } from "../support/wait.ts";
import {
  assertAudit,
  assertErrorReply,
  assertIdReply,
  bin,
  cat,
  closeFds,
  listRequest,
  putRequest,
  RawStdoutBroker,
  selectRequest,
  Session,
  ST,
  T,
  unbin,
} from "../support/wire.ts";
import { Cmd } from "../../src/protocol/wire.ts";

Deno.test("the job policy of §3.7 decides GET, LIST and DROP for every owner and caller", async (t) => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path);
  const s = new Session(broker);
  type Kind = "unowned" | "owner=a" | "owner=a allowed=b";
  const kinds: Record<Kind, { job?: string; allow?: string }> = {
    "unowned": {},
    "owner=a": { job: "a" },
    "owner=a allowed=b": { job: "a", allow: "b" },
  };
  const callers = [null, "a", "b", "c"] as const;
  const name = (c: string | null): string => c ?? "unscoped";
  // Expected GET visibility and DROP rights, callers in the order above.
  const canGet: Record<Kind, boolean[]> = {
    "unowned": [true, true, true, true],
    "owner=a": [true, true, false, false],
    "owner=a allowed=b": [true, true, true, false],
  };
  const canDrop: Record<Kind, boolean[]> = {
    "unowned": [true, true, true, true],
    "owner=a": [true, true, false, false],
    "owner=a allowed=b": [true, true, false, false],
  };
  const data = enc("policy");
  const ids: Record<Kind, number> = { "unowned": 1, "owner=a": 2, "owner=a allowed=b": 3 };

  await t.step("setup: one object of each kind, ids 1..3", async () => {
    for (const k of Object.keys(kinds) as Kind[]) {
      assertEquals(await s.putOk(`obj-${ids[k]}`, data, kinds[k]), ids[k]);
    }
  });

  for (const k of Object.keys(kinds) as Kind[]) {
    for (const [i, caller] of callers.entries()) {
      const want = canGet[k][i] ?? false;
      await t.step(
        `GET of a ${k} object by ${name(caller)} gives status ${want ? 0 : 4}`,
        async () => {
          const { reply, line } = await s.get({ id: ids[k], ...(caller ? { job: caller } : {}) });
          if (want) {
            assertEquals([reply.header.status, reply.header.objectId], [0, BigInt(ids[k])]);
          } else {
            assertErrorReply(reply, Cmd.GET, ST.FORBIDDEN, T.accessDenied);
          }
          assertEquals(JSON.parse(line).result, want ? "ok" : "forbidden");
        },
      );
    }
  }

  for (const [i, caller] of callers.entries()) {
    await t.step(`LIST by ${name(caller)} shows exactly the objects it may GET`, async () => {
      const { text } = await s.list(caller ?? undefined);
      const visibleIds = (Object.keys(kinds) as Kind[]).filter((k) => canGet[k][i]).map((k) =>
        String(ids[k])
      );
      assertEquals(
        text.split("\n").filter((l) => l !== "").map((l) => l.split("\t")[0]),
        visibleIds,
      );
    });
  }

  for (const k of Object.keys(kinds) as Kind[]) {
    for (const [i, caller] of callers.entries()) {
      const want = canDrop[k][i] ?? false;
      await t.step(
        `DROP of a fresh ${k} object by ${name(caller)} gives status ${want ? 0 : 4}`,
        async () => {
          const id = await s.putOk(`drop-${k}`, data, kinds[k]);
          const { reply, line } = await s.drop({ id, ...(caller ? { job: caller } : {}) });
          if (want) {
            assertIdReply(reply, Cmd.DROP, id, data.length);
            assertAudit(line, {
              op: "drop",
              result: "ok",
              selector: "id",
              object_id: id,
              name: `drop-${k}`,
              size: data.length,
              digest: digestOf(data),
              job_id: caller,
            });
          } else {
            assertErrorReply(reply, Cmd.DROP, ST.FORBIDDEN, T.accessDenied);
            // Still there: the unscoped caller removes it.
            assertIdReply((await s.drop({ id })).reply, Cmd.DROP, id, data.length);
          }
        },
      );
    }
  }
});

Deno.test("a newer object under the same name owned by another job hides the older one by name (D9, kept)", async (t) => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path);
  const s = new Session(broker);
  const older = enc("older");
  const newer = enc("newer!");

  await t.step("setup: unowned `shared` id 1, then `shared` owned by c as id 2", async () => {
    assertEquals(await s.putOk("shared", older), 1);
    assertEquals(await s.putOk("shared", newer, { job: "c" }), 2);
  });

  await t.step("job b can GET id 1 by id", async () => {
    assertEquals((await s.get({ id: 1, job: "b" })).reply.header.status, 0);
  });

  await t.step(
    "job b's GET by name resolves to id 2 and gets status 4 `access denied`",
    async () => {
      const { reply, line } = await s.get({ name: "shared", job: "b" });
      assertErrorReply(reply, Cmd.GET, ST.FORBIDDEN, T.accessDenied);
      assertAudit(line, {
        op: "get",
        result: "forbidden",
        selector: "name",
        object_id: 2,
        name: "shared",
        size: 6,
        digest: digestOf(newer),
        job_id: "b",
        error: T.accessDenied,
      });
    },
  );

  await t.step("job b's DROP by name gets status 4 too", async () => {
    assertErrorReply(
      (await s.drop({ name: "shared", job: "b" })).reply,
      Cmd.DROP,
      ST.FORBIDDEN,
      T.accessDenied,
    );
  });

  await t.step("once c drops its version, job b's GET by name returns id 1", async () => {
    assertIdReply((await s.drop({ name: "shared", job: "c" })).reply, Cmd.DROP, 2, 6);
    assertEquals((await s.get({ name: "shared", job: "b" })).reply.header.objectId, 1n);
  });
});

Deno.test("audit strings are escaped byte for byte, and stay valid UTF-8 JSON whatever a name holds", async (t) => {
  using dir = tempDir();
  await using broker = await RawStdoutBroker.start(`${dir.path}/raw.sock`);
  // \t \n " \ \b \f \r, 0x01, 0x1b, 0x1f, then 0x7f, UTF-8 é, and the invalid bytes 0xff 0x80.
  const nameBytes = cat(
    'q\t\n"\\\b\f\r',
    new Uint8Array([0x01, 0x1b, 0x1f, 0x7f]),
    "\u00e9",
    new Uint8Array([0xff, 0x80]),
    "z",
  );
  const escapedName = unbin(
    'q\\t\\n\\"\\\\\\b\\f\\r\\u0001\\u001b\\u001f\\u007f\xc3\xa9\\ufffd\\ufffdz',
  );
  const job = cat("j", new Uint8Array([0x02]), '"k');
  const data = enc("escape");

  const recordAfter = async (n: number): Promise<string> => {
    const lines = await waitFor(() => {
      const l = broker.lines();
      return l.length >= n + 1 ? l : null;
    }, { what: `audit line ${n}` });
    const line = lines[n];
    ok(line !== undefined, `no audit line ${n}`);
    const text = bin(line);
    const m = /^\{"ts_ns":\d+,/.exec(text);
    ok(m !== null, text);
    return "{" + text.slice(m[0].length);
  };

  await t.step(
    "a PUT of that name is refused (control bytes) and its record escapes DEL and invalid UTF-8",
    async () => {
      using m = sealedMemfd(data);
      using c = await RawClient.connect(broker.socket);
      await c.send(putRequest(nameBytes, data, { job }), [m.fd]);
      const reply = await c.reply();
      const why = "object name must not contain control byte 0x09 (at byte 1)";
      assertEquals([reply.header.status, bin(reply.body)], [3, why]);
      assertEquals(
        await recordAfter(1),
        `{"op":"put","operation":"put","result":"bad_request","selector":"name","object_id":null,"name":"${
          bin(escapedName)
        }","size":6,"count":null,"digest":null,"job_id":null,"error":"${why}"}`,
      );
    },
  );

  await t.step("a GET by that name is not found and records it escaped the same way", async () => {
    using c = await RawClient.connect(broker.socket);
    await c.send(selectRequest(Cmd.GET, { name: nameBytes }));
    const reply = await c.reply();
    closeFds(reply.fds);
    assertEquals(reply.header.status, 2);
    assertEquals(
      await recordAfter(2),
      `{"op":"get","operation":"get","result":"not_found","selector":"name","object_id":null,"name":"${
        bin(escapedName)
      }","size":null,"count":null,"digest":null,"job_id":null,"error":"object not found"}`,
    );
  });

  await t.step(
    "a job id with a control byte is refused in a LIST, and not echoed in the record",
    async () => {
      using c = await RawClient.connect(broker.socket);
      await c.send(listRequest(job));
      const reply = await c.reply();
      assertEquals(
        [reply.header.status, bin(reply.body)],
        [3, "job id must not contain control byte 0x02 (at byte 1)"],
      );
      assertEquals(
        await recordAfter(3),
        `{"op":"list","operation":"list","result":"bad_request","selector":null,"object_id":null,"name":null,"size":null,"count":null,"digest":null,"job_id":null,"error":"job id must not contain control byte 0x02 (at byte 1)"}`,
      );
    },
  );
});
