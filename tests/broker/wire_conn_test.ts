/**
 * Connections against a real broker subprocess: stalled and half-sent requests never hold up
 * other clients (D3, D4), request timeouts, the client quota (D2), early rejections that reach
 * the client as text instead of a broken pipe (D1), refusing to take over a live socket (D15),
 * one request per connection, and the keep-alive extension.
 */

import { assertEquals, ok } from "../support/assert.ts";
import {
  BrokerProcess,
  CLI,
  CLI_PERMS,
  digestOf,
  enc,
  RawClient,
  request,
  sealedMemfd,
  tempDir,
} from "../support/harness.ts";
import { letTimePass, waitFor } from "../support/wait.ts";
import {
  assertAudit,
  assertErrorReply,
  assertIdReply,
  bin,
  cat,
  closeFds,
  filled,
  listLine,
  listRequest,
  preadAll,
  putRequest,
  replyHeader,
  selectRequest,
  Session,
  ST,
  T,
} from "../support/wire.ts";
import { Cmd, Flag, withExt } from "../../src/protocol/wire.ts";
import { bindUnix, sockaddrUn, unixSocket } from "../../src/sys/unix_socket.ts";
import { closeQuietly } from "../../src/ffi.ts";

/**
 * Run `memfdbus broker ARGS`, expecting it to exit on its own; a broker still running after
 * `timeoutMs` is killed and reported as code -1 (so a broker that wrongly starts cannot hang the
 * test).
 */
async function brokerMustExit(
  args: readonly string[],
  timeoutMs = 10000,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...CLI_PERMS, CLI, "broker", ...args],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGKILL");
    } catch {
      // Already gone.
    }
  }, timeoutMs);
  const out = await child.output();
  clearTimeout(timer);
  const dec = new TextDecoder();
  return {
    code: timedOut ? -1 : out.code,
    stdout: dec.decode(out.stdout),
    stderr: dec.decode(out.stderr),
  };
}

/** Send a LIST on a fresh connection and return the reply and how long it took (ms). */
async function timedList(socket: string): Promise<{ ms: number; status: number }> {
  const t0 = performance.now();
  using c = await RawClient.connect(socket);
  await c.send(listRequest());
  const r = await c.reply(20_000);
  return { ms: performance.now() - t0, status: r.header.status };
}

Deno.test("stalled and half-sent requests do not delay other clients (D3, D4)", async (t) => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path);
  const s = new Session(broker);
  await s.putOk("x", enc("x"));

  await t.step(
    "a client that sent 4 header bytes does not delay another client's LIST",
    async () => {
      using staller = await RawClient.connect(s.socket);
      await staller.send(listRequest().subarray(0, 4));
      await waitFor(() => broker.connections() === 1, { what: "the broker to accept the staller" });
      const { ms, status } = await timedList(s.socket);
      assertEquals(status, 0);
      // A broker that waited for the staller would never answer (the staller never sends more).
      ok(ms < 10_000, `LIST took ${ms.toFixed(0)} ms behind a stalled client`);
      await s.nextAudit();
    },
  );

  await t.step(
    "a PUT stalled in its body, an idle connection and a hung-up one do not delay LIST",
    async () => {
      using midBody = await RawClient.connect(s.socket);
      using idle = await RawClient.connect(s.socket);
      const gone = await RawClient.connect(s.socket);
      using m = sealedMemfd(enc("hello"));
      await midBody.send(cat(request({ cmd: Cmd.PUT, size: 5n, nameLen: 5, textLen: 71 }), "ab"), [
        m.fd,
      ]);
      gone.close();
      await waitFor(() => broker.connections() === 2, {
        what: "the broker to hold the mid-body and idle connections and close the hung-up one",
      });
      for (let i = 0; i < 3; i++) {
        const { ms, status } = await timedList(s.socket);
        assertEquals(status, 0);
        ok(ms < 10_000, `LIST ${i} took ${ms.toFixed(0)} ms`);
        await s.nextAudit();
      }
      void idle;
    },
  );

  await t.step(
    "closing the staller mid-body ends its PUT with `failed to read object name` in the log",
    async () => {
      assertAudit(await s.nextAudit(), {
        op: "put",
        result: "bad_request",
        selector: "name",
        size: 5,
        error: T.readName,
      });
      await s.assertNoNewAudit();
    },
  );
});

