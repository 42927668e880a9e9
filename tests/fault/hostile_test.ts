/**
 * Hostile descriptors in PUT: every one is refused with the broker's exact text, nothing is
 * stored, the broker's descriptor count returns to its baseline, and one audit record is written
 * per refusal.
 */

import { assertEquals, ok } from "../support/assert.ts";
import { Connection } from "../../src/client/connection.ts";
import { digestBytes } from "../../src/hash/digest.ts";
import { closeQuietly, cstr, libc } from "../../src/ffi.ts";
import { O_CLOEXEC, O_RDONLY, O_WRONLY } from "../../src/sys/linux.ts";
import { Memfd, Seal } from "../../src/sys/memfd.ts";
import { closeAll } from "../../src/sys/unix_socket.ts";
import { Cmd, DIGEST_LEN, encodeHeader, Text } from "../../src/protocol/wire.ts";
import { enc, request, sealedMemfd, tempDir } from "../support/harness.ts";
import { letTimePass, waitFor } from "../support/wait.ts";
import {
  exchange,
  expectFdCount,
  makeEventfd,
  makeSocket,
  openDirectory,
  openPath,
  readOneReply,
  startBroker,
  statusText,
  storedCount,
} from "../support/faults.ts";
import { makePipe } from "../support/fds.ts";

const O_PATH = 0o10000000;
const CONTENT = enc("hostile bytes");
const NOT_REGULAR = "descriptor is not a regular memfd-like file";
const NOT_SEALED = "fd is not fully immutable-sealed";

/** A PUT of `name` claiming `size` bytes with digest `digest`. */
function putRequest(size: bigint, digest: string = digestBytes(CONTENT), name = "h"): Uint8Array {
  return request(
    { cmd: Cmd.PUT, size, nameLen: enc(name).length, textLen: DIGEST_LEN },
    name,
    digest,
  );
}

/** Send a PUT with `fd` attached, close our copy, and return [status, text]. */
async function putWith(
  socket: string,
  fd: number,
  size: bigint,
  digest?: string,
): Promise<[number, string] | "closed"> {
  try {
    const x = await exchange(socket, putRequest(size, digest), [fd]);
    closeAll(x.fds);
    return statusText(x);
  } finally {
    closeQuietly(fd);
  }
}

function memfdWith(seals: number, opts: { allowSealing?: boolean } = {}): number {
  const m = Memfd.create("hostile", { allowSealing: opts.allowSealing ?? true });
  m.writeAll(CONTENT);
  m.seek(0);
  if (seals !== 0) m.addSeals(seals);
  return m.release();
}

async function fsType(path: string): Promise<string> {
  const out = await new Deno.Command("stat", { args: ["-f", "-c", "%T", path] }).output();
  return new TextDecoder().decode(out.stdout).trim();
}

