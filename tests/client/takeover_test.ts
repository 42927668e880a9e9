/**
 * The TAKEOVER client (src/client/takeover.ts) against a missing broker and against a peer that
 * refuses, over real Unix sockets: the texts `memfdbus broker --takeover` prints.
 */
import { assertEquals, rejects } from "../support/assert.ts";
import { requestTakeover } from "../../src/client/takeover.ts";
import { Status, UsageError } from "../../src/errors.ts";
import { Cmd, decodeHeader, encodeHeader, HEADER_SIZE, Text } from "../../src/protocol/wire.ts";
import { tempDir } from "../support/harness.ts";

Deno.test("requestTakeover with no broker on the socket names the socket and the errno", async () => {
  using dir = tempDir();
  const socket = `${dir.path}/none.sock`;
  await rejects(
    requestTakeover(socket),
    (e: unknown) =>
      e instanceof UsageError &&
      e.message === `no broker to take over from on ${socket}: connect: No such file or directory`,
  );
});

Deno.test("requestTakeover reports a refusal with the broker's text", async () => {
  using dir = tempDir();
  const socket = `${dir.path}/refuse.sock`;
  const listener = Deno.listen({ transport: "unix", path: socket });
  const peer = (async (): Promise<number> => {
    using conn = await listener.accept();
    const got = new Uint8Array(HEADER_SIZE);
    let off = 0;
    while (off < HEADER_SIZE) {
      const n = await conn.read(got.subarray(off));
      if (n === null) throw new Error("the takeover request did not arrive");
      off += n;
    }
    const text = new TextEncoder().encode(Text.accessDenied);
    const reply = new Uint8Array(HEADER_SIZE + text.length);
    encodeHeader(
      { cmd: Cmd.TAKEOVER, status: Status.FORBIDDEN, textLen: text.length },
      reply,
    );
    reply.set(text, HEADER_SIZE);
    await conn.write(reply);
    return decodeHeader(got).cmd;
  })();
  try {
    await rejects(
      requestTakeover(socket),
      (e: unknown) =>
        e instanceof UsageError &&
        e.message === `takeover refused by the broker on ${socket}: access denied`,
    );
    assertEquals(await peer, Cmd.TAKEOVER);
  } finally {
    listener.close();
  }
});
