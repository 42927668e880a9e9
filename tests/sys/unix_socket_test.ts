import { assertEquals, ok, throws } from "../support/assert.ts";
import { ErrnoError } from "../../src/errors.ts";
import { closeQuietly, libc } from "../../src/ffi.ts";
import { fstat, statusFlags } from "../../src/sys/fd.ts";
import { O_NONBLOCK, SHUT_WR } from "../../src/sys/linux.ts";
import { Memfd } from "../../src/sys/memfd.ts";
import {
  acceptUnix,
  bindUnix,
  closeAll,
  connectUnix,
  listenUnix,
  peerCredentials,
  type Received,
  recvMsg,
  sendMsg,
  sendSome,
  shutdownQuietly,
  sockaddrUn,
  socketError,
  socketPathTooLong,
  unixSocket,
  wouldBlock,
} from "../../src/sys/unix_socket.ts";
import { dec, enc } from "../support/harness.ts";
import { letTimePass, waitFor } from "../support/wait.ts";
import {
  fdGuard,
  fdTarget,
  hasCloexec,
  ownFds,
  ownLabel,
  ownTempDir as tempDir,
  pipe,
} from "../support/fds.ts";

/** A listening socket and one connected client/server pair, all closed on dispose. */
class Pair implements Disposable {
  readonly dir: { path: string } & Disposable;
  readonly path: string;
  readonly listener: number;
  readonly client: number;
  server: number;

  constructor() {
    this.dir = tempDir();
    this.path = `${this.dir.path}/s.sock`;
    const addr = sockaddrUn(this.path);
    if (addr === null) throw new Error("socket path too long");
    this.listener = unixSocket(true);
    bindUnix(this.listener, addr);
    listenUnix(this.listener, 8);
    this.client = unixSocket(true);
    const r = connectUnix(this.client, addr);
    if (r !== 0) throw new Error(`connect returned ${r}`);
    this.server = acceptUnix(this.listener);
    if (this.server < 0) throw new Error(`accept returned ${this.server}`);
  }

  [Symbol.dispose](): void {
    closeQuietly(this.client);
    closeQuietly(this.server);
    closeQuietly(this.listener);
    this.dir[Symbol.dispose]();
  }
}

/** A test body that must leave the process with the descriptors it started with. */
function noLeak(fn: () => void | Promise<void>): () => Promise<void> {
  return async (): Promise<void> => {
    const guard = fdGuard();
    await fn();
    guard.assertClean();
  };
}

function received(r: Received | number): Received {
  if (typeof r === "number") throw new Error(`recvMsg returned ${r}`);
  return r;
}

function memfdWith(text: string): Memfd {
  const m = Memfd.create(ownLabel("sock"), { closeOnExec: false });
  m.writeAll(enc(text));
  m.seal();
  return m;
}

Deno.test("sockaddrUn encodes family AF_UNIX and the NUL-terminated path in 110 bytes", () => {
  const addr = sockaddrUn("/tmp/x.sock");
  ok(addr !== null);
  assertEquals(addr.length, 110);
  assertEquals([addr[0], addr[1]], [1, 0]);
  assertEquals(dec(addr.subarray(2, 13)), "/tmp/x.sock");
  assertEquals(addr.subarray(13).every((b) => b === 0), true);
});

Deno.test("sockaddrUn accepts a 107-byte path and returns null for a 108-byte path", () => {
  const p107 = "/" + "a".repeat(106);
  const p108 = "/" + "a".repeat(107);
  const addr = sockaddrUn(p107);
  ok(addr !== null);
  assertEquals(addr[108], 0x61);
  assertEquals(addr[109], 0);
  assertEquals(sockaddrUn(p108), null);
  // The limit counts UTF-8 bytes, not characters: 54 two-byte characters are 108 bytes.
  assertEquals(sockaddrUn("é".repeat(54)), null);
  ok(sockaddrUn("é".repeat(53)) !== null);
  assertEquals(socketPathTooLong(p108), `socket path too long: ${p108}`);
});

Deno.test(
  "unixSocket is close-on-exec and nonblocking by default, blocking on request",
  noLeak(() => {
    const a = unixSocket();
    const b = unixSocket(false);
    try {
      assertEquals(hasCloexec(a), true);
      assertEquals(statusFlags(a) & O_NONBLOCK, O_NONBLOCK);
      assertEquals(hasCloexec(b), true);
      assertEquals(statusFlags(b) & O_NONBLOCK, 0);
    } finally {
      closeAll([a, b]);
    }
  }),
);

