/**
 * PUT over raw protocol v1 against a real broker subprocess: every check of PROTOCOL.md §3.2 in
 * order, with the exact reply header, error text and audit record (§4), limits and quotas at
 * their exact boundaries, id assignment, and the NUL-byte rejections (D11).
 */

import { assertEquals } from "../support/assert.ts";
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
  cat,
  closeFds,
  filled,
  openReadOnly,
  putRequest,
  selectRequest,
  Session,
  shutdownRead,
  shutdownWrite,
  ST,
  T,
} from "../support/wire.ts";
import { makePipe } from "../support/fds.ts";
import { Cmd } from "../../src/protocol/wire.ts";
import { Seal } from "../../src/sys/memfd.ts";

const DATA = enc("hello");
const DIG = digestOf(DATA);

/** A PUT header for `hello` (size 5) with the given length fields. */
function putHeader(f: {
  nameLen?: number;
  textLen?: number;
  jobLen?: number;
  allowLen?: number;
  size?: bigint;
}): Uint8Array {
  return request({
    cmd: Cmd.PUT,
    size: f.size ?? 5n,
    nameLen: f.nameLen ?? 0,
    textLen: f.textLen ?? 0,
    jobLen: f.jobLen ?? 0,
    allowLen: f.allowLen ?? 0,
  });
}

/** Send a PUT prefix with a sealed `hello` memfd, half-close, and return the reply and record. */
async function putThenHangUp(
  s: Session,
  bytes: Uint8Array,
): Promise<{ reply: Awaited<ReturnType<RawClient["reply"]>>; line: string }> {
  using m = sealedMemfd(DATA);
  using c = await RawClient.connect(s.socket);
  await c.send(bytes, [m.fd]);
  shutdownWrite(c);
  const reply = await c.reply();
  assertEquals((await c.readToEnd()).bytes.length, 0);
  return { reply, line: await s.nextAudit() };
}

