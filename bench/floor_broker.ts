/**
 * The Deno floor broker: the least a Deno program does to answer PUT, GET and DROP over new
 * connections through this project's FFI layer, so the side-by-side bench can tell the cost of
 * Deno and its FFI from the cost of this broker's own work. `deno run -A bench/floor_broker.ts
 * SOCKET`; it runs until it is killed.
 *
 * What it does per request is what the C broker does: accept, read the request whole, for a PUT
 * read the seals, stat and hash the memfd (node:crypto SHA-256, compared with the digest sent),
 * for a GET reopen the object through `/proc/self/fd`, reply with one sendmsg, write one audit
 * line, close. What it leaves out is everything else: peer credentials, policy, limits, quotas,
 * dedup, names as an index, timeouts, state machines, error replies. It trusts its peer; it is a
 * measuring stick, not a broker.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { closeQuietly, cstr } from "../src/ffi.ts";
import { Poller, type PollEvent } from "../src/sys/poller.ts";
import {
  acceptUnix,
  bindUnix,
  listenUnix,
  recvMsg,
  sendMsg,
  sockaddrUn,
  unixSocket,
} from "../src/sys/unix_socket.ts";
import { pread, tryFstat, tryOpen, tryOpenAt, trySeals, writeAll } from "../src/sys/fd.ts";
import { EPOLLIN, O_DIRECTORY, O_RDONLY, O_RDWR } from "../src/sys/linux.ts";
import {
  Cmd,
  decodeHeader,
  encodeHeader,
  type Header,
  HEADER_SIZE,
  requestBytes,
} from "../src/protocol/wire.ts";

const LISTEN = 0xfffffffe;

interface Stored {
  fd: number;
  size: number;
  name: string;
  /** The GET reply's body: name, then digest. */
  tail: Uint8Array;
}

interface Pending {
  fd: number;
  buf: Uint8Array;
  len: number;
  fds: number[];
}

const enc = new TextEncoder();
const dec = new TextDecoder();
const objects = new Map<number, Stored>();
const pending = new Map<number, Pending>();
const spare: Uint8Array[] = [];
const reply = new Uint8Array(HEADER_SIZE);
const hashBuf = new Uint8Array(1 << 20);
const auditBuf = new Uint8Array(64 * 1024);
let nextId = 1;
let proc = -1;

function audit(op: string, id: number, name: string): void {
  const line = `{"ts_ns":${Date.now()}000000,"op":"${op}","result":"ok","object_id":${id},` +
    `"name":"${name}"}\n`;
  writeAll(1, auditBuf.subarray(0, enc.encodeInto(line, auditBuf).written));
}

function put(h: Header, body: Uint8Array, fd: number, out: Partial<Header>): void {
  trySeals(fd);
  const st = tryFstat(fd);
  const size = typeof st === "number" ? 0 : Number(st.size);
  const n = pread(fd, hashBuf.subarray(0, Math.min(size, hashBuf.length)), 0);
  const hex = createHash("sha256").update(hashBuf.subarray(0, n)).digest("hex");
  const name = dec.decode(body.subarray(0, h.nameLen));
  const text = dec.decode(body.subarray(h.nameLen, h.nameLen + h.textLen));
  const id = nextId++;
  objects.set(id, { fd, size, name, tail: enc.encode(name + `sha256:${hex}`) });
  out.status = text === "" || text.endsWith(hex) ? 0 : 1;
  out.objectId = BigInt(id);
  out.size = BigInt(size);
  audit("put", id, name);
}

/** Answer the request in `c` if it is whole; false when more bytes must arrive first. */
function serve(c: Pending): boolean {
  for (;;) {
    const r = recvMsg(c.fd, c.buf.subarray(c.len));
    if (typeof r === "number") return false;
    for (const d of r.fds) c.fds.push(d);
    if (r.bytes === 0) return true;
    c.len += r.bytes;
    if (c.len < HEADER_SIZE) continue;
    const h = decodeHeader(c.buf);
    if (c.len < HEADER_SIZE + requestBytes(h)) continue;
    const out: Partial<Header> = { cmd: h.cmd };
    let send: Uint8Array = reply;
    const fds: number[] = [];
    const id = Number(h.objectId);
    const o = objects.get(id);
    const fd = c.fds.shift();
    if (h.cmd === Cmd.PUT && fd !== undefined) {
      put(h, c.buf.subarray(HEADER_SIZE), fd, out);
    } else if (h.cmd === Cmd.GET && o !== undefined) {
      fds.push(tryOpenAt(proc, cstr(String(o.fd)), O_RDWR));
      Object.assign(out, { objectId: h.objectId, size: BigInt(o.size) });
      Object.assign(out, { nameLen: enc.encode(o.name).length, textLen: 71 });
      send = new Uint8Array(HEADER_SIZE + o.tail.length);
      send.set(o.tail, HEADER_SIZE);
      audit("get", id, o.name);
    } else if (h.cmd === Cmd.DROP && o !== undefined) {
      objects.delete(id);
      closeQuietly(o.fd);
      Object.assign(out, { objectId: h.objectId, size: BigInt(o.size) });
      audit("drop", id, o.name);
    } else {
      out.status = 2;
    }
    if (fd !== undefined && h.cmd !== Cmd.PUT) closeQuietly(fd);
    encodeHeader(out, reply);
    if (send !== reply) send.set(reply);
    sendMsg(c.fd, send, fds);
    for (const d of fds) closeQuietly(d);
    return true;
  }
}

function finish(c: Pending): void {
  pending.delete(c.fd);
  for (const d of c.fds) closeQuietly(d);
  closeQuietly(c.fd);
  spare.push(c.buf);
}

function main(path: string): void {
  const addr = sockaddrUn(path);
  if (addr === null) throw new Error(`socket path too long: ${path}`);
  try {
    Deno.removeSync(path);
  } catch {
    // Nothing there.
  }
  const listener = unixSocket(true);
  bindUnix(listener, addr);
  listenUnix(listener, 128);
  proc = tryOpen(cstr("/proc/self/fd"), O_RDONLY | O_DIRECTORY);
  const poller = new Poller(64);
  poller.add(listener, EPOLLIN, LISTEN);
  const events: PollEvent[] = [];
  for (;;) {
    for (const ev of poller.poll(events, 1000)) {
      if (ev.token !== LISTEN) {
        const c = pending.get(ev.token);
        if (c !== undefined && serve(c)) finish(c);
        continue;
      }
      for (;;) {
        const fd = acceptUnix(listener);
        if (fd < 0) break;
        const c: Pending = { fd, buf: spare.pop() ?? new Uint8Array(4096), len: 0, fds: [] };
        if (serve(c)) finish(c);
        else {
          pending.set(fd, c);
          poller.add(fd, EPOLLIN, fd);
        }
      }
    }
  }
}

if (import.meta.main) main(Deno.args[0] ?? "/tmp/memfdbus-floor.sock");