Deno.test("hostile descriptors are refused with the exact texts and leave nothing behind", async (t) => {
  using dir = tempDir();
  await using broker = await startBroker(dir.path);
  const size = BigInt(CONTENT.length);
  // Warm up the PUT path once (store, digest, drop), then take the baseline.
  {
    const m = sealedMemfd(CONTENT);
    const x = await exchange(broker.socket, putRequest(size), [m.release()]);
    assertEquals(statusText(x), [0, ""]);
    const d = await exchange(broker.socket, encodeHeader({ cmd: Cmd.DROP, objectId: 1n }));
    assertEquals(statusText(d), [0, ""]);
  }
  const baseline = await broker.settledFdCount();
  let refusals = 0;

  const refused = async (
    name: string,
    make: () => number,
    expected: [number, string],
    claimed: bigint = size,
    digest?: string,
  ): Promise<void> => {
    await t.step(name, async () => {
      const got = await putWith(broker.socket, make(), claimed, digest);
      refusals++;
      assertEquals(got, expected);
      assertEquals(await storedCount(broker.socket), 0);
      await expectFdCount(broker, baseline);
    });
  };

  await refused("a pipe's read end is not a regular memfd-like file", () => {
    const [r, w] = makePipe();
    closeQuietly(w);
    return r;
  }, [3, NOT_REGULAR]);
  await refused("a pipe's write end is not a regular memfd-like file", () => {
    const [r, w] = makePipe();
    closeQuietly(r);
    return w;
  }, [3, NOT_REGULAR]);
  await refused("a socket is not a regular memfd-like file", makeSocket, [3, NOT_REGULAR]);
  await refused("an eventfd is not a regular memfd-like file", makeEventfd, [3, NOT_REGULAR]);
  await refused(
    "a directory opened O_RDONLY|O_DIRECTORY is not a regular memfd-like file",
    () => openDirectory(dir.path),
    [3, NOT_REGULAR],
    0n,
  );
  await refused(
    "a character device (/dev/null) is not a regular memfd-like file",
    () => openPath("/dev/null", O_RDONLY),
    [3, NOT_REGULAR],
    0n,
  );

  const diskFile = `${dir.path}/on-disk.bin`;
  Deno.writeFileSync(diskFile, CONTENT);
  const diskType = await fsType(dir.path);
  await refused(
    `a regular file on disk (${diskType}) has no seals: F_GET_SEALS fails with EINVAL`,
    () => openPath(diskFile, O_RDONLY),
    diskType === "tmpfs" ? [3, NOT_SEALED] : [3, "F_GET_SEALS failed: Invalid argument"],
  );
  if ((await fsType("/dev/shm")) === "tmpfs") {
    const shmFile = `/dev/shm/memfdbus-hostile-${crypto.randomUUID()}`;
    Deno.writeFileSync(shmFile, CONTENT);
    try {
      await refused(
        "a tmpfs file carries only F_SEAL_SEAL and is not fully immutable-sealed",
        () => openPath(shmFile, O_RDONLY),
        [3, NOT_SEALED],
      );
    } finally {
      Deno.removeSync(shmFile);
    }
  }

  await refused("an unsealed memfd is not fully immutable-sealed", () => memfdWith(0), [
    3,
    NOT_SEALED,
  ]);
  await refused(
    "a memfd created without MFD_ALLOW_SEALING is not fully immutable-sealed",
    () => memfdWith(0, { allowSealing: false }),
    [3, NOT_SEALED],
  );
  for (
    const [label, missing] of [
      ["SEAL", Seal.SEAL],
      ["SHRINK", Seal.SHRINK],
      ["GROW", Seal.GROW],
      ["WRITE", Seal.WRITE],
    ] as const
  ) {
    await refused(
      `a memfd sealed with everything but F_SEAL_${label} is not fully immutable-sealed`,
      () => memfdWith(Seal.IMMUTABLE & ~missing),
      [3, NOT_SEALED],
    );
  }
  await refused(
    "a memfd sealed SEAL|SHRINK|GROW|FUTURE_WRITE (but not WRITE) is not fully immutable-sealed",
    () => memfdWith(Seal.SEAL | Seal.SHRINK | Seal.GROW | Seal.FUTURE_WRITE),
    [3, NOT_SEALED],
  );
  await refused(
    "a sealed memfd one byte shorter than claimed is a size mismatch",
    () => sealedMemfd(CONTENT).release(),
    [3, `size mismatch: header=${size + 1n} fd=${size}`],
    size + 1n,
  );
  await refused(
    "a sealed memfd claimed at 2^63 bytes is a size mismatch, not an allocation",
    () => sealedMemfd(CONTENT).release(),
    [3, `size mismatch: header=9223372036854775808 fd=${size}`],
    1n << 63n,
  );
  await refused(
    "a sealed memfd claimed at 2^64-1 bytes is a size mismatch",
    () => sealedMemfd(CONTENT).release(),
    [3, `size mismatch: header=18446744073709551615 fd=${size}`],
    (1n << 64n) - 1n,
  );
  await refused(
    "a sealed memfd whose bytes do not match the digest is a digest mismatch",
    () => sealedMemfd(CONTENT).release(),
    [3, Text.digestMismatch],
    size,
    digestBytes(enc("other bytes")),
  );
  await refused(
    "an O_PATH descriptor of a sealed memfd cannot report its seals",
    () => {
      using m = sealedMemfd(CONTENT);
      return openPath(`/proc/self/fd/${m.fd}`, O_PATH);
    },
    [3, "F_GET_SEALS failed: Bad file descriptor"],
  );
  await t.step("a PUT without any descriptor is missing its memfd", async () => {
    const x = await exchange(broker.socket, putRequest(size));
    refusals++;
    assertEquals(statusText(x), [3, Text.missingFd]);
    await expectFdCount(broker, baseline);
  });

  await t.step("a memfd sent after the header (with the body) is closed, not used", async () => {
    const m = sealedMemfd(CONTENT);
    const bytes = putRequest(size);
    const c = await Connection.connect(broker.socket, 5000);
    try {
      await c.send(bytes.subarray(0, 48), performance.now() + 5000, "send");
      await letTimePass(50); // on purpose: the header arrives alone, without the descriptor
      await c.send(bytes.subarray(48), performance.now() + 5000, "send", [m.fd]);
      m.close();
      const x = await readOneReply(c, performance.now() + 5000);
      closeAll(x.fds);
      refusals++;
      assertEquals(statusText(x), [3, Text.missingFd]);
    } finally {
      c.close();
      m.close();
    }
    assertEquals(await storedCount(broker.socket), 0);
    await expectFdCount(broker, baseline);
  });

  await t.step(
    "extra descriptors next to a good memfd are closed and the memfd is stored",
    async () => {
      const good = sealedMemfd(CONTENT);
      const [r, w] = makePipe();
      const ev = makeEventfd();
      const x = await exchange(broker.socket, putRequest(size), [good.fd, r, ev]);
      closeAll(x.fds);
      good.close();
      closeAll([r, w, ev]);
      assertEquals(statusText(x), [0, ""]);
      assertEquals(await storedCount(broker.socket), 1);
      await expectFdCount(broker, baseline + 1);
      const d = await exchange(
        broker.socket,
        encodeHeader({ cmd: Cmd.DROP, objectId: x.header?.objectId ?? 0n }),
      );
      assertEquals(statusText(d), [0, ""]);
      await expectFdCount(broker, baseline);
    },
  );

  await t.step("every refusal wrote one bad_request audit record with its text", async () => {
    const puts = await waitFor(() => {
      const p = broker.audit().filter((a) => a.op === "put" && a.result === "bad_request");
      return p.length >= refusals ? p : null;
    }, { what: `${refusals} bad_request audit records` });
    assertEquals(puts.length, refusals);
    for (const a of puts) {
      assertEquals(a.selector, "name");
      assertEquals(a.object_id, null);
      ok(typeof a.error === "string" && a.error.length > 0);
    }
  });
  assertEquals((await broker.stop()).code, 0);
});

// The C broker verifies the digest with pread(2); on a descriptor opened write-only pread fails
// with EBADF, so the C text is "digest verification read failed: Bad file descriptor"
// (PROTOCOL.md 3.2 step 15: "pread error -> digest verification read failed: <strerror>").
Deno.test("a write-only descriptor of a sealed memfd fails digest verification with the C broker's text", async () => {
  using dir = tempDir();
  await using broker = await startBroker(dir.path);
  const fd = (() => {
    using m = sealedMemfd(CONTENT);
    return libc.symbols.open(cstr(`/proc/self/fd/${m.fd}`), O_WRONLY | O_CLOEXEC, 0);
  })();
  ok(fd >= 0, "reopen write-only");
  const got = await putWith(broker.socket, fd, BigInt(CONTENT.length));
  assertEquals(got, [3, "digest verification read failed: Bad file descriptor"]);
  assertEquals(await storedCount(broker.socket), 0);
  assertEquals((await broker.stop()).code, 0);
});
