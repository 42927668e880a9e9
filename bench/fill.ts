/**
 * `deno run --allow-all bench/fill.ts [MiB] [rounds]`: how fast a fresh memfd can be filled, the
 * client's half of a large PUT, single-threaded as the client does it (`write`, `sendfile`) and
 * split over two threads (the JavaScript thread and Deno's blocking pool, through a writable
 * shared mapping), which is what issue 13 asked to try. Prints, per way, the median time of a
 * fill and the process's CPU time per fill (user and system), the variants taking turns.
 *
 * @module
 */

import { libc } from "../src/ffi.ts";
import { MAP_FAILED, MAP_SHARED, PROT_READ, PROT_WRITE } from "../src/sys/linux.ts";
import { Memfd } from "../src/sys/memfd.ts";

const S = libc.symbols;
const MiB = 1 << 20;
const size = Number(Deno.args[0] ?? 64) * MiB;
const rounds = Number(Deno.args[1] ?? 10);
const MADV_POPULATE_WRITE = 23;
const half = Math.floor(size / 2 / 4096) * 4096;
const twoThirds = Math.floor(size * 2 / 3 / 4096) * 4096;

const src = new Uint8Array(size);
crypto.getRandomValues(src.subarray(0, 65536));
for (let i = 65536; i < size; i += 65536) src.copyWithin(i, 0, 65536);
const dir = Deno.makeTempDirSync({ prefix: "memfdbus-fill-" });
const path = `${dir}/src.bin`;
Deno.writeFileSync(path, src);
const input = S.open(new TextEncoder().encode(`${path}\0`), 0, 0);

function writeRange(fd: number, from: number, to: number): void {
  for (let off = from; off < to;) {
    const n = Number(S.write(fd, src.subarray(off, to), BigInt(to - off)));
    if (n <= 0) throw new Error("write failed");
    off += n;
  }
}

/** A writable shared mapping of the whole memfd (sized first). */
function mapped(fd: number): Deno.PointerObject {
  if (S.ftruncate(fd, BigInt(size)) !== 0) throw new Error("ftruncate failed");
  const p = S.mmap(null, BigInt(size), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0n);
  if (p === null || Deno.UnsafePointer.equals(p, MAP_FAILED)) throw new Error("mmap failed");
  return p;
}
const at = (p: Deno.PointerObject, off: number): Deno.PointerObject =>
  Deno.UnsafePointer.offset(p, off) as Deno.PointerObject;

const ways: Record<string, (fd: number) => Promise<void>> = {
  "write (the client's way)": (fd) => Promise.resolve(writeRange(fd, 0, size)),
  "sendfile from a file (the client's way)": (fd) => {
    const off = new BigInt64Array([0n]);
    for (let done = 0; done < size;) {
      const n = Number(S.sendfile(fd, input, new Uint8Array(off.buffer), BigInt(size - done)));
      if (n <= 0) throw new Error("sendfile failed");
      done += n;
    }
    return Promise.resolve();
  },
  "mapping, memcpy, 1 thread": (fd) => {
    const p = mapped(fd);
    S.memcpy_to(p, src, BigInt(size));
    S.munmap(p, BigInt(size));
    return Promise.resolve();
  },
  "mapping, memcpy, 2 threads (halves)": async (fd) => {
    const p = mapped(fd);
    const other = S.memcpy_to_async(at(p, half), src.subarray(half), BigInt(size - half));
    S.memcpy_to(p, src.subarray(0, half), BigInt(half));
    await other;
    S.munmap(p, BigInt(size));
  },
  "write 2/3 + mapping memcpy 1/3 on a 2nd thread": async (fd) => {
    const p = mapped(fd);
    const other = S.memcpy_to_async(
      at(p, twoThirds),
      src.subarray(twoThirds),
      BigInt(size - twoThirds),
    );
    writeRange(fd, 0, twoThirds);
    await other;
    S.munmap(p, BigInt(size));
  },
  "write + MADV_POPULATE_WRITE ahead on a 2nd thread": async (fd) => {
    const p = mapped(fd);
    const other = S.madvise_async(at(p, half), BigInt(size - half), MADV_POPULATE_WRITE);
    writeRange(fd, 0, size);
    await other;
    S.munmap(p, BigInt(size));
  },
  "pread from a file into the mapping, 2 threads": async (fd) => {
    const p = mapped(fd);
    const other = S.pread_to_async(input, at(p, half), BigInt(size - half), BigInt(half));
    const a = Number(S.pread_to(input, p, BigInt(half), 0n));
    const b = Number(await other);
    if (a !== half || b !== size - half) throw new Error("short pread");
    S.munmap(p, BigInt(size));
  },
};

/** This process's user and system CPU time in ms (from /proc, 10 ms ticks). */
function cpu(): [number, number] {
  const f = Deno.readTextFileSync("/proc/self/stat").split(") ")[1]?.split(" ") ?? [];
  return [Number(f[11]) * 10, Number(f[12]) * 10];
}

const times = new Map<string, number[]>();
const cpus = new Map<string, [number, number]>();
for (let r = 0; r < rounds; r++) {
  for (const [name, fill] of Object.entries(ways)) {
    using memfd = Memfd.create("fill");
    const [u0, s0] = cpu();
    const t0 = performance.now();
    await fill(memfd.fd);
    const ms = performance.now() - t0;
    const [u1, s1] = cpu();
    times.set(name, [...times.get(name) ?? [], ms]);
    const c = cpus.get(name) ?? [0, 0];
    cpus.set(name, [c[0] + u1 - u0, c[1] + s1 - s0]);
  }
}
const load = Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(" ");
console.log(`fill of a fresh ${size / MiB} MiB memfd, ${rounds} rounds, load average ${load}`);
for (const [name, list] of times) {
  const sorted = [...list].sort((a, b) => a - b);
  const [u, s] = cpus.get(name) ?? [0, 0];
  console.log(
    `${name.padEnd(50)} p50 ${sorted[sorted.length >> 1]?.toFixed(1)} ms  min ${
      sorted[0]?.toFixed(1)
    } ms  CPU per fill: user ${(u / rounds).toFixed(0)} ms, system ${(s / rounds).toFixed(0)} ms`,
  );
}
S.close(input);
Deno.removeSync(dir, { recursive: true });
