/**
 * `deno task bench --against PATH [--c-bench PATH] [--pin CPU]`: this broker and another
 * memfdbus broker binary (for example the original C one) measured in one run, interleaved round
 * by round, so their ratio holds even on a noisy machine.
 *
 * Each round starts nothing new: both brokers run for the whole section (the other one as
 * `PATH broker --socket SOCKET`, PROTOCOL.md §6), and every round measures both, alternating
 * which goes first. Measured per broker:
 * - with the other project's C bench client (`--c-bench`, default `bench_memfdbus` beside the
 *   `--against` binary, when present): its put_fd and get_fd times per operation (4 KiB, one
 *   connection per request), and the CPU time (user, system) the broker process used per round
 *   of PUT, GET and DROP meanwhile, from /proc/PID/stat: unlike wall time, it hardly depends on
 *   what else the machine runs;
 * - with this project's client: GET over a new connection, and small PUTs one connection at a
 *   time (puts per second).
 *
 * A third broker runs beside the two in every round: the Deno floor broker
 * (`bench/floor_broker.ts`), the same requests answered through this project's FFI layer with
 * none of this broker's own work, so its figures show what Deno itself costs per request.
 *
 * With `--pin CPU` the whole section runs twice: unpinned, then with both brokers, the C bench
 * client, the floor broker and this process pinned to that CPU (taskset). Only processes this module started are
 * ended, by their pid.
 *
 * @module
 */

import { Client } from "../src/client.ts";
import { BrokerProcess } from "../tests/support/harness.ts";

/** One measured figure of one broker. */
export interface SideRow {
  /** What was measured. */
  readonly metric: string;
  /**
   * "ours", "other", or "floor": `bench/floor_broker.ts`, the least a Deno program does to answer
   * the same requests through this project's FFI layer (no policy, limits or state machines).
   */
  readonly broker: Who;
  /** "pinned" or "unpinned". */
  readonly mode: "pinned" | "unpinned";
  /** Median over rounds. */
  readonly value: number;
  /** Unit. */
  readonly unit: string;
}

type Who = "ours" | "other" | "floor";

interface Options {
  readonly against: string;
  readonly cBench: string | null;
  readonly pin: number | null;
  readonly rounds: number;
  readonly iterations: number;
  readonly dir: string;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1] ?? 0;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch {
    return false;
  }
}

/** The other broker, started as `PATH broker --socket SOCKET` (optionally under taskset). */
function startOther(
  path: string,
  socket: string,
  pin: number | null,
): Promise<Deno.ChildProcess> {
  return startServer([path, "broker", "--socket", socket], socket, pin);
}

/** The Deno floor broker (bench/floor_broker.ts) on `socket`. */
function startFloor(socket: string, pin: number | null): Promise<Deno.ChildProcess> {
  const script = new URL("./floor_broker.ts", import.meta.url).pathname;
  return startServer([Deno.execPath(), "run", "-A", script, socket], socket, pin);
}