Deno.test("PUT runs the checks of PROTOCOL.md §3.2 in order with the exact C texts and audit records", async (t) => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path);
  const s = new Session(broker);
  const baseline = await s.settledFdCount();
  const put = { op: "put", result: "bad_request", selector: "name", size: 5 };

  await t.step(
    "PUT with name_len 65537 gets status 3 `name too long` and a record without a name",
    async () => {
      using m = sealedMemfd(DATA);
      const { reply, line } = await s.exchange(putHeader({ nameLen: 65537, textLen: 71 }), [m.fd]);
      assertErrorReply(reply, Cmd.PUT, ST.BAD_REQUEST, T.nameTooLong);
      assertAudit(line, { ...put, error: T.nameTooLong });
    },
  );

  await t.step("PUT with name_len 65537 and job_len 257 reports the name first", async () => {
    const { reply, line } = await s.exchange(putHeader({ nameLen: 65537, jobLen: 257 }));
    assertErrorReply(reply, Cmd.PUT, ST.BAD_REQUEST, T.nameTooLong);
    assertAudit(line, { ...put, error: T.nameTooLong });
  });

  await t.step(
    "PUT with name_len 65536 is not `name too long` (it reaches the next check)",
    async () => {
      // 65536 + 71 fits every default limit, so the broker reads the name: send 65536 bytes, and
      // then an empty-looking name (first byte NUL) is the next failure.
      const name = filled(65536, 0);
      const { reply, line } = await s.exchange(
        cat(putHeader({ nameLen: 65536, textLen: 71 }), name, DIG),
      );
      assertErrorReply(reply, Cmd.PUT, ST.BAD_REQUEST, T.emptyName);
      assertAudit(line, { ...put, name: "", error: T.emptyName });
    },
  );

  await t.step(
    "PUT with name_len 0xFFFFFFFF and text_len 1 gets `name too long` before the size check",
    async () => {
      const { reply, line } = await s.exchange(putHeader({ nameLen: 0xffffffff, textLen: 1 }));
      assertErrorReply(reply, Cmd.PUT, ST.BAD_REQUEST, T.nameTooLong);
      assertAudit(line, { ...put, error: T.nameTooLong });
    },
  );

  await t.step("PUT with job_len 257 gets status 3 `job id too long`", async () => {
    const { reply, line } = await s.exchange(putHeader({ nameLen: 1, textLen: 71, jobLen: 257 }));
    assertErrorReply(reply, Cmd.PUT, ST.BAD_REQUEST, T.jobTooLong);
    assertAudit(line, { ...put, error: T.jobTooLong });
  });

  await t.step("PUT with job_len 257 and allow_len 257 reports the job first", async () => {
    const { reply, line } = await s.exchange(
      putHeader({ nameLen: 1, jobLen: 257, allowLen: 257 }),
    );
    assertErrorReply(reply, Cmd.PUT, ST.BAD_REQUEST, T.jobTooLong);
    assertAudit(line, { ...put, error: T.jobTooLong });
  });

  await t.step("PUT with allow_len 257 gets status 3 `allowed job id too long`", async () => {
    const { reply, line } = await s.exchange(
      putHeader({ nameLen: 1, textLen: 71, jobLen: 256, allowLen: 257 }),
    );
    assertErrorReply(reply, Cmd.PUT, ST.BAD_REQUEST, T.allowTooLong);
    assertAudit(line, { ...put, error: T.allowTooLong });
  });

  await t.step(
    "PUT with allow_len 257 and a 4 GiB length sum reports the allowed job first",
    async () => {
      const { reply } = await s.exchange(
        putHeader({ nameLen: 1, textLen: 0xffffffff, allowLen: 257 }),
      );
      assertErrorReply(reply, Cmd.PUT, ST.BAD_REQUEST, T.allowTooLong);
    },
  );

  await t.step(
    "PUT whose length sum exceeds the default 4294967295 gets `request payload exceeds broker limit`",
    async () => {
      const { reply, line } = await s.exchange(putHeader({ nameLen: 1, textLen: 0xffffffff }));
      assertErrorReply(reply, Cmd.PUT, ST.BAD_REQUEST, T.requestTooLarge);
      assertAudit(line, { ...put, error: T.requestTooLarge });
    },
  );

  await t.step(
    "PUT whose client half-closes before the name gets `failed to read object name`",
    async () => {
      const { reply, line } = await putThenHangUp(
        s,
        cat(putHeader({ nameLen: 5, textLen: 71 }), "ab"),
      );
      assertErrorReply(reply, Cmd.PUT, ST.BAD_REQUEST, T.readName);
      assertAudit(line, { ...put, error: T.readName });
    },
  );

  await t.step(
    'PUT with name_len 0 gets `name must not be empty` and records the name as ""',
    async () => {
      using m = sealedMemfd(DATA);
      const { reply, line } = await s.exchange(cat(putHeader({ textLen: 71 }), DIG), [m.fd]);
      assertErrorReply(reply, Cmd.PUT, ST.BAD_REQUEST, T.emptyName);
      assertAudit(line, { ...put, name: "", error: T.emptyName });
    },
  );

  await t.step("PUT whose name starts with a NUL byte gets `name must not be empty`", async () => {
    const { reply, line } = await s.put(cat(new Uint8Array([0]), "abc"), DATA);
    assertErrorReply(reply, Cmd.PUT, ST.BAD_REQUEST, T.emptyName);
    assertAudit(line, { ...put, name: "", error: T.emptyName });
  });

  for (const textLen of [0, 70, 72]) {
    await t.step(
      `PUT with text_len ${textLen} gets \`invalid object digest\` without reading a digest`,
      async () => {
        using m = sealedMemfd(DATA);
        const { reply, line } = await s.exchange(
          cat(putHeader({ nameLen: 1, textLen }), "n", filled(textLen, 0x30)),
          [m.fd],
        );
        assertErrorReply(reply, Cmd.PUT, ST.BAD_REQUEST, T.invalidDigest);
        assertAudit(line, { ...put, name: "n", error: T.invalidDigest });
      },
    );
  }

  await t.step(
    "PUT whose client half-closes inside the digest gets `failed to read object digest`",
    async () => {
      const { reply, line } = await putThenHangUp(
        s,
        cat(putHeader({ nameLen: 1, textLen: 71 }), "n", DIG.slice(0, 30)),
      );
      assertErrorReply(reply, Cmd.PUT, ST.BAD_REQUEST, T.readDigest);
      assertAudit(line, { ...put, name: "n", error: T.readDigest });
    },
  );

  const badDigests: [string, string][] = [
    ["uppercase hex", DIG.slice(0, 7) + DIG.slice(7).toUpperCase()],
    ["a sha512: prefix", "sha512:" + DIG.slice(7)],
    ["a non-hex character", DIG.slice(0, 70) + "g"],
    ["a space instead of the colon", "sha256 " + DIG.slice(7)],
  ];
  for (const [what, digest] of badDigests) {
    await t.step(
      `PUT with a digest with ${what} gets \`invalid object digest\` and records that digest`,
      async () => {
        const { reply, line } = await s.put("n", DATA, { digest, job: "j" });
        assertErrorReply(reply, Cmd.PUT, ST.BAD_REQUEST, T.invalidDigest);
        assertAudit(line, { ...put, name: "n", digest, error: T.invalidDigest });
      },
    );
  }

  await t.step(
    "PUT with an allowed job but no owner job gets `allowed job requires owner job`",
    async () => {
      const { reply, line } = await s.put("n", DATA, { allow: "b" });
      assertErrorReply(reply, Cmd.PUT, ST.BAD_REQUEST, T.allowNeedsOwner);
      assertAudit(line, { ...put, name: "n", digest: DIG, error: T.allowNeedsOwner });
    },
  );

  await t.step(
    "PUT whose client half-closes inside the job id gets `failed to read job id`",
    async () => {
      const { reply, line } = await putThenHangUp(
        s,
        cat(putHeader({ nameLen: 1, textLen: 71, jobLen: 4 }), "n", DIG, "jo"),
      );
      assertErrorReply(reply, Cmd.PUT, ST.BAD_REQUEST, T.readJob);
      assertAudit(line, { ...put, name: "n", digest: DIG, error: T.readJob });
    },
  );

  await t.step(
    "PUT whose job id starts with NUL gets `job id must not be empty` and no job_id",
    async () => {
      const { reply, line } = await s.put("n", DATA, { job: cat(new Uint8Array([0]), "j") });
      assertErrorReply(reply, Cmd.PUT, ST.BAD_REQUEST, T.emptyJob);
      assertAudit(line, { ...put, name: "n", digest: DIG, error: T.emptyJob });
    },
  );

  await t.step(
    "PUT whose client half-closes inside the allowed job gets `failed to read allowed job id` with job_id set",
    async () => {
      const { reply, line } = await putThenHangUp(
        s,
        cat(putHeader({ nameLen: 1, textLen: 71, jobLen: 2, allowLen: 4 }), "n", DIG, "ja", "b"),
      );
      assertErrorReply(reply, Cmd.PUT, ST.BAD_REQUEST, T.readAllow);
      assertAudit(line, { ...put, name: "n", digest: DIG, job_id: "ja", error: T.readAllow });
    },
  );

  await t.step(
    "PUT whose allowed job starts with NUL gets `allowed job id must not be empty`",
    async () => {
      const { reply, line } = await s.put("n", DATA, {
        job: "ja",
        allow: new Uint8Array([0, 0x62]),
      });
      assertErrorReply(reply, Cmd.PUT, ST.BAD_REQUEST, T.emptyAllow);
      assertAudit(line, { ...put, name: "n", digest: DIG, job_id: "ja", error: T.emptyAllow });
    },
  );

  await t.step(
    "PUT without a descriptor is read in full and gets `missing memfd descriptor`",
    async () => {
      const { reply, line } = await s.exchange(putRequest("n", DATA, { job: "ja", allow: "jb" }));
      assertErrorReply(reply, Cmd.PUT, ST.BAD_REQUEST, T.missingFd);
      assertAudit(line, { ...put, name: "n", digest: DIG, job_id: "ja", error: T.missingFd });
    },
  );

  await t.step("PUT with a pipe gets `descriptor is not a regular memfd-like file`", async () => {
    const [r, w] = makePipe();
    try {
      const { reply, line } = await s.exchange(putRequest("n", DATA, { job: "ja" }), [r]);
      assertErrorReply(reply, Cmd.PUT, ST.BAD_REQUEST, T.notRegular);
      assertAudit(line, { ...put, name: "n", digest: DIG, job_id: "ja", error: T.notRegular });
    } finally {
      closeFds([r, w]);
    }
  });

  await t.step(
    "PUT claiming 6 bytes for a 5-byte memfd gets `size mismatch: header=6 fd=5`",
    async () => {
      using m = sealedMemfd(DATA);
      const { reply, line } = await s.exchange(putRequest("n", DATA, { size: 6n }), [m.fd]);
      assertErrorReply(reply, Cmd.PUT, ST.BAD_REQUEST, "size mismatch: header=6 fd=5");
      assertAudit(line, {
        ...put,
        size: 6,
        name: "n",
        digest: DIG,
        error: "size mismatch: header=6 fd=5",
      });
    },
  );

  await t.step("PUT claiming 2^64-1 bytes prints the claimed size in full decimal", async () => {
    using m = sealedMemfd(DATA);
    const { reply, line } = await s.exchange(
      putRequest("n", DATA, { size: 0xffffffffffffffffn }),
      [m.fd],
    );
    const text = "size mismatch: header=18446744073709551615 fd=5";
    assertErrorReply(reply, Cmd.PUT, ST.BAD_REQUEST, text);
    assertEquals(line.includes(`,"size":18446744073709551615,`), true, line);
  });

  await t.step(
    "PUT with a regular disk file opened O_RDONLY gets `F_GET_SEALS failed: Invalid argument`",
    async () => {
      Deno.writeFileSync(`${dir.path}/plain.bin`, DATA);
      const fd = openReadOnly(`${dir.path}/plain.bin`);
      try {
        const { reply, line } = await s.exchange(putRequest("n", DATA), [fd]);
        assertErrorReply(reply, Cmd.PUT, ST.BAD_REQUEST, T.getSealsEinval);
        assertAudit(line, { ...put, name: "n", digest: DIG, error: T.getSealsEinval });
      } finally {
        closeFds([fd]);
      }
    },
  );

  const sealSets: [string, number][] = [
    ["no seals", 0],
    ["every seal but F_SEAL_SEAL", Seal.SHRINK | Seal.GROW | Seal.WRITE],
    ["every seal but F_SEAL_SHRINK", Seal.SEAL | Seal.GROW | Seal.WRITE],
    ["every seal but F_SEAL_GROW", Seal.SEAL | Seal.SHRINK | Seal.WRITE],
    ["every seal but F_SEAL_WRITE", Seal.SEAL | Seal.SHRINK | Seal.GROW],
    ["FUTURE_WRITE|SEAL|SHRINK|GROW", Seal.FUTURE_WRITE | Seal.SEAL | Seal.SHRINK | Seal.GROW],
  ];
  for (const [what, seals] of sealSets) {
    await t.step(
      `PUT with a memfd sealed with ${what} gets \`fd is not fully immutable-sealed\``,
      async () => {
        const { reply, line } = await s.put("n", DATA, { seals });
        assertErrorReply(reply, Cmd.PUT, ST.BAD_REQUEST, T.notSealed);
        assertAudit(line, { ...put, name: "n", digest: DIG, error: T.notSealed });
      },
    );
  }

  await t.step(
    "PUT whose digest is well formed but of other bytes gets `digest mismatch`",
    async () => {
      const other = digestOf(enc("hellO"));
      const { reply, line } = await s.put("n", DATA, { digest: other, job: "ja" });
      assertErrorReply(reply, Cmd.PUT, ST.BAD_REQUEST, T.digestMismatch);
      assertAudit(line, {
        ...put,
        name: "n",
        digest: other,
        job_id: "ja",
        error: T.digestMismatch,
      });
    },
  );

  await t.step("no rejected PUT left a descriptor behind in the broker", async () => {
    await s.expectFdCount(baseline);
  });

  await t.step(
    "PUT with FUTURE_WRITE on top of the four seals is accepted as id 1 (extra seals are fine)",
    async () => {
      const { reply, line } = await s.put("n", DATA, {
        seals: Seal.IMMUTABLE | Seal.FUTURE_WRITE,
        job: "ja",
        allow: "jb",
      });
      assertIdReply(reply, Cmd.PUT, 1, 5);
      assertAudit(line, {
        op: "put",
        result: "ok",
        selector: null,
        object_id: 1,
        name: "n",
        size: 5,
        digest: DIG,
        job_id: "ja",
      });
      await s.expectFdCount(baseline + 1);
    },
  );
  await t.step(
    "PUT with a 256-byte job and a 256-byte allowed job is accepted as id 2",
    async () => {
      const job = "o".repeat(256);
      const allow = "w".repeat(256);
      const { reply, line } = await s.put("long-jobs", DATA, { job, allow });
      assertIdReply(reply, Cmd.PUT, 2, 5);
      assertAudit(line, {
        op: "put",
        result: "ok",
        object_id: 2,
        name: "long-jobs",
        size: 5,
        digest: DIG,
        job_id: job,
      });
      const got = await s.get({ id: 2, job: allow });
      assertEquals([got.reply.header.status, got.reply.header.objectId], [0, 2n]);
    },
  );
});