Deno.test("--request-timeout-ms 300 closes stalled clients and answers a stalled body", async (t) => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path, ["--request-timeout-ms", "300"]);
  const s = new Session(broker);

  await t.step(
    "a client that sent 4 header bytes is disconnected within 1 s, with no reply and no record",
    async () => {
      using c = await RawClient.connect(s.socket);
      const t0 = performance.now();
      await c.send(listRequest().subarray(0, 4));
      const rest = await c.readToEnd(3000);
      const ms = performance.now() - t0;
      assertEquals(rest.bytes.length, 0);
      ok(ms >= 250 && ms < 1000, `closed after ${ms.toFixed(0)} ms`);
      await s.assertNoNewAudit();
    },
  );

  await t.step("a client that connects and sends nothing is disconnected within 1 s", async () => {
    using c = await RawClient.connect(s.socket);
    const t0 = performance.now();
    assertEquals((await c.readToEnd(3000)).bytes.length, 0);
    const ms = performance.now() - t0;
    ok(ms >= 250 && ms < 1000, `closed after ${ms.toFixed(0)} ms`);
    await s.assertNoNewAudit(0);
  });

  await t.step(
    "a PUT stalled inside its name gets `failed to read object name` within 1 s",
    async () => {
      using c = await RawClient.connect(s.socket);
      using m = sealedMemfd(enc("hello"));
      const t0 = performance.now();
      await c.send(cat(request({ cmd: Cmd.PUT, size: 5n, nameLen: 5, textLen: 71 }), "ab"), [m.fd]);
      const reply = await c.reply(3000);
      const ms = performance.now() - t0;
      assertErrorReply(reply, Cmd.PUT, ST.BAD_REQUEST, T.readName);
      ok(ms >= 250 && ms < 1000, `answered after ${ms.toFixed(0)} ms`);
      assertEquals((await c.readToEnd()).bytes.length, 0);
      assertAudit(await s.nextAudit(), {
        op: "put",
        result: "bad_request",
        selector: "name",
        size: 5,
        error: T.readName,
      });
    },
  );

  await t.step("a prompt client is still served after the timeouts", async () => {
    assertEquals((await s.list()).reply.header.status, 0);
  });
});

Deno.test("--max-clients 1 rejects a second connection with cmd 0, status 1 `broker client quota exceeded` (D2)", async (t) => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path, ["--max-clients", "1"]);
  const s = new Session(broker);
  const quotaRecord = { op: "unknown", result: "error", error: T.clientQuota };

  await t.step(
    "while one idle connection is open, a LIST gets the quota reply and then end of stream",
    async () => {
      using idle = await RawClient.connect(s.socket);
      await waitFor(() => broker.connections() === 1, {
        what: "the broker to accept the idle one",
      });
      using c = await RawClient.connect(s.socket);
      try {
        await c.send(listRequest());
      } catch {
        // The reply below is what matters (D2).
      }
      assertErrorReply(await c.reply(), 0, ST.ERR, T.clientQuota);
      assertEquals((await c.readToEnd()).bytes.length, 0);
      assertAudit(await s.nextAudit(), quotaRecord);
      void idle;
    },
  );

  await t.step(
    "a PUT with a 60000-byte name over the quota also reads the quota reply",
    async () => {
      // The previous step's connections must be gone first, or one of them still holding the
      // slot would pass for the idle connection below.
      await waitFor(() => broker.connections() === 0, {
        what: "the broker to close the previous step's connections",
      });
      using idle = await RawClient.connect(s.socket);
      await waitFor(() => broker.connections() === 1, {
        what: "the broker to accept the idle one",
      });
      using c = await RawClient.connect(s.socket);
      using m = sealedMemfd(enc("hello"));
      try {
        await c.send(putRequest(filled(60000), enc("hello")), [m.fd]);
      } catch {
        // The reply below is what matters (D2).
      }
      assertErrorReply(await c.reply(), 0, ST.ERR, T.clientQuota);
      assertAudit(await s.nextAudit(), quotaRecord);
      void idle;
    },
  );

  await t.step("once the idle connection is gone, a LIST is served again", async () => {
    await waitFor(() => broker.connections() === 0, { what: "the broker to close the idle ones" });
    const { reply } = await s.exchange(listRequest());
    assertEquals(reply.header.status, 0);
  });
});

