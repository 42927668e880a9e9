/**
 * GET, LIST and DROP over raw protocol v1 against a real broker subprocess: OK replies byte for
 * byte (including the descriptor a GET hands out), every error text and status of PROTOCOL.md
 * §3.3-3.6 with its audit record, and the LIST format and --max-list-bytes boundary.
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
import {
  assertAudit,
  assertErrorReply,
  assertIdReply,
  bin,
  closeFds,
  fdInfo,
  listLine,
  listRequest,
  putRequest,
  readSome,
  replyHeader,
  sealsOf,
  selectRequest,
  Session,
  shutdownRead,
  shutdownWrite,
  ST,
  T,
  tryWrite,
} from "../support/wire.ts";
import { Cmd, MAGIC } from "../../src/protocol/wire.ts";
import { tryFstat } from "../../src/sys/fd.ts";

const O_ACCMODE = 3;
const O_RDONLY = 0;
const O_RDWR = 2;
const EBADF = 9;
const EPERM = 1;

Deno.test("GET hands out the object with a new sealed descriptor of its own", async (t) => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path);
  const s = new Session(broker);
  const data = enc("0123456789");
  const digest = digestOf(data);
  using publisher = sealedMemfd(data);
  const fds: number[] = [];
  try {
    await t.step("the object is published as id 1", async () => {
      const { reply } = await s.exchange(putRequest("obj", data), [publisher.fd]);
      assertIdReply(reply, Cmd.PUT, 1, 10);
    });

    await t.step(
      "GET by id replies with id, size, name_len, text_len 71, then name and digest, and one descriptor",
      async () => {
        const { reply, line } = await s.exchange(selectRequest(Cmd.GET, { id: 1 }));
        fds.push(...reply.fds);
        assertEquals(
          { header: reply.header, body: bin(reply.body), fds: reply.fds.length },
          {
            header: replyHeader({
              cmd: Cmd.GET,
              objectId: 1n,
              size: 10n,
              nameLen: 3,
              textLen: 71,
            }),
            body: "obj" + digest,
            fds: 1,
          },
        );
        assertAudit(line, {
          op: "get",
          result: "ok",
          selector: "id",
          object_id: 1,
          name: "obj",
          size: 10,
          digest,
        });
      },
    );

    await t.step(
      "the descriptor is opened O_RDWR like the C broker's, writing fails with EPERM (the seals), and it carries the four seals",
      () => {
        const fd = fds[0] ?? -1;
        assertEquals(fdInfo(fd).flags & O_ACCMODE, O_RDWR);
        assertEquals(tryWrite(fd), { result: -1, errno: EPERM });
        assertEquals(sealsOf(fd) & 0xf, 0xf);
      },
    );

    await t.step(
      "the descriptor is the same inode as the publisher's memfd and reads the same bytes",
      () => {
        const fd = fds[0] ?? -1;
        const a = tryFstat(fd);
        const b = tryFstat(publisher.fd);
        ok(typeof a !== "number" && typeof b !== "number");
        assertEquals([a.ino, a.size], [b.ino, 10n]);
        assertEquals(bin(readSome(fd, 3)), "012");
      },
    );

    await t.step("GET by name gives a second descriptor with its own offset at 0", async () => {
      const { reply, line } = await s.exchange(selectRequest(Cmd.GET, { name: "obj", job: "zz" }));
      fds.push(...reply.fds);
      assertEquals([reply.header.objectId, reply.fds.length], [1n, 1]);
      const fd2 = fds[1] ?? -1;
      assertEquals(fdInfo(fd2).pos, 0);
      assertEquals(fdInfo(fds[0] ?? -1).pos, 3);
      assertEquals(bin(readSome(fd2, 100)), "0123456789");
      assertEquals(bin(readSome(fds[0] ?? -1, 100)), "3456789");
      assertAudit(line, {
        op: "get",
        result: "ok",
        selector: "name",
        object_id: 1,
        name: "obj",
        size: 10,
        digest,
        job_id: "zz",
      });
    });

    await t.step(
      "a GET whose reply cannot be sent is recorded as error `failed to send object response`",
      async () => {
        const base = await s.settledFdCount();
        using c = await RawClient.connect(s.socket);
        shutdownRead(c);
        await c.send(selectRequest(Cmd.GET, { id: 1, job: "gone" }));
        assertAudit(await s.nextAudit(), {
          op: "get",
          result: "error",
          selector: "id",
          object_id: 1,
          name: "obj",
          size: 10,
          digest,
          job_id: "gone",
          error: "failed to send object response",
        });
        c.close();
        await s.expectFdCount(base);
      },
    );

    await t.step(
      "the broker kept no reply descriptor: one object, one stored descriptor",
      async () => {
        const base = await s.settledFdCount();
        const { reply } = await s.exchange(selectRequest(Cmd.GET, { id: 1 }));
        closeFds(reply.fds);
        await s.expectFdCount(base);
      },
    );
  } finally {
    closeFds(fds);
  }
});

Deno.test("with --read-only-fds GET hands out an O_RDONLY descriptor (writes fail with EBADF)", async () => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path, ["--read-only-fds"]);
  const s = new Session(broker);
  const data = enc("0123456789");
  using publisher = sealedMemfd(data);
  const { reply } = await s.exchange(putRequest("obj", data), [publisher.fd]);
  assertIdReply(reply, Cmd.PUT, 1, 10);
  const got = await s.exchange(selectRequest(Cmd.GET, { id: 1 }));
  const fd = got.reply.fds[0] ?? -1;
  try {
    assertEquals(got.reply.fds.length, 1);
    assertEquals(fdInfo(fd).flags & O_ACCMODE, O_RDONLY);
    assertEquals(tryWrite(fd), { result: -1, errno: EBADF });
    assertEquals(sealsOf(fd) & 0xf, 0xf);
  } finally {
    closeFds(got.reply.fds);
  }
});

Deno.test("names resolve to their newest version, and DROP by name uncovers the previous one", async (t) => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path);
  const s = new Session(broker);
  const versions = ["one", "two!", "three"].map((v) => enc(v));

  await t.step("three versions of `v` get ids 1, 2 and 3", async () => {
    for (const [i, v] of versions.entries()) {
      assertIdReply((await s.put("v", v)).reply, Cmd.PUT, i + 1, v.length);
    }
  });

  await t.step("GET by name returns id 3 and its bytes", async () => {
    const { reply } = await s.exchange(selectRequest(Cmd.GET, { name: "v" }));
    try {
      assertEquals([reply.header.objectId, reply.header.size], [3n, 5n]);
      assertEquals(bin(readSome(reply.fds[0] ?? -1, 10)), "three");
    } finally {
      closeFds(reply.fds);
    }
  });

  await t.step('DROP by name drops id 3 and records selector "name"', async () => {
    const { reply, line } = await s.drop({ name: "v" });
    assertIdReply(reply, Cmd.DROP, 3, 5);
    assertAudit(line, {
      op: "drop",
      result: "ok",
      selector: "name",
      object_id: 3,
      name: "v",
      size: 5,
      digest: digestOf(enc("three")),
    });
  });

  await t.step("GET by name now returns id 2; after DROP of id 2 it returns id 1", async () => {
    assertEquals((await s.get({ name: "v" })).reply.header.objectId, 2n);
    assertIdReply((await s.drop({ id: 2 })).reply, Cmd.DROP, 2, 4);
    assertEquals((await s.get({ name: "v" })).reply.header.objectId, 1n);
  });

  await t.step("GET of the dropped id 3 is `object not found`", async () => {
    assertErrorReply((await s.get({ id: 3 })).reply, Cmd.GET, ST.NOT_FOUND, T.notFound);
  });
});

Deno.test("GET, DROP, LIST and header errors get the exact statuses, texts and audit records", async (t) => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path);
  const s = new Session(broker);
  const pub = enc("public");
  const sec = enc("secret");

  await t.step("setup: `pub` (id 1, unowned) and `sec` (id 2, owner a)", async () => {
    assertIdReply((await s.put("pub", pub)).reply, Cmd.PUT, 1, 6);
    assertIdReply((await s.put("sec", sec, { job: "a" })).reply, Cmd.PUT, 2, 6);
  });

  for (const [op, cmd] of [["get", Cmd.GET], ["drop", Cmd.DROP]] as const) {
    const OP = op.toUpperCase();
    const bad = { op, result: "bad_request" };

    await t.step(
      `${OP} with both an id and a name gets \`specify object id or name, not both\` and records the id`,
      async () => {
        const { reply, line } = await s.exchange(selectRequest(cmd, { id: 1, name: "pub" }));
        assertErrorReply(reply, cmd, ST.BAD_REQUEST, T.bothSelectors);
        assertAudit(line, { ...bad, object_id: 1, error: T.bothSelectors });
      },
    );

    await t.step(
      `${OP} with neither an id nor a name gets \`missing object selector\``,
      async () => {
        const { reply, line } = await s.exchange(selectRequest(cmd, { job: "a" }));
        assertErrorReply(reply, cmd, ST.BAD_REQUEST, T.noSelector);
        assertAudit(line, { ...bad, error: T.noSelector });
      },
    );

    await t.step(`${OP} with name_len 65537 gets \`name too long\``, async () => {
      const { reply, line } = await s.exchange(request({ cmd, nameLen: 65537 }));
      assertErrorReply(reply, cmd, ST.BAD_REQUEST, T.nameTooLong);
      assertAudit(line, { ...bad, selector: "name", error: T.nameTooLong });
    });

    await t.step(
      `${OP} by id with job_len 257 gets \`job id too long\` with selector "id"`,
      async () => {
        const { reply, line } = await s.exchange(request({ cmd, objectId: 1n, jobLen: 257 }));
        assertErrorReply(reply, cmd, ST.BAD_REQUEST, T.jobTooLong);
        assertAudit(line, { ...bad, selector: "id", error: T.jobTooLong });
      },
    );

    await t.step(
      `${OP} by name with job_len 257 gets \`job id too long\` with selector "name"`,
      async () => {
        const { reply, line } = await s.exchange(request({ cmd, nameLen: 3, jobLen: 257 }, "pub"));
        assertErrorReply(reply, cmd, ST.BAD_REQUEST, T.jobTooLong);
        assertAudit(line, { ...bad, selector: "name", error: T.jobTooLong });
      },
    );

    await t.step(
      `${OP} by id with a 4 GiB length sum gets \`request payload exceeds broker limit\` with selector "name"`,
      async () => {
        const { reply, line } = await s.exchange(
          request({ cmd, objectId: 1n, textLen: 0xffffffff, jobLen: 1 }),
        );
        assertErrorReply(reply, cmd, ST.BAD_REQUEST, T.requestTooLarge);
        assertAudit(line, { ...bad, selector: "name", error: T.requestTooLarge });
      },
    );

    await t.step(
      `${OP} whose client half-closes inside the name gets \`failed to read object name\``,
      async () => {
        using c = await RawClient.connect(s.socket);
        await c.send(request({ cmd, nameLen: 5 }, "pu"));
        shutdownWrite(c);
        assertErrorReply(await c.reply(), cmd, ST.BAD_REQUEST, T.readName);
        assertAudit(await s.nextAudit(), { ...bad, selector: "name", error: T.readName });
      },
    );

    await t.step(
      `${OP} by id whose client half-closes inside the job gets \`failed to read job id\` with the requested id`,
      async () => {
        using c = await RawClient.connect(s.socket);
        await c.send(request({ cmd, objectId: 999n, jobLen: 4 }, "ab"));
        shutdownWrite(c);
        assertErrorReply(await c.reply(), cmd, ST.BAD_REQUEST, T.readJob);
        assertAudit(await s.nextAudit(), {
          ...bad,
          selector: "id",
          object_id: 999,
          error: T.readJob,
        });
      },
    );

    await t.step(
      `${OP} by name whose job starts with NUL gets \`job id must not be empty\` with the requested name`,
      async () => {
        const { reply, line } = await s.exchange(
          selectRequest(cmd, { name: "nope", job: new Uint8Array([0, 0x61]) }),
        );
        assertErrorReply(reply, cmd, ST.BAD_REQUEST, T.emptyJob);
        assertAudit(line, { ...bad, selector: "name", name: "nope", error: T.emptyJob });
      },
    );

    await t.step(
      `${OP} of a missing id gets status 2 \`object not found\` with the id and the caller`,
      async () => {
        const { reply, line } = await s.exchange(selectRequest(cmd, { id: 999, job: "a" }));
        assertErrorReply(reply, cmd, ST.NOT_FOUND, T.notFound);
        assertAudit(line, {
          op,
          result: "not_found",
          selector: "id",
          object_id: 999,
          job_id: "a",
          error: T.notFound,
        });
      },
    );

    await t.step(
      `${OP} of id 2^64-1 gets status 2 and records the id in full decimal`,
      async () => {
        const { reply, line } = await s.exchange(
          selectRequest(cmd, { id: 0xffffffffffffffffn }),
        );
        assertErrorReply(reply, cmd, ST.NOT_FOUND, T.notFound);
        assertEquals(line.includes(`,"object_id":18446744073709551615,`), true, line);
      },
    );

    await t.step(
      `${OP} of a missing name gets status 2 \`object not found\` with the name`,
      async () => {
        const { reply, line } = await s.exchange(selectRequest(cmd, { name: "nope" }));
        assertErrorReply(reply, cmd, ST.NOT_FOUND, T.notFound);
        assertAudit(line, {
          op,
          result: "not_found",
          selector: "name",
          name: "nope",
          error: T.notFound,
        });
      },
    );

    await t.step(
      `${OP} of a's object by job b gets status 4 \`access denied\` with the object's fields`,
      async () => {
        for (const sel of [{ id: 2 }, { name: "sec" }]) {
          const { reply, line } = await s.exchange(selectRequest(cmd, { ...sel, job: "b" }));
          assertErrorReply(reply, cmd, ST.FORBIDDEN, T.accessDenied);
          assertAudit(line, {
            op,
            result: "forbidden",
            selector: "id" in sel ? "id" : "name",
            object_id: 2,
            name: "sec",
            size: 6,
            digest: digestOf(sec),
            job_id: "b",
            error: T.accessDenied,
          });
        }
      },
    );
  }

  const listBad = { op: "list", result: "bad_request" };

  await t.step("LIST with job_len 257 gets `job id too long` with an all-null record", async () => {
    const { reply, line } = await s.exchange(request({ cmd: Cmd.LIST, jobLen: 257 }));
    assertErrorReply(reply, Cmd.LIST, ST.BAD_REQUEST, T.jobTooLong);
    assertAudit(line, { ...listBad, error: T.jobTooLong });
  });

  await t.step(
    "LIST with name_len 0xFFFFFFFF and text_len 1 gets `request payload exceeds broker limit`",
    async () => {
      const { reply, line } = await s.exchange(
        request({ cmd: Cmd.LIST, nameLen: 0xffffffff, textLen: 1 }),
      );
      assertErrorReply(reply, Cmd.LIST, ST.BAD_REQUEST, T.requestTooLarge);
      assertAudit(line, { ...listBad, error: T.requestTooLarge });
    },
  );

  await t.step(
    "LIST whose unused lengths sum to exactly 0xFFFFFFFF is answered with the listing",
    async () => {
      const { reply } = await s.exchange(request({ cmd: Cmd.LIST, textLen: 0xffffffff }));
      assertEquals([reply.header.cmd, reply.header.status], [Cmd.LIST, 0]);
      assertEquals(bin(reply.body).split("\n").length, 3);
    },
  );

  await t.step(
    "LIST whose client half-closes inside the job gets `failed to read job id`",
    async () => {
      using c = await RawClient.connect(s.socket);
      await c.send(request({ cmd: Cmd.LIST, jobLen: 4 }, "ab"));
      shutdownWrite(c);
      assertErrorReply(await c.reply(), Cmd.LIST, ST.BAD_REQUEST, T.readJob);
      assertAudit(await s.nextAudit(), { ...listBad, error: T.readJob });
    },
  );

  await t.step("LIST whose job starts with NUL gets `job id must not be empty`", async () => {
    const { reply, line } = await s.exchange(listRequest(new Uint8Array([0, 0x61])));
    assertErrorReply(reply, Cmd.LIST, ST.BAD_REQUEST, T.emptyJob);
    assertAudit(line, { ...listBad, error: T.emptyJob });
  });

  const unknown = { op: "unknown", result: "bad_request" };

  await t.step(
    "a header with a bad magic gets cmd 0, status 3 `invalid protocol header`",
    async () => {
      const { reply, line } = await s.exchange(request({ magic: 0x12345678, cmd: Cmd.LIST }));
      assertErrorReply(reply, 0, ST.BAD_REQUEST, T.badHeader);
      assertAudit(line, { ...unknown, error: T.badHeader });
    },
  );

  await t.step("a header with the magic byte-swapped gets `invalid protocol header`", async () => {
    const swapped = ((MAGIC & 0xff) << 24 | (MAGIC >>> 24) | (MAGIC >> 8 & 0xff) << 8 |
      (MAGIC >> 16 & 0xff) << 16) >>> 0;
    const { reply } = await s.exchange(request({ magic: swapped, cmd: Cmd.LIST }));
    assertErrorReply(reply, 0, ST.BAD_REQUEST, T.badHeader);
  });

  for (const version of [0, 2]) {
    await t.step(
      `a header with version ${version} gets cmd 0, status 3 \`invalid protocol header\``,
      async () => {
        const { reply, line } = await s.exchange(
          request({ version, cmd: Cmd.GET, objectId: 1n, jobLen: 0 }),
        );
        assertErrorReply(reply, 0, ST.BAD_REQUEST, T.badHeader);
        assertAudit(line, { ...unknown, error: T.badHeader });
      },
    );
  }

  await t.step("cmd 0 is echoed as cmd 0 with `unknown command` and a null object_id", async () => {
    const { reply, line } = await s.exchange(request({ cmd: 0, objectId: 7n }));
    assertErrorReply(reply, 0, ST.BAD_REQUEST, T.unknownCommand);
    assertAudit(line, { ...unknown, error: T.unknownCommand });
  });

  for (const cmd of [5, 9, 65535]) {
    await t.step(
      `cmd ${cmd} is echoed with \`unknown command\` and object_id ${cmd} in the record`,
      async () => {
        const { reply, line } = await s.exchange(request({ cmd }));
        assertErrorReply(reply, cmd, ST.BAD_REQUEST, T.unknownCommand);
        assertAudit(line, { ...unknown, object_id: cmd, error: T.unknownCommand });
      },
    );
  }

  await t.step("none of these requests dropped or changed an object", async () => {
    const { text } = await s.list();
    assertEquals(
      text,
      listLine(1, null, null, 6, digestOf(pub), "pub") +
        listLine(2, "a", null, 6, digestOf(sec), "sec"),
    );
  });
});

Deno.test("LIST prints one exact tab-separated line per visible object", async (t) => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path);
  const s = new Session(broker);
  const d = (x: string): string => digestOf(enc(x));

  await t.step(
    "an empty store lists as status 0, text_len 0, no body, and records count 0",
    async () => {
      const { reply, line } = await s.list();
      assertEquals(
        { header: reply.header, body: reply.body.length, fds: reply.fds.length },
        { header: replyHeader({ cmd: Cmd.LIST }), body: 0, fds: 0 },
      );
      assertAudit(line, { op: "list", result: "ok", size: 0, count: 0 });
    },
  );

  await t.step("three objects with owners and allowed jobs list exactly, in id order", async () => {
    await s.putOk("alpha", enc("1"));
    await s.putOk("beta", enc("22"), { job: "x" });
    await s.putOk("gamma", enc("333"), { job: "x", allow: "y" });
    const { reply, text, line } = await s.list();
    const expected = listLine(1, null, null, 1, d("1"), "alpha") +
      listLine(2, "x", null, 2, d("22"), "beta") +
      listLine(3, "x", "y", 3, d("333"), "gamma");
    assertEquals(text, expected);
    assertEquals(reply.header, replyHeader({ cmd: Cmd.LIST, textLen: expected.length }));
    assertAudit(line, { op: "list", result: "ok", size: 3, count: 3 });
  });

  await t.step(
    "LIST as job y shows the unowned object and the one y may read; the record carries y",
    async () => {
      const { text, line } = await s.list("y");
      assertEquals(
        text,
        listLine(1, null, null, 1, d("1"), "alpha") + listLine(3, "x", "y", 3, d("333"), "gamma"),
      );
      assertAudit(line, { op: "list", result: "ok", size: 2, count: 2, job_id: "y" });
    },
  );

  await t.step(
    "a name holding a tab or a newline is refused, so LIST lines stay whole (D12, issue 10)",
    async () => {
      const { reply } = await s.put("t\tb\nc", enc("4444"));
      assertEquals(
        [reply.header.status, bin(reply.body)],
        [3, "object name must not contain control byte 0x09 (at byte 1)"],
      );
      const { text } = await s.list("z");
      assertEquals(text, listLine(1, null, null, 1, d("1"), "alpha"));
    },
  );
});

Deno.test("--max-list-bytes 288 holds exactly three 96-byte lines and 287 holds two", async (t) => {
  using dir = tempDir();
  const [b288, b287] = await Promise.all([
    BrokerProcess.start(dir.path, ["--max-list-bytes", "288"]),
    BrokerProcess.start(dir.path, ["--max-list-bytes", "287"]),
  ]);
  await using _a = b288;
  await using _b = b287;
  const s288 = new Session(b288);
  const s287 = new Session(b287);
  const five = enc("fives");
  const line = (id: number, name: string, owner: string | null = null): string =>
    listLine(id, owner, null, 5, digestOf(five), name);

  await t.step("each example line is 96 bytes", () => {
    assertEquals(line(1, "a").length, 96);
  });

  await t.step("with objects a..c, --max-list-bytes 288 lists all 288 bytes", async () => {
    for (const n of ["a", "b", "c"]) {
      await s288.putOk(n, five);
      await s287.putOk(n, five);
    }
    const { reply, text } = await s288.list();
    assertEquals(reply.header, replyHeader({ cmd: Cmd.LIST, textLen: 288 }));
    assertEquals(text, line(1, "a") + line(2, "b") + line(3, "c"));
  });

  await t.step(
    "with the same objects, --max-list-bytes 287 gets status 1 `list response too large`",
    async () => {
      const { reply, line: rec } = await s287.list();
      assertErrorReply(reply, Cmd.LIST, ST.ERR, T.listTooLarge);
      assertAudit(rec, {
        op: "list",
        result: "error",
        size: 0,
        count: 0,
        error: T.listTooLarge,
      });
    },
  );

  await t.step(
    "a fourth object owned by o makes the 288 broker refuse, with job j in the record",
    async () => {
      await s288.putOk("d", five, { job: "o" });
      const { reply, line: rec } = await s288.list("j");
      assertEquals(reply.header.status, 0);
      const refused = await s288.list();
      assertErrorReply(refused.reply, Cmd.LIST, ST.ERR, T.listTooLarge);
      assertAudit(refused.line, {
        op: "list",
        result: "error",
        size: 0,
        count: 0,
        error: T.listTooLarge,
      });
      const asO = await s288.list("o");
      assertErrorReply(asO.reply, Cmd.LIST, ST.ERR, T.listTooLarge);
      assertAudit(asO.line, {
        op: "list",
        result: "error",
        size: 0,
        count: 0,
        job_id: "o",
        error: T.listTooLarge,
      });
      assertAudit(rec, { op: "list", result: "ok", size: 3, count: 3, job_id: "j" });
    },
  );
});
