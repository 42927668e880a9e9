/**
 * Descriptors against a real broker subprocess: extra SCM_RIGHTS descriptors are closed (D7),
 * descriptors handed to consumers outlive DROP and the broker itself, running out of
 * descriptors is answered rather than fatal (D6), and SIGTERM/SIGINT shut the broker down cleanly.
 */

import { assertEquals, ok } from "../support/assert.ts";
import {
  BrokerProcess,
  digestOf,
  enc,
  RawClient,
  request,
  sealedMemfd,
  tempDir,
} from "../support/harness.ts";
import { letTimePass } from "../support/wait.ts";
import {
  assertAudit,
  assertErrorReply,
  assertIdReply,
  bin,
  checkAuditLine,
  closeFds,
  listRequest,
  preadAll,
  putRequest,
  RawStdoutBroker,
  sealsOf,
  selectRequest,
  Session,
  ST,
  T,
} from "../support/wire.ts";
import { makePipe } from "../support/fds.ts";
import { Cmd } from "../../src/protocol/wire.ts";

Deno.test("extra descriptors in one SCM_RIGHTS message are closed and the request is handled (D7)", async (t) => {
  using dir = tempDir();
  // One descriptor per stored object: identical contents are not shared (dedup has its own tests).
  await using broker = await BrokerProcess.start(dir.path, ["--no-dedup"]);
  const s = new Session(broker);
  const baseline = await s.settledFdCount();
  const first = enc("first");
  const spare = enc("spare");

  await t.step("a PUT with two descriptors stores the first and closes the second", async () => {
    using a = sealedMemfd(first);
    using b = sealedMemfd(spare);
    const { reply } = await s.exchange(putRequest("two", first), [a.fd, b.fd]);
    assertIdReply(reply, Cmd.PUT, 1, 5);
    await s.expectFdCount(baseline + 1);
  });

  await t.step(
    "a PUT with three descriptors stores the first and closes the other two",
    async () => {
      using a = sealedMemfd(first);
      using b = sealedMemfd(spare);
      using c = sealedMemfd(spare);
      const { reply, line } = await s.exchange(putRequest("three", first), [a.fd, b.fd, c.fd]);
      assertIdReply(reply, Cmd.PUT, 2, 5);
      assertAudit(line, {
        op: "put",
        result: "ok",
        object_id: 2,
        name: "three",
        size: 5,
        digest: digestOf(first),
      });
      await s.expectFdCount(baseline + 2);
    },
  );

  await t.step("the stored objects hold the first descriptor's bytes", async () => {
    for (const id of [1, 2]) {
      const { reply } = await s.exchange(selectRequest(Cmd.GET, { id }));
      try {
        assertEquals(bin(preadAll(reply.fds[0] ?? -1, 100)), "first");
      } finally {
        closeFds(reply.fds);
      }
    }
  });

  await t.step(
    "a PUT whose first descriptor is a pipe is judged by the pipe, not the memfd after it",
    async () => {
      const [r, w] = makePipe();
      using m = sealedMemfd(first);
      try {
        const { reply } = await s.exchange(putRequest("pipe-first", first), [r, m.fd]);
        assertErrorReply(reply, Cmd.PUT, ST.BAD_REQUEST, T.notRegular);
      } finally {
        closeFds([r, w]);
      }
      await s.expectFdCount(baseline + 2);
    },
  );

  await t.step("a rejected PUT with three descriptors closes all three", async () => {
    using a = sealedMemfd(first);
    const { reply } = await s.exchange(
      putRequest("bad", first, { digest: digestOf(spare) }),
      [a.fd, a.fd, a.fd],
    );
    assertErrorReply(reply, Cmd.PUT, ST.BAD_REQUEST, T.digestMismatch);
    await s.expectFdCount(baseline + 2);
  });

  await t.step(
    "a GET carrying two descriptors is served normally and both are closed",
    async () => {
      using a = sealedMemfd(spare);
      const { reply } = await s.exchange(selectRequest(Cmd.GET, { id: 1 }), [a.fd, a.fd]);
      closeFds(reply.fds);
      assertEquals([reply.header.status, reply.header.objectId, reply.fds.length], [0, 1n, 1]);
      await s.expectFdCount(baseline + 2);
    },
  );

  await t.step(
    "a LIST carrying a descriptor is served normally and the descriptor closed",
    async () => {
      using a = sealedMemfd(spare);
      const { reply, line } = await s.exchange(listRequest(), [a.fd]);
      assertEquals([reply.header.status, bin(reply.body).split("\n").length], [0, 3]);
      assertAudit(line, { op: "list", result: "ok", size: 2, count: 2 });
      await s.expectFdCount(baseline + 2);
    },
  );

  await t.step(
    "a DROP carrying three descriptors drops the object and closes them all",
    async () => {
      using a = sealedMemfd(spare);
      const { reply } = await s.exchange(selectRequest(Cmd.DROP, { id: 2 }), [a.fd, a.fd, a.fd]);
      assertIdReply(reply, Cmd.DROP, 2, 5);
      await s.expectFdCount(baseline + 1);
    },
  );

  await t.step(
    "a bad header carrying a descriptor gets `invalid protocol header` and the descriptor closed",
    async () => {
      using a = sealedMemfd(spare);
      const { reply } = await s.exchange(request({ magic: 1, cmd: Cmd.PUT }), [a.fd]);
      assertErrorReply(reply, 0, ST.BAD_REQUEST, T.badHeader);
      await s.expectFdCount(baseline + 1);
    },
  );

  await t.step(
    "an unknown command carrying two descriptors gets `unknown command` and both closed",
    async () => {
      using a = sealedMemfd(spare);
      const { reply } = await s.exchange(request({ cmd: 9 }), [a.fd, a.fd]);
      assertErrorReply(reply, 9, ST.BAD_REQUEST, T.unknownCommand);
      await s.expectFdCount(baseline + 1);
    },
  );

  await t.step(
    "a PUT rejected at the header (`name too long`) closes its descriptors",
    async () => {
      using a = sealedMemfd(spare);
      const { reply } = await s.exchange(request({ cmd: Cmd.PUT, nameLen: 65537 }), [a.fd, a.fd]);
      assertErrorReply(reply, Cmd.PUT, ST.BAD_REQUEST, T.nameTooLong);
      await s.expectFdCount(baseline + 1);
    },
  );
});