Deno.test("PUT ids start at 1, rejected PUTs take none, and dropped ids are never reused", async (t) => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path);
  const s = new Session(broker);

  await t.step(
    "the first PUT gets id 1, size 5, no body and no descriptor, and an ok record with selector null",
    async () => {
      const { reply, line } = await s.put("first", DATA);
      assertIdReply(reply, Cmd.PUT, 1, 5);
      assertAudit(line, {
        op: "put",
        result: "ok",
        object_id: 1,
        name: "first",
        size: 5,
        digest: DIG,
      });
    },
  );

  await t.step("a rejected PUT does not consume id 2", async () => {
    const { reply } = await s.put("bad", DATA, { digest: digestOf(enc("x")) });
    assertErrorReply(reply, Cmd.PUT, ST.BAD_REQUEST, T.digestMismatch);
    assertIdReply((await s.put("second", DATA)).reply, Cmd.PUT, 2, 5);
  });

  await t.step("an owned PUT records its owner job but never the allowed job", async () => {
    const { reply, line } = await s.put("third", DATA, { job: "own", allow: "other" });
    assertIdReply(reply, Cmd.PUT, 3, 5);
    assertAudit(line, {
      op: "put",
      result: "ok",
      object_id: 3,
      name: "third",
      size: 5,
      digest: DIG,
      job_id: "own",
    });
  });

  await t.step("DROP replies with the dropped id and size and no body", async () => {
    const { reply, line } = await s.drop({ id: 3 });
    assertIdReply(reply, Cmd.DROP, 3, 5);
    assertAudit(line, {
      op: "drop",
      result: "ok",
      selector: "id",
      object_id: 3,
      name: "third",
      size: 5,
      digest: DIG,
    });
  });

  await t.step("the PUT after dropping the newest object gets id 4, not 3", async () => {
    assertIdReply((await s.put("fourth", DATA)).reply, Cmd.PUT, 4, 5);
    assertIdReply((await s.drop({ id: 1 })).reply, Cmd.DROP, 1, 5);
    assertIdReply((await s.put("fifth", DATA)).reply, Cmd.PUT, 5, 5);
  });

  await t.step(
    "a PUT whose reply cannot be delivered is still committed as id 6 and recorded ok (D16)",
    async () => {
      using m = sealedMemfd(DATA);
      using c = await RawClient.connect(s.socket);
      shutdownRead(c);
      await c.send(putRequest("unheard", DATA), [m.fd]);
      assertAudit(await s.nextAudit(), {
        op: "put",
        result: "ok",
        object_id: 6,
        name: "unheard",
        size: 5,
        digest: DIG,
      });
      const got = await s.get({ name: "unheard" });
      assertEquals([got.reply.header.status, got.reply.header.objectId], [0, 6n]);
      assertIdReply((await s.drop({ id: 6 })).reply, Cmd.DROP, 6, 5);
    },
  );

  await t.step("a zero-byte object is accepted with size 0 as id 7", async () => {
    const empty = new Uint8Array(0);
    const { reply, line } = await s.put("empty", empty);
    assertIdReply(reply, Cmd.PUT, 7, 0);
    assertAudit(line, {
      op: "put",
      result: "ok",
      object_id: 7,
      name: "empty",
      size: 0,
      digest: digestOf(empty),
    });
  });

  await t.step("the listing holds exactly ids 2, 4, 5 and 7", async () => {
    const { text } = await s.list();
    assertEquals(text.split("\n").filter((l) => l !== "").map((l) => l.split("\t")[0]), [
      "2",
      "4",
      "5",
      "7",
    ]);
  });
});