Deno.test(
  "acceptUnix returns -EAGAIN (-11) when nothing is pending, then accepts close-on-exec nonblocking sockets",
  noLeak(() => {
    using pair = new Pair();
    assertEquals(acceptUnix(pair.listener), -11);
    assertEquals(wouldBlock(acceptUnix(pair.listener)), true);
    assertEquals(hasCloexec(pair.server), true);
    assertEquals(statusFlags(pair.server) & O_NONBLOCK, O_NONBLOCK);
  }),
);

Deno.test(
  "connectUnix returns -ENOENT for a missing path and -ECONNREFUSED for a socket nobody listens on",
  noLeak(() => {
    using dir = tempDir();
    const s = unixSocket();
    try {
      const missing = sockaddrUn(`${dir.path}/none.sock`);
      ok(missing !== null);
      assertEquals(connectUnix(s, missing), -2);
    } finally {
      closeQuietly(s);
    }
    const bound = unixSocket();
    const c = unixSocket();
    try {
      const addr = sockaddrUn(`${dir.path}/bound.sock`);
      ok(addr !== null);
      bindUnix(bound, addr);
      assertEquals(connectUnix(c, addr), -111);
    } finally {
      closeAll([bound, c]);
    }
  }),
);

Deno.test(
  "bindUnix on a path in use throws EADDRINUSE",
  noLeak(() => {
    using pair = new Pair();
    const s = unixSocket();
    try {
      const addr = sockaddrUn(pair.path);
      ok(addr !== null);
      throws(() => bindUnix(s, addr), (e: unknown) => {
        ok(e instanceof ErrnoError);
        assertEquals([e.code, e.message], ["EADDRINUSE", "bind: Address already in use"]);
        return true;
      });
    } finally {
      closeQuietly(s);
    }
  }),
);

Deno.test(
  "peerCredentials returns this process's pid, uid and gid on both ends",
  noLeak(() => {
    using pair = new Pair();
    const me = {
      pid: Deno.pid,
      uid: libc.symbols.geteuid(),
      gid: libc.symbols.getegid(),
    };
    assertEquals(peerCredentials(pair.server), me);
    assertEquals(peerCredentials(pair.client), me);
    assertEquals(me.uid, Deno.uid());
    assertEquals(me.gid, Deno.gid());
  }),
);

Deno.test(
  "peerCredentials of a non-socket throws ENOTSOCK from getsockopt",
  noLeak(() => {
    using p = pipe();
    throws(() => peerCredentials(p.readFd), (e: unknown) => {
      ok(e instanceof ErrnoError);
      assertEquals([e.code, e.syscall], ["ENOTSOCK", "getsockopt"]);
      return true;
    });
  }),
);

Deno.test(
  "sendMsg with one fd delivers exactly one close-on-exec fd to the same file",
  noLeak(() => {
    using pair = new Pair();
    using m = memfdWith("shared");
    assertEquals(hasCloexec(m.fd), false);
    assertEquals(sendMsg(pair.client, enc("hdr"), [m.fd]), 3);
    const buf = new Uint8Array(16);
    const r = received(recvMsg(pair.server, buf));
    try {
      assertEquals([r.bytes, r.fds.length, r.truncated], [3, 1, false]);
      assertEquals(dec(buf.subarray(0, 3)), "hdr");
      const fd = r.fds[0] ?? -1;
      ok(fd >= 0 && fd !== m.fd);
      assertEquals(hasCloexec(fd), true);
      assertEquals(fstat(fd).ino, fstat(m.fd).ino);
      assertEquals(fstat(fd).dev, fstat(m.fd).dev);
    } finally {
      closeAll(r.fds);
    }
  }),
);

for (const n of [2, 3]) {
  Deno.test(
    `sendMsg with ${n} fds delivers all ${n} and closeAll returns the fd count to baseline`,
    noLeak(() => {
      using pair = new Pair();
      const memfds = Array.from({ length: n }, (_, i) => memfdWith(`obj${i}`));
      try {
        const before = ownFds().length;
        assertEquals(sendMsg(pair.client, enc("x"), memfds.map((m) => m.fd)), 1);
        const r = received(recvMsg(pair.server, new Uint8Array(4)));
        assertEquals([r.bytes, r.fds.length, r.truncated], [1, n, false]);
        assertEquals(ownFds().length, before + n);
        assertEquals(
          r.fds.map((fd) => fstat(fd).ino),
          memfds.map((m) => fstat(m.fd).ino),
        );
        assertEquals(r.fds.every((fd) => hasCloexec(fd)), true);
        const targets = r.fds.map((fd) => fdTarget(fd));
        closeAll(r.fds);
        assertEquals(ownFds().length, before);
        assertEquals(r.fds.some((fd, i) => fdTarget(fd) === targets[i]), false);
      } finally {
        for (const m of memfds) m.close();
      }
    }),
  );
}