Deno.test("the descriptor travels with the header, however the header is split", async (t) => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path);
  const s = new Session(broker);
  const data = enc("pieces");
  const whole = putRequest("pieces", data);

  await t.step(
    "a PUT whose header arrives in three pieces, the descriptor with the first, is accepted",
    async () => {
      using m = sealedMemfd(data);
      using c = await RawClient.connect(s.socket);
      // Pauses on purpose, so that the pieces arrive apart (a loaded machine may still merge them).
      await c.send(whole.subarray(0, 10), [m.fd]);
      await letTimePass(30);
      await c.send(whole.subarray(10, 30));
      await letTimePass(30);
      await c.send(whole.subarray(30));
      assertIdReply(await c.reply(), Cmd.PUT, 1, data.length);
      await s.nextAudit();
    },
  );

  await t.step(
    "a descriptor sent with the body instead of the header is closed: `missing memfd descriptor`",
    async () => {
      const baseline = await s.settledFdCount();
      using m = sealedMemfd(data);
      using c = await RawClient.connect(s.socket);
      await c.send(whole.subarray(0, 48));
      await letTimePass(50); // on purpose: the header arrives alone, without the descriptor
      await c.send(whole.subarray(48), [m.fd]);
      assertErrorReply(await c.reply(), Cmd.PUT, ST.BAD_REQUEST, T.missingFd);
      assertAudit(await s.nextAudit(), {
        op: "put",
        result: "bad_request",
        selector: "name",
        name: "pieces",
        size: data.length,
        digest: digestOf(data),
        error: T.missingFd,
      });
      await s.expectFdCount(baseline);
    },
  );
});

Deno.test("objects larger than one 1 MiB hash chunk are verified over their whole length", async (t) => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path);
  const s = new Session(broker);
  const big = new Uint8Array(3 * 1024 * 1024 + 17);
  for (let off = 0; off < big.length; off += 65536) {
    crypto.getRandomValues(big.subarray(off, Math.min(off + 65536, big.length)));
  }

  await t.step(
    "a 3 MiB object whose last byte differs from the claimed digest gets `digest mismatch`",
    async () => {
      const claimed = digestOf(big);
      const altered = big.slice();
      altered[altered.length - 1] = (altered[altered.length - 1] ?? 0) ^ 1;
      const { reply } = await s.put("big", altered, { digest: claimed });
      assertErrorReply(reply, Cmd.PUT, ST.BAD_REQUEST, T.digestMismatch);
    },
  );

  await t.step("the same object with its own digest is accepted and read back intact", async () => {
    assertIdReply((await s.put("big", big)).reply, Cmd.PUT, 1, big.length);
    const { reply } = await s.exchange(selectRequest(Cmd.GET, { name: "big" }));
    try {
      assertEquals(reply.header.size, BigInt(big.length));
      assertEquals(preadAll(reply.fds[0] ?? -1, big.length + 1), big);
    } finally {
      closeFds(reply.fds);
    }
  });
});

Deno.test("a consumer's descriptor keeps the bytes after DROP and after the broker stops", async (t) => {
  using dir = tempDir();
  const broker = await BrokerProcess.start(dir.path);
  await using _b = broker;
  const s = new Session(broker);
  const data = crypto.getRandomValues(new Uint8Array(60000));
  let held = -1;
  try {
    await t.step("publish and GET: the consumer holds the descriptor", async () => {
      assertEquals(await s.putOk("held", data), 1);
      const { reply } = await s.exchange(selectRequest(Cmd.GET, { id: 1 }));
      assertEquals(reply.fds.length, 1);
      held = reply.fds[0] ?? -1;
      assertEquals(preadAll(held, data.length + 1), data);
    });

    await t.step(
      "after DROP the object is gone from the broker but the held descriptor reads the same bytes",
      async () => {
        assertIdReply((await s.drop({ id: 1 })).reply, Cmd.DROP, 1, data.length);
        assertErrorReply((await s.get({ id: 1 })).reply, Cmd.GET, ST.NOT_FOUND, T.notFound);
        assertEquals(preadAll(held, data.length + 1), data);
        assertEquals(sealsOf(held) & 0xf, 0xf);
      },
    );

    await t.step(
      "after SIGTERM the broker exits 0 and the held descriptor still reads the same bytes",
      async () => {
        assertEquals((await broker.stop("SIGTERM")).code, 0);
        assertEquals(preadAll(held, data.length + 1), data);
      },
    );
  } finally {
    closeFds([held]);
  }
});

