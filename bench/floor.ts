/**
 * The floor for descriptor round trips: two processes exchanging a 48-byte request and a 48-byte
 * reply carrying one descriptor over an AF_UNIX stream socket, with plain blocking system calls
 * (poll + recvmsg/sendmsg) and no event loop. Run as `floor.ts server SOCKET`; the benchmark
 * drives the client side with {@link floorRoundTrips}.
 *
 * @module
 */

import { closeQuietly, cstr, libc } from "../src/ffi.ts";
import { POLLIN } from "../src/sys/linux.ts";
import { Memfd } from "../src/sys/memfd.ts";
import {
  acceptUnix,
  bindUnix,
  closeAll,
  connectUnix,
  listenUnix,
  recvMsg,
  sendMsg,
  sockaddrUn,
  unixSocket,
} from "../src/sys/unix_socket.ts";

const pollBuf = new Uint8Array(8);
const pollView = new DataView(pollBuf.buffer);

/** Block until `fd` is readable. */
function waitReadable(fd: number): void {
  pollView.setInt32(0, fd, true);
  pollView.setInt16(4, POLLIN, true);
  libc.symbols.poll(pollBuf, 1n, -1);
}

function serve(path: string): void {
  const addr = sockaddrUn(path);
  if (addr === null) throw new Error("socket path too long");
  libc.symbols.unlink(cstr(path));
  const listener = unixSocket(true);
  bindUnix(listener, addr);
  listenUnix(listener, 128);
  const memfd = Memfd.create("floor");
  memfd.writeAll(new Uint8Array(4096));
  const reply = new Uint8Array(48);
  const buf = new Uint8Array(48);
  console.log("ready");
  for (;;) {
    waitReadable(listener);
    const c = acceptUnix(listener);
    if (c < 0) continue;
    for (;;) {
      waitReadable(c);
      const r = recvMsg(c, buf);
      if (typeof r === "number") continue;
      closeAll(r.fds);
      if (r.bytes === 0) break;
      sendMsg(c, reply, [memfd.fd]);
    }
    closeQuietly(c);
  }
}

/**
 * Time `n` round trips against a floor server: on one kept connection, or with a new connection
 * per round trip. Returns the per-round-trip times in microseconds.
 */
export function floorRoundTrips(path: string, n: number, newConnection: boolean): number[] {
  const addr = sockaddrUn(path);
  if (addr === null) throw new Error("socket path too long");
  const req = new Uint8Array(48);
  const buf = new Uint8Array(48);
  const times: number[] = [];
  let fd = -1;
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    if (fd < 0) {
      fd = unixSocket(true);
      if (connectUnix(fd, addr) !== 0) throw new Error("floor connect failed");
    }
    sendMsg(fd, req);
    waitReadable(fd);
    const r = recvMsg(fd, buf);
    if (typeof r === "number") throw new Error(`floor recv failed ${r}`);
    closeAll(r.fds);
    if (newConnection) {
      closeQuietly(fd);
      fd = -1;
    }
    times.push((performance.now() - t0) * 1000);
  }
  closeQuietly(fd);
  return times;
}

if (import.meta.main && Deno.args[0] === "server") {
  serve(Deno.args[1] ?? "/tmp/memfdbus-floor.sock");
}