Deno.test(
  "descriptors arrive with the first bytes of their message, not with later sends",
  noLeak(() => {
    using pair = new Pair();
    using m = memfdWith("x");
    assertEquals(sendMsg(pair.client, new Uint8Array(48).fill(7), [m.fd]), 48);
    assertEquals(sendSome(pair.client, enc("body")), 4);
    const h = received(recvMsg(pair.server, new Uint8Array(48)));
    try {
      assertEquals([h.bytes, h.fds.length], [48, 1]);
      const b = received(recvMsg(pair.server, new Uint8Array(48)));
      assertEquals([b.bytes, b.fds.length], [4, 0]);
    } finally {
      closeAll(h.fds);
    }
  }),
);

Deno.test(
  "a partial read of a message still hands over its descriptor",
  noLeak(() => {
    using pair = new Pair();
    using m = memfdWith("x");
    sendMsg(pair.client, enc("0123456789"), [m.fd]);
    const first = received(recvMsg(pair.server, new Uint8Array(4)));
    const rest = received(recvMsg(pair.server, new Uint8Array(16)));
    try {
      assertEquals([first.bytes, first.fds.length], [4, 1]);
      assertEquals([rest.bytes, rest.fds.length], [6, 0]);
    } finally {
      closeAll(first.fds);
    }
  }),
);

Deno.test(
  "recvMsg returns -EAGAIN with nothing pending and 0 bytes after the peer shuts down",
  noLeak(() => {
    using pair = new Pair();
    assertEquals(recvMsg(pair.server, new Uint8Array(8)), -11);
    sendSome(pair.client, enc("ab"));
    shutdownQuietly(pair.client, SHUT_WR);
    const r = received(recvMsg(pair.server, new Uint8Array(8)));
    assertEquals([r.bytes, r.fds], [2, []]);
    const eof = received(recvMsg(pair.server, new Uint8Array(8)));
    assertEquals([eof.bytes, eof.fds, eof.truncated], [0, [], false]);
  }),
);

Deno.test(
  "recvMsg of a closed descriptor returns -EBADF",
  () => {
    assertEquals(recvMsg(999999, new Uint8Array(4)), -9);
  },
);

Deno.test(
  "sendMsg refuses more than 253 descriptors",
  noLeak(() => {
    using pair = new Pair();
    throws(() => sendMsg(pair.client, enc("x"), new Array<number>(254).fill(0)), {
      name: "RangeError",
      message: "At most 253 descriptors per message",
    });
  }),
);

Deno.test(
  "sendMsg and sendSome return -EAGAIN when the socket buffer is full",
  noLeak(() => {
    using pair = new Pair();
    const chunk = new Uint8Array(65536);
    let total = 0;
    let r = 0;
    for (let i = 0; i < 10000; i++) {
      r = sendSome(pair.client, chunk);
      if (r < 0) break;
      total += r;
    }
    assertEquals(r, -11);
    ok(total > 0);
    assertEquals(sendMsg(pair.client, chunk), -11);
  }),
);

Deno.test(
  "sendMsg to a closed peer returns -EPIPE (-32) and raises no SIGPIPE",
  noLeak(async () => {
    using pair = new Pair();
    let sigpipes = 0;
    const onPipe = (): void => {
      sigpipes++;
    };
    Deno.addSignalListener("SIGPIPE", onPipe);
    try {
      closeQuietly(pair.server);
      pair.server = -1;
      assertEquals(sendMsg(pair.client, enc("hello")), -32);
      assertEquals(sendSome(pair.client, enc("hello")), -32);
      using m = memfdWith("x");
      assertEquals(sendMsg(pair.client, enc("hello"), [m.fd]), -32);
      await letTimePass(50); // a window on purpose: no SIGPIPE may arrive in it
      assertEquals(sigpipes, 0);
      // Control: a plain write to a pipe without a reader does raise SIGPIPE, so the listener
      // would have seen one above.
      using p = pipe();
      p.closeRead();
      assertEquals(libc.symbols.write(p.writeFd, enc("x"), 1n), -1n);
      await waitFor(() => sigpipes > 0, { what: "the control's SIGPIPE" });
      assertEquals(sigpipes, 1);
    } finally {
      Deno.removeSignalListener("SIGPIPE", onPipe);
    }
  }),
);

Deno.test("socketError and wouldBlock interpret negative results", () => {
  const e = socketError(-32, "send", "send put request");
  ok(e instanceof ErrnoError);
  assertEquals([e.message, e.code, e.syscall, e.errno], [
    "send put request: Broken pipe",
    "EPIPE",
    "send",
    32,
  ]);
  assertEquals(socketError(-2, "connect").message, "connect: No such file or directory");
  assertEquals([wouldBlock(-11), wouldBlock(-32), wouldBlock(0), wouldBlock(11)], [
    true,
    false,
    false,
    false,
  ]);
});