for (const signal of ["SIGTERM", "SIGINT"] as const) {
  Deno.test(`${signal} stops the broker with exit code 0, unlinks the socket and leaves complete audit lines`, async () => {
    using dir = tempDir();
    const socket = `${dir.path}/sig.sock`;
    const broker = await RawStdoutBroker.start(socket);
    await using _b = broker;
    // A few records in flight when the signal arrives.
    const s = sealedMemfd(enc("x"));
    try {
      for (let i = 0; i < 3; i++) {
        using c = await RawClient.connect(socket);
        await c.send(putRequest(`n${i}`, enc("x")), [s.fd]);
        assertEquals((await c.reply()).header.status, 0);
      }
    } finally {
      s.close();
    }
    broker.child.kill(signal);
    const status = await broker.child.status;
    await broker.done();
    assertEquals(status.code, 0);
    let gone = false;
    try {
      Deno.lstatSync(socket);
    } catch (e) {
      gone = e instanceof Deno.errors.NotFound;
    }
    assertEquals(gone, true, "socket file still present");
    const raw = broker.raw();
    assertEquals(raw[raw.length - 1], 0x0a, "stdout does not end with a newline");
    const lines = broker.lines().map((l) => new TextDecoder().decode(l));
    assertEquals(lines[0], `memfdbus broker listening on ${socket}`);
    assertEquals(lines.length, 4);
    for (const l of lines.slice(1)) assertEquals(checkAuditLine(l).result, "ok");
    assertEquals(broker.stderr(), "");
  });
}

Deno.test("a broker at its descriptor limit answers with an error, stays up and recovers (D6)", async (t) => {
  const which = await new Deno.Command("sh", {
    args: ["-c", "command -v prlimit"],
    stdout: "piped",
    stderr: "null",
  }).output();
  const wrap = which.code === 0
    ? ["prlimit", "--nofile=40:40", "--"]
    : ["sh", "-c", 'ulimit -n 40; exec "$0" "$@"'];
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path, ["--no-dedup"], { wrap });
  const s = new Session(broker);
  const data = enc("limit");
  const acked: number[] = [];
  let failure: { cmd: number; status: number; text: string } | null = null;

  await t.step("the broker runs with a hard limit of 40 descriptors", () => {
    const limits = Deno.readTextFileSync(`/proc/${broker.pid}/limits`);
    ok(/^Max open files\s+40\s+40\s/m.test(limits), limits);
  });

  await t.step(
    "PUTs succeed until one gets an error reply (status 1 with a broker text)",
    async () => {
      for (let i = 0; i < 40 && failure === null; i++) {
        const { reply } = await s.put(`o${i}`, data);
        if (reply.header.status === 0) {
          acked.push(Number(reply.header.objectId));
          continue;
        }
        failure = {
          cmd: reply.header.cmd,
          status: reply.header.status,
          text: bin(reply.body),
        };
        ok(
          ([T.fdLimit, T.objectQuota] as string[]).includes(failure.text),
          `unexpected failure text: ${failure.text}`,
        );
        assertErrorReply(reply, failure.cmd, ST.ERR, failure.text);
        ok(failure.cmd === Cmd.PUT || failure.cmd === 0, `unexpected cmd ${failure.cmd}`);
      }
      ok(failure !== null, "40 PUTs all succeeded under a 40-descriptor limit");
      ok(acked.length > 0, "no PUT succeeded at all");
      assertEquals(acked, acked.map((_, i) => i + 1));
    },
  );

  await t.step("the broker is still running and LIST shows every acknowledged object", async () => {
    const { reply, text } = await s.list();
    assertEquals(reply.header.status, 0);
    assertEquals(
      text.split("\n").filter((l) => l !== "").map((l) => Number(l.split("\t")[0])),
      acked,
    );
  });

  await t.step(
    "after dropping three objects new PUTs succeed again, with the next ids",
    async () => {
      for (const id of acked.slice(0, 3)) {
        assertIdReply((await s.drop({ id })).reply, Cmd.DROP, id, data.length);
      }
      const next = (acked[acked.length - 1] ?? 0) + 1;
      assertIdReply((await s.put("again", data)).reply, Cmd.PUT, next, data.length);
      assertIdReply((await s.put("again", data)).reply, Cmd.PUT, next + 1, data.length);
    },
  );
});
