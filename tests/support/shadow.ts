/**
 * Helpers for the shadow and takeover tests: finding the processes a broker started (shadows
 * leave the broker's session and outlive it), reading their descriptor tables, deterministic
 * payloads, and a tracker that kills every process a test started.
 *
 * @module
 */

import { alive, BrokerProcess, digestOf, fdCount, fdTable } from "./harness.ts";
import { waitFor } from "./wait.ts";

/** The argv of a process, or null when it is gone (or a zombie, whose cmdline is empty). */
export function cmdline(pid: number): string[] | null {
  try {
    const raw = Deno.readTextFileSync(`/proc/${pid}/cmdline`);
    if (raw === "") return null;
    return raw.split("\0").filter((a, i, all) => i < all.length - 1 || a !== "");
  } catch {
    return null;
  }
}

/** Pids whose argv satisfies `match` (this process excluded). */
export function pidsWhere(match: (argv: string[]) => boolean): number[] {
  const out: number[] = [];
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    const pid = Number(e.name);
    if (pid === Deno.pid) continue;
    const argv = cmdline(pid);
    if (argv !== null && match(argv)) out.push(pid);
  }
  return out.sort((a, b) => a - b);
}

function hasPair(argv: readonly string[], flag: string, value: string): boolean {
  for (let i = 0; i + 1 < argv.length; i++) {
    if (argv[i] === flag && argv[i + 1] === value) return true;
  }
  return false;
}

/** Pids of `memfdbus shadow --socket PATH` processes (what `pgrep -f` would find). */
export function shadowPids(path: string): number[] {
  return pidsWhere((a) => a.includes("shadow") && hasPair(a, "--socket", path));
}

/** Pids of `memfdbus broker ... --socket PATH` processes. */
export function brokerPids(socket: string): number[] {
  return pidsWhere((a) => a.includes("broker") && hasPair(a, "--socket", socket));
}

/** Send a signal to a pid (ignoring a process that is already gone). */
export function signal(pid: number, sig: Deno.Signal): void {
  try {
    Deno.kill(pid, sig);
  } catch {
    // Gone already.
  }
}

/** SIGKILL a pid and wait until it is gone. */
export async function killAndWait(pid: number, timeoutMs = 5000): Promise<void> {
  signal(pid, "SIGKILL");
  await waitFor(() => !alive(pid), { what: `process ${pid} to die`, timeoutMs: timeoutMs });
}

/** The single shadow on `path`, waiting for it to appear. */
export async function theShadow(path: string, timeoutMs = 15_000): Promise<number> {
  const pids = await waitFor(
    () => {
      const p = shadowPids(path).filter(alive);
      return p.length > 0 ? p : null;
    },
    { what: `a shadow on ${path}`, timeoutMs: timeoutMs },
  );
  if (pids.length !== 1) throw new Error(`expected one shadow on ${path}, found ${pids}`);
  return pids[0] ?? 0;
}

/** Descriptors of `pid` that are memfds. */
export function memfdCount(pid: number): number {
  let n = 0;
  for (const target of fdTable(pid).values()) if (target.startsWith("/memfd:")) n++;
  return n;
}

/**
 * The descriptor count of `pid` once it has stopped changing (the same value `samples` times in
 * a row, `gapMs` apart), or once it equals `expect`.
 */
export async function settledFdCount(
  pid: number,
  expect?: number,
  timeoutMs = 10_000,
): Promise<number> {
  let last = -1;
  let same = 0;
  try {
    return await waitFor(() => {
      const n = fdCount(pid);
      same = n === last ? same + 1 : 0;
      last = n;
      return n === expect || (same >= 4 && expect === undefined) ? n : null;
    }, {
      what: expect === undefined ? `the descriptors of ${pid} to settle` : `${expect} descriptors`,
      timeoutMs,
      everyMs: 50,
    });
  } catch {
    return last; // the caller's assertion shows the count
  }
}