Deno.test("PUT limits hold at their exact boundaries (--max-name-bytes 8, --max-request-bytes 100)", async (t) => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path, [
    "--max-name-bytes",
    "8",
    "--max-request-bytes",
    "100",
  ]);
  const s = new Session(broker);
  const job21 = "j".repeat(21);
  const put = { op: "put", result: "bad_request", selector: "name", size: 5 };

  await t.step("PUT whose four lengths sum to exactly 100 (8+71+21) is accepted", async () => {
    assertIdReply((await s.put("abcdefgh", DATA, { job: job21 })).reply, Cmd.PUT, 1, 5);
  });

  await t.step(
    "PUT whose lengths sum to 101 gets `request payload exceeds broker limit` with no name",
    async () => {
      const { reply, line } = await s.put("abcdefgh", DATA, { job: job21 + "j" });
      assertErrorReply(reply, Cmd.PUT, ST.BAD_REQUEST, T.requestTooLarge);
      assertAudit(line, { ...put, error: T.requestTooLarge });
    },
  );

  await t.step("PUT whose sum reaches 101 through allow_len alone is rejected too", async () => {
    const { reply, line } = await s.put("abcdefgh", DATA, {
      job: "j".repeat(11),
      allow: "k".repeat(11),
    });
    assertErrorReply(reply, Cmd.PUT, ST.BAD_REQUEST, T.requestTooLarge);
    assertAudit(line, { ...put, error: T.requestTooLarge });
  });

  await t.step("PUT with a 9-byte name gets `object name exceeds broker name limit`", async () => {
    const { reply, line } = await s.put("abcdefghi", DATA);
    assertErrorReply(reply, Cmd.PUT, ST.BAD_REQUEST, T.nameOverLimit);
    assertAudit(line, { ...put, error: T.nameOverLimit });
  });

  await t.step(
    "PUT with a 9-byte name and a sum over 100 reports the request size first",
    async () => {
      const { reply } = await s.put("abcdefghi", DATA, { job: "j".repeat(30) });
      assertErrorReply(reply, Cmd.PUT, ST.BAD_REQUEST, T.requestTooLarge);
    },
  );

  await t.step(
    "PUT with name_len 65537 still reports `name too long` before the smaller limits",
    async () => {
      const { reply } = await s.exchange(putHeader({ nameLen: 65537, textLen: 71 }));
      assertErrorReply(reply, Cmd.PUT, ST.BAD_REQUEST, T.nameTooLong);
    },
  );

  await t.step(
    "GET by name with a 9-byte name gets `object name exceeds broker name limit` (cmd 2)",
    async () => {
      const { reply, line } = await s.get({ name: "abcdefghi" });
      assertErrorReply(reply, Cmd.GET, ST.BAD_REQUEST, T.nameOverLimit);
      assertAudit(line, {
        op: "get",
        result: "bad_request",
        selector: "name",
        error: T.nameOverLimit,
      });
    },
  );

  await t.step(
    "DROP by name with a 9-byte name gets `object name exceeds broker name limit` (cmd 4)",
    async () => {
      const { reply, line } = await s.drop({ name: "abcdefghi" });
      assertErrorReply(reply, Cmd.DROP, ST.BAD_REQUEST, T.nameOverLimit);
      assertAudit(line, {
        op: "drop",
        result: "bad_request",
        selector: "name",
        error: T.nameOverLimit,
      });
    },
  );

  await t.step(
    "GET by id whose unused text_len brings the sum to exactly 100 is served",
    async () => {
      const j = enc(job21);
      const { reply } = await s.exchange(
        cat(request({ cmd: Cmd.GET, objectId: 1n, jobLen: 21, textLen: 79 }), j),
      );
      assertEquals([reply.header.status, reply.header.objectId, reply.fds.length], [0, 1n, 1]);
      closeFds(reply.fds);
    },
  );

  await t.step(
    'GET by id whose sum is 101 gets `request payload exceeds broker limit` with selector "name" (D19)',
    async () => {
      const { reply, line } = await s.exchange(
        cat(request({ cmd: Cmd.GET, objectId: 1n, jobLen: 21, textLen: 80 }), job21),
      );
      assertErrorReply(reply, Cmd.GET, ST.BAD_REQUEST, T.requestTooLarge);
      assertAudit(line, {
        op: "get",
        result: "bad_request",
        selector: "name",
        error: T.requestTooLarge,
      });
    },
  );

  await t.step(
    "LIST whose unused lengths sum to 101 gets `request payload exceeds broker limit` with an all-null record",
    async () => {
      const { reply, line } = await s.exchange(
        cat(request({ cmd: Cmd.LIST, jobLen: 30, textLen: 71 }), "j".repeat(30)),
      );
      assertErrorReply(reply, Cmd.LIST, ST.BAD_REQUEST, T.requestTooLarge);
      assertAudit(line, { op: "list", result: "bad_request", error: T.requestTooLarge });
    },
  );

  await t.step("LIST whose unused lengths sum to exactly 100 is served", async () => {
    const { reply } = await s.exchange(request({ cmd: Cmd.LIST, textLen: 100 }));
    assertEquals([reply.header.status, reply.header.textLen > 0], [0, true]);
  });
});