async function startServer(
  argv: string[],
  socket: string,
  pin: number | null,
): Promise<Deno.ChildProcess> {
  const path = argv[0] ?? "";
  const full = pin === null ? argv : ["taskset", "-c", String(pin), ...argv];
  const child = new Deno.Command(full[0] ?? path, {
    args: full.slice(1),
    stdout: "null",
    stderr: "piped",
    stdin: "null",
  }).spawn();
  const deadline = performance.now() + 15000;
  while (!(await exists(socket))) {
    if (performance.now() > deadline) {
      child.kill("SIGKILL");
      const out = await child.output().catch(() => null);
      throw new Error(
        `${path} broker did not create ${socket}: ${new TextDecoder().decode(out?.stderr)}`,
      );
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return child;
}

/** CPU time a process has used so far (all its threads), user and system, in microseconds. */
function cpuUs(pid: number): { user: number; system: number } {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  // The fields after the command name (which may hold spaces) start at the state, field 3.
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  const tick = 1e6 / CLOCK_TICKS;
  return { user: Number(f[11]) * tick, system: Number(f[12]) * tick };
}

/** The kernel's USER_HZ, the unit of /proc/PID/stat times (100 on Linux on x86-64 and arm64). */
const CLOCK_TICKS = 100;

/**
 * Run the C bench client once: its put_fd and get_fd microseconds per operation, and the CPU the
 * broker (`pid`) used per round of PUT, GET and DROP meanwhile.
 */
async function cBenchRound(
  cBench: string,
  socket: string,
  n: number,
  pin: number | null,
  pid: number,
): Promise<{ put: number; get: number; user: number; system: number }> {
  const before = cpuUs(pid);
  const argv = [cBench, "--socket", socket, "--size", "4096", "--iterations", String(n)];
  argv.push("--backend", "memfdbus");
  const full = pin === null ? argv : ["taskset", "-c", String(pin), ...argv];
  const out = await new Deno.Command(full[0] ?? cBench, {
    args: full.slice(1),
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (out.code !== 0) throw new Error(`${cBench}: ${new TextDecoder().decode(out.stderr)}`);
  const per: Record<string, number> = {};
  for (const line of new TextDecoder().decode(out.stdout).trim().split("\n")) {
    const j = JSON.parse(line) as { operation: string; elapsed_ns: number; iterations: number };
    per[j.operation] = j.elapsed_ns / j.iterations / 1000;
  }
  const after = cpuUs(pid);
  return {
    put: per["put_fd"] ?? 0,
    get: per["get_fd"] ?? 0,
    user: (after.user - before.user) / n,
    system: (after.system - before.system) / n,
  };
}

/** This project's client: GET over a new connection (us, median) and small puts per second. */
async function ourClientRound(socket: string, n: number): Promise<{ get: number; puts: number }> {
  const client = new Client({ socket, keepAlive: false, jobId: null });
  try {
    const bytes = new Uint8Array(4096).fill(7);
    const { id } = await client.put(bytes, { name: "side" });
    const times: number[] = [];
    for (let i = 0; i < n; i++) {
      const t0 = performance.now();
      (await client.get(id)).close();
      times.push((performance.now() - t0) * 1000);
    }
    const small = new Uint8Array(64).fill(1);
    const ids: bigint[] = [];
    const t0 = performance.now();
    for (let i = 0; i < n; i++) ids.push((await client.put(small, { name: `s${i % 16}` })).id);
    const puts = n / ((performance.now() - t0) / 1000);
    for (const x of [...ids, id]) await client.drop(x);
    return { get: median(times), puts };
  } finally {
    client.close();
  }
}

async function pinSelf(cpu: number | null): Promise<void> {
  const mask = cpu === null ? `0-${navigator.hardwareConcurrency - 1}` : String(cpu);
  await new Deno.Command("taskset", { args: ["-pc", mask, String(Deno.pid)], stdout: "null" })
    .output();
}

async function measure(o: Options, pin: number | null): Promise<SideRow[]> {
  const mode = pin === null ? "unpinned" : "pinned";
  const otherSock = `${o.dir}/other-${crypto.randomUUID().slice(0, 8)}.sock`;
  const other = await startOther(o.against, otherSock, pin);
  const wrap = pin === null ? [] : ["taskset", "-c", String(pin)];
  const floorSock = `${o.dir}/floor-${crypto.randomUUID().slice(0, 8)}.sock`;
  const floor = await startFloor(floorSock, pin);
  const samples: Record<string, Record<Who, number[]>> = {};
  const add = (metric: string, who: Who, v: number): void => {
    (samples[metric] ??= { ours: [], other: [], floor: [] })[who].push(v);
  };
  try {
    await using ours = await BrokerProcess.start(o.dir, [], { wrap });
    await pinSelf(pin);
    const sockets = { ours: ours.socket, other: otherSock, floor: floorSock } as const;
    const pids = { ours: ours.child.pid, other: other.pid, floor: floor.pid } as const;
    const orders: Who[][] = [
      ["ours", "other", "floor"],
      ["other", "floor", "ours"],
      ["floor", "ours", "other"],
    ];
    for (let r = 0; r < o.rounds; r++) {
      const order = orders[r % orders.length] ?? [];
      for (const who of order) {
        if (o.cBench !== null) {
          const c = await cBenchRound(o.cBench, sockets[who], o.iterations, pin, pids[who]);
          add("C bench client: put 4 KiB (new connection)", who, c.put);
          add("C bench client: get (new connection)", who, c.get);
          add("C bench client: broker user CPU per put+get+drop", who, c.user);
          add("C bench client: broker system CPU per put+get+drop", who, c.system);
        }
        const t = await ourClientRound(sockets[who], Math.max(100, o.iterations >> 1));
        add("our client: get (new connection) p50", who, t.get);
        add("our client: small puts, one connection each", who, t.puts);
      }
    }
  } finally {
    await pinSelf(null);
    other.kill("SIGTERM");
    await other.status;
    floor.kill("SIGTERM");
    await floor.status;
  }
  const rows: SideRow[] = [];
  for (const [metric, s] of Object.entries(samples)) {
    const unit = metric.includes("puts") ? "puts/s" : "us";
    rows.push({ metric, broker: "ours", mode, value: median(s.ours), unit });
    rows.push({ metric, broker: "other", mode, value: median(s.other), unit });
    rows.push({ metric, broker: "floor", mode, value: median(s.floor), unit });
  }
  return rows;
}

/**
 * Run the side-by-side comparison (unpinned, then pinned when `pin` is set) and return its rows.
 *
 * @param args the bench's arguments (`--against`, `--c-bench`, `--pin`, `--quick`)
 * @param dir a scratch directory for sockets
 */
export async function sideBySide(args: readonly string[], dir: string): Promise<SideRow[]> {
  const value = (flag: string): string | null => {
    const i = args.indexOf(flag);
    return i >= 0 ? args[i + 1] ?? null : null;
  };
  const against = value("--against");
  if (against === null) throw new TypeError("--against needs a memfdbus binary");
  let cBench = value("--c-bench");
  if (cBench === null) {
    const sibling = `${against.slice(0, against.lastIndexOf("/") + 1)}bench_memfdbus`;
    cBench = await exists(sibling) ? sibling : null;
  }
  const pinText = value("--pin");
  const pin = pinText === null ? null : Number(pinText);
  if (pin !== null && !(Number.isInteger(pin) && pin >= 0)) throw new TypeError("--pin CPU");
  const quick = args.includes("--quick");
  const o: Options = {
    against,
    cBench,
    pin,
    rounds: quick ? 3 : 6,
    iterations: quick ? 500 : 2000,
    dir,
  };
  const rows = await measure(o, null);
  if (pin !== null) rows.push(...await measure(o, pin));
  return rows;
}