/** Pids holding the listening socket bound to `path` (from /proc/net/unix and /proc/PID/fd). */
export function listenerPids(path: string): number[] {
  const inodes = new Set<string>();
  for (const line of Deno.readTextFileSync("/proc/net/unix").split("\n").slice(1)) {
    const cols = line.trim().split(/\s+/);
    // Num RefCount Protocol Flags Type St Inode Path; St 01 with __SO_ACCEPTCON is listening.
    if (cols.length >= 8 && cols[7] === path && cols[3] === "00010000") inodes.add(cols[6] ?? "");
  }
  const out: number[] = [];
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name) || Number(e.name) === Deno.pid) continue;
    try {
      for (const target of fdTable(Number(e.name)).values()) {
        const m = /^socket:\[(\d+)\]$/.exec(target);
        if (m !== null && inodes.has(m[1] ?? "")) {
          out.push(Number(e.name));
          break;
        }
      }
    } catch {
      // Gone, or not ours to read.
    }
  }
  return out.sort((a, b) => a - b);
}

/** Deterministic pseudo-random bytes (xorshift32) for a seed: every payload can be rebuilt. */
export function payload(seed: number, size: number): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(size);
  const words = new Uint32Array(out.buffer, 0, size >>> 2);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < words.length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    words[i] = x;
  }
  for (let i = words.length * 4; i < size; i++) out[i] = (seed + i) & 0xff;
  return out;
}

/** Digest of {@link payload}. */
export function payloadDigest(seed: number, size: number): string {
  return digestOf(payload(seed, size));
}

/**
 * Runs the harness's `deno run PERMS cli.ts broker ...` with `--allow-run` added: a broker with
 * `--shadow` starts the shadow, and one that gets SIGUSR2 starts its successor, as subprocesses.
 * The harness's CLI_PERMS (like `deno task broker`) lack it; see the report of issue 6's tests.
 * `exec` keeps the pid, so BrokerProcess.pid is the broker's.
 */
export const WITH_RUN: readonly string[] = [
  "/bin/sh",
  "-c",
  'shift; exec "$0" run --allow-run "$@"',
];

/**
 * Every process a test started: brokers (as BrokerProcess), shadows (by socket path; they are
 * found by argv because they run in their own session and outlive their brokers) and other
 * pids. `cleanup()` kills them all and waits for the pipes to close.
 */
export class Tracker implements AsyncDisposable {
  readonly brokers: BrokerProcess[] = [];
  readonly shadowPaths = new Set<string>();
  readonly sockets = new Set<string>();
  readonly children: Deno.ChildProcess[] = [];

  /** Start a broker and remember it (and its socket and shadow paths). */
  async broker(dir: string, args: readonly string[]): Promise<BrokerProcess> {
    const i = args.indexOf("--shadow");
    if (i >= 0) this.shadowPaths.add(args[i + 1] ?? "");
    const b = await BrokerProcess.start(dir, args, { wrap: WITH_RUN });
    this.brokers.push(b);
    this.sockets.add(b.socket);
    return b;
  }

  /**
   * Kill every process started by the test: brokers first (a broker whose shadow dies starts a
   * new one), then shadows, until none is left; then wait for the brokers' pipes to close (the
   * shadows hold their stderr).
   */
  async cleanup(): Promise<void> {
    for (let round = 0; round < 5; round++) {
      const brokers = new Set<number>(this.brokers.map((b) => b.pid));
      for (const s of this.sockets) for (const pid of brokerPids(s)) brokers.add(pid);
      for (const pid of brokers) signal(pid, "SIGKILL");
      for (const pid of brokers) {
        await waitFor(() => !alive(pid), { what: `process ${pid} to die` }).catch(() => {});
      }
      const shadows = new Set<number>();
      for (const p of this.shadowPaths) for (const pid of shadowPids(p)) shadows.add(pid);
      for (const pid of shadows) signal(pid, "SIGKILL");
      for (const pid of shadows) {
        await waitFor(() => !alive(pid), { what: `process ${pid} to die` }).catch(() => {});
      }
      if (brokers.size === 0 && shadows.size === 0) break;
    }
    for (const c of this.children) {
      try {
        c.kill("SIGKILL");
      } catch {
        // Gone already.
      }
      await c.status;
    }
    for (const b of this.brokers) await b.stop("SIGKILL");
  }

  /** Same as cleanup(). */
  [Symbol.asyncDispose](): Promise<void> {
    return this.cleanup();
  }
}