Deno.test("PUT quotas hold at their exact boundaries (--max-objects 3, --max-total-bytes 10)", async (t) => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path, [
    "--max-objects",
    "3",
    "--max-total-bytes",
    "10",
  ]);
  const s = new Session(broker);
  const baseline = await s.settledFdCount();
  const bytes = (n: number): Uint8Array => filled(n, 0x41 + n);

  await t.step(
    "4 bytes and then 6 bytes (exactly the remaining room) are both accepted",
    async () => {
      assertIdReply((await s.put("a", bytes(4))).reply, Cmd.PUT, 1, 4);
      assertIdReply((await s.put("b", bytes(6))).reply, Cmd.PUT, 2, 6);
    },
  );

  await t.step(
    "one more byte over a full --max-total-bytes gets status 1 `broker object quota exceeded`",
    async () => {
      const data = bytes(1);
      const { reply, line } = await s.put("c", data, { job: "q" });
      assertErrorReply(reply, Cmd.PUT, ST.ERR, T.objectQuota);
      assertAudit(line, {
        op: "put",
        result: "error",
        selector: "name",
        name: "c",
        size: 1,
        digest: digestOf(data),
        job_id: "q",
        error: T.objectQuota,
      });
      await s.expectFdCount(baseline + 2);
    },
  );

  await t.step("a zero-byte object still fits, as the third of --max-objects 3", async () => {
    assertIdReply((await s.put("c", bytes(0))).reply, Cmd.PUT, 3, 0);
  });

  await t.step(
    "a fourth object, even of zero bytes, gets status 1 `broker object quota exceeded`",
    async () => {
      const { reply } = await s.put("d", bytes(0));
      assertErrorReply(reply, Cmd.PUT, ST.ERR, T.objectQuota);
    },
  );

  await t.step(
    "after dropping the 4-byte object, 5 bytes are refused and 4 bytes fit as id 4",
    async () => {
      assertIdReply((await s.drop({ id: 1 })).reply, Cmd.DROP, 1, 4);
      assertErrorReply((await s.put("e", bytes(5))).reply, Cmd.PUT, ST.ERR, T.objectQuota);
      assertIdReply((await s.put("e", bytes(4))).reply, Cmd.PUT, 4, 4);
      await s.expectFdCount(baseline + 3);
    },
  );
});