Deno.test("an early rejection with a large body in flight reaches the client as text, never EPIPE (D1)", async () => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path, ["--max-name-bytes", "8"]);
  const s = new Session(broker);
  const baseline = await s.settledFdCount();
  const data = enc("hello");
  const name = filled(60000, 0x6e);
  const whole = putRequest(name, data);
  const header = whole.subarray(0, 48);
  const body = whole.subarray(48);
  using m = sealedMemfd(data);
  const failures: string[] = [];
  for (let i = 0; i < 50; i++) {
    using c = await RawClient.connect(s.socket);
    try {
      if (i % 2 === 0) {
        await c.send(whole, [m.fd]);
      } else {
        // Header first; the broker rejects it at once. Then the body, in pieces, after a pause.
        await c.send(header, [m.fd]);
        await letTimePass(5); // a pause on purpose: the body comes after the rejection
        for (let off = 0; off < body.length; off += 16384) {
          await c.send(body.subarray(off, off + 16384));
        }
      }
    } catch (e) {
      failures.push(`run ${i}: ${(e as Error).message}`);
    }
    const reply = await c.reply();
    assertErrorReply(reply, Cmd.PUT, ST.BAD_REQUEST, T.nameOverLimit);
    assertAudit(await s.nextAudit(), {
      op: "put",
      result: "bad_request",
      selector: "name",
      size: 5,
      error: T.nameOverLimit,
    });
  }
  assertEquals(failures, []);
  await s.expectFdCount(baseline);
});

Deno.test("a second broker refuses a live broker's socket but replaces a stale one (D15)", async (t) => {
  using dir = tempDir();
  const path = `${dir.path}/shared.sock`;

  await t.step(
    "starting a second broker on a live socket exits 1 with `refusing to replace the socket of a running broker`",
    async () => {
      await using first = await BrokerProcess.start(dir.path, ["--socket", path]);
      const first_ = new Session(first);
      assertEquals(await first_.putOk("keep", enc("kept")), 1);
      const second = await brokerMustExit(["--socket", path]);
      assertEquals(
        { code: second.code, stdout: second.stdout, stderr: second.stderr },
        {
          code: 1,
          stdout: "",
          stderr: `refusing to replace the socket of a running broker: ${path}\n`,
        },
      );
      const { text } = await first_.list();
      assertEquals(text, listLine(1, null, null, 4, digestOf(enc("kept")), "keep"));
    },
  );

  await t.step("a stale socket file with no listener is replaced", async () => {
    try {
      Deno.removeSync(path);
    } catch {
      // The first broker unlinked it.
    }
    const fd = unixSocket(true);
    const addr = sockaddrUn(path);
    ok(addr !== null);
    bindUnix(fd, addr);
    closeQuietly(fd);
    ok(Deno.lstatSync(path).isSocket);
    await using b = await BrokerProcess.start(dir.path, ["--socket", path]);
    assertEquals((await new Session(b).list()).reply.header.status, 0);
  });

  await t.step(
    "a regular file at the path exits 1 with `refusing to unlink non-socket path` and is left alone",
    async () => {
      const file = `${dir.path}/plain`;
      Deno.writeTextFileSync(file, "data");
      const r = await brokerMustExit(["--socket", file]);
      assertEquals(
        { code: r.code, stdout: r.stdout, stderr: r.stderr },
        { code: 1, stdout: "", stderr: `refusing to unlink non-socket path: ${file}\n` },
      );
      assertEquals(Deno.readTextFileSync(file), "data");
    },
  );
});