Deno.test("names and job ids holding NUL bytes are refused, not cut short (D11)", async (t) => {
  using dir = tempDir();
  await using broker = await BrokerProcess.start(dir.path);
  const s = new Session(broker);
  const put = { op: "put", result: "bad_request", selector: "name", size: 5 };
  const abNulCd = cat("ab", new Uint8Array([0]), "cd");

  await t.step(
    "PUT with name `ab\\0cd` gets status 3 `object name must not contain NUL bytes`",
    async () => {
      const { reply, line } = await s.put(abNulCd, DATA);
      assertErrorReply(reply, Cmd.PUT, ST.BAD_REQUEST, T.nulInName);
      assertAudit(line, { ...put, name: "ab", error: T.nulInName });
    },
  );

  await t.step(
    "PUT with job `j\\0k` gets status 3 `job id must not contain NUL bytes`",
    async () => {
      const { reply, line } = await s.put("n", DATA, { job: cat("j", new Uint8Array([0]), "k") });
      assertErrorReply(reply, Cmd.PUT, ST.BAD_REQUEST, T.nulInJob);
      assertAudit(line, { ...put, name: "n", digest: DIG, error: T.nulInJob });
    },
  );

  await t.step(
    "PUT with allowed job `a\\0b` gets status 3 `allowed job id must not contain NUL bytes`",
    async () => {
      const { reply, line } = await s.put("n", DATA, {
        job: "j",
        allow: cat("a", new Uint8Array([0]), "b"),
      });
      assertErrorReply(reply, Cmd.PUT, ST.BAD_REQUEST, T.nulInAllow);
      assertAudit(line, { ...put, name: "n", digest: DIG, job_id: "j", error: T.nulInAllow });
    },
  );

  await t.step(
    "GET by name `ab\\0cd` while `ab` exists gets status 2 `object not found`",
    async () => {
      assertIdReply((await s.put("ab", DATA)).reply, Cmd.PUT, 1, 5);
      const { reply, line } = await s.get({ name: abNulCd });
      assertErrorReply(reply, Cmd.GET, ST.NOT_FOUND, T.notFound);
      assertAudit(line, {
        op: "get",
        result: "not_found",
        selector: "name",
        name: "ab",
        error: T.notFound,
      });
    },
  );

  await t.step(
    "DROP by name `ab\\0cd` while `ab` exists gets status 2 and leaves `ab` stored",
    async () => {
      const { reply } = await s.exchange(selectRequest(Cmd.DROP, { name: abNulCd }));
      assertErrorReply(reply, Cmd.DROP, ST.NOT_FOUND, T.notFound);
      const got = await s.get({ name: "ab" });
      assertEquals([got.reply.header.status, got.reply.header.objectId], [0, 1n]);
    },
  );

  await t.step(
    "GET with job `a\\0b` gets status 3 `job id must not contain NUL bytes`",
    async () => {
      const { reply } = await s.get({ id: 1, job: cat("a", new Uint8Array([0]), "b") });
      assertErrorReply(reply, Cmd.GET, ST.BAD_REQUEST, T.nulInJob);
      assertEquals(bin(reply.body), T.nulInJob);
    },
  );
});