Deno.test("one request per connection, unless the keep-alive flag is set", async (t) => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path);
  const s = new Session(broker);
  const data = enc("alive");
  const digest = digestOf(data);
  const KA = withExt(Flag.KEEP_ALIVE);
  // A kept-alive reply also advertises broker-computed digests.
  const KA_REPLY = withExt(Flag.KEEP_ALIVE | Flag.DIGEST);
  const line1 = listLine(1, null, null, 5, digest, "ka");

  await t.step("setup: object 1", async () => {
    assertEquals(await s.putOk("ka", data), 1);
  });

  await t.step(
    "without the flag the reply's reserved field is 0 and the broker closes after one reply",
    async () => {
      using c = await RawClient.connect(s.socket);
      await c.send(cat(listRequest(), listRequest()));
      const r = await c.reply();
      assertEquals(r.header, replyHeader({ cmd: Cmd.LIST, textLen: line1.length }));
      assertEquals((await c.readToEnd()).bytes.length, 0);
      assertAudit(await s.nextAudit(), { op: "list", result: "ok", size: 1, count: 1 });
      await s.assertNoNewAudit();
    },
  );

  await t.step(
    "LIST, GET and PUT with the flag share one connection and each reply has KEEP_ALIVE and DIGEST",
    async () => {
      using c = await RawClient.connect(s.socket);
      await c.send(listRequest(undefined, KA));
      const list = await c.reply();
      assertEquals(
        list.header,
        replyHeader({ cmd: Cmd.LIST, textLen: line1.length, reserved: KA_REPLY }),
      );
      assertEquals(bin(list.body), line1);
      await s.nextAudit();

      await c.send(selectRequest(Cmd.GET, { id: 1, reserved: KA }));
      const get = await c.reply();
      try {
        assertEquals(
          get.header,
          replyHeader({
            cmd: Cmd.GET,
            objectId: 1n,
            size: 5n,
            nameLen: 2,
            textLen: 71,
            reserved: KA_REPLY,
          }),
        );
        assertEquals([bin(get.body), get.fds.length], ["ka" + digest, 1]);
        assertEquals(bin(preadAll(get.fds[0] ?? -1, 10)), "alive");
      } finally {
        closeFds(get.fds);
      }
      await s.nextAudit();

      using m = sealedMemfd(data);
      await c.send(putRequest("ka2", data, { reserved: KA }), [m.fd]);
      const put = await c.reply();
      assertEquals(
        put.header,
        replyHeader({ cmd: Cmd.PUT, objectId: 2n, size: 5n, reserved: KA_REPLY }),
      );
      await s.nextAudit();

      // The last request leaves the flag out: answered with reserved 0, then closed.
      await c.send(selectRequest(Cmd.DROP, { id: 2 }));
      const drop = await c.reply();
      assertIdReply(drop, Cmd.DROP, 2, 5);
      assertEquals((await c.readToEnd()).bytes.length, 0);
      await s.nextAudit();
    },
  );

  await t.step(
    "a keep-alive LIST with 3 unread name bytes is answered (reserved 0) and then closed",
    async () => {
      using c = await RawClient.connect(s.socket);
      await c.send(cat(request({ cmd: Cmd.LIST, nameLen: 3, reserved: KA }), "xyz"));
      const r = await c.reply();
      assertEquals(r.header, replyHeader({ cmd: Cmd.LIST, textLen: line1.length }));
      assertEquals((await c.readToEnd()).bytes.length, 0);
      assertAudit(await s.nextAudit(), { op: "list", result: "ok", size: 1, count: 1 });
    },
  );

  await t.step(
    "a request's status field and reserved bits without the extension marker are ignored",
    async () => {
      // Arbitrary reserved values (even with the KEEP_ALIVE bit set) must not switch on an
      // extension: the reply says reserved 0 and the connection closes after one reply.
      for (const reserved of [0xfffffffe, 0xffffffff, 0xdeadbeef, Flag.KEEP_ALIVE]) {
        using c = await RawClient.connect(s.socket);
        await c.send(request({ cmd: Cmd.LIST, status: 12345, reserved }));
        const r = await c.reply();
        assertEquals(r.header, replyHeader({ cmd: Cmd.LIST, textLen: line1.length }));
        assertEquals(bin(r.body), line1);
        assertEquals((await c.readToEnd()).bytes.length, 0);
        await s.nextAudit();
      }
    },
  );

  await t.step(
    "a keep-alive request with a bad header is answered with reserved 0 and closed",
    async () => {
      using c = await RawClient.connect(s.socket);
      await c.send(request({ magic: 7, cmd: Cmd.LIST, reserved: KA }));
      assertErrorReply(await c.reply(), 0, ST.BAD_REQUEST, T.badHeader);
      assertEquals((await c.readToEnd()).bytes.length, 0);
      await s.nextAudit();
    },
  );
});
