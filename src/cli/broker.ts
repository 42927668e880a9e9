/**
 * `memfdbus broker [...]`: run a broker until SIGINT or SIGTERM. `--config FILE` (JSONC) sets
 * any option and `--policy FILE` the identity policy; flags on the command line override both,
 * and MEMFDBUS_SOCKET sets the socket below all three. Every option is checked before the
 * socket is created. Every valued flag takes `--flag value` or `--flag=value`.
 *
 * Signals: SIGINT and SIGTERM stop the broker. SIGUSR2 starts a new broker (this same program
 * and arguments) and hands the socket and the objects over to it (a binary upgrade, as nginx
 * does) — unless the broker runs in a terminal, where the successor would outlive the shell's
 * job and no longer stop on Ctrl-C: there it is refused with a line on stderr, and
 * `memfdbus broker --takeover` run in another terminal does the upgrade instead. SIGHUP (the
 * terminal closed) stops a broker in a terminal and is ignored, with a line on stderr, by one
 * that is not in a terminal.
 *
 * @module
 */

import { Broker } from "../broker.ts";
import { parseConfig } from "../core/config.ts";
import { ErrnoError, UsageError } from "../errors.ts";
import { requestTakeover } from "../client/takeover.ts";
import { HelpRequested } from "./args.ts";
import { err } from "./output.ts";
import { defaultSocket } from "../client.ts";
import {
  type BrokerOptions,
  defaultBrokerOptions,
  lastFlagValue,
  parseBrokerArgs,
} from "../core/options.ts";

function readFile(flag: string, path: string): string {
  try {
    return Deno.readTextFileSync(path);
  } catch (e) {
    throw new UsageError(
      `${flag} ${path}: ${(e as Error).message.replace(/ \(os error \d+\).*$/s, "")}`,
    );
  }
}

/** The host name, the default host id of the cluster tier. */
export function hostName(): string {
  try {
    return Deno.hostname();
  } catch {
    // Without --allow-sys: the kernel's own copy (readable with --allow-read).
    try {
      return Deno.readTextFileSync("/proc/sys/kernel/hostname").trim();
    } catch {
      return "localhost";
    }
  }
}

/** The broker's flags that take a value (for `--flag=value`). */
const VALUED_FLAGS: ReadonlySet<string> = new Set([
  "--socket",
  "--max-name-bytes",
  "--max-objects",
  "--max-request-bytes",
  "--max-list-bytes",
  "--max-total-bytes",
  "--listen-backlog",
  "--max-clients",
  "--request-timeout-ms",
  "--idle-timeout-ms",
  "--max-wait-ms",
  "--max-waiters",
  "--max-watchers",
  "--socket-mode",
  "--shadow",
  "--config",
  "--policy",
  "--cluster",
  "--host-id",
]);

/**
 * The broker's arguments with every `--flag=value` of a valued flag split into `--flag value`,
 * the one grammar of all subcommands. Throws {@link HelpRequested} on `--help`/`-h` in a flag
 * position.
 */
export function splitFlagValues(args: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < args.length; i++) {
    const a = args[i] ?? "";
    if (a === "--help" || a === "-h") throw new HelpRequested();
    if (VALUED_FLAGS.has(a)) {
      out.push(a);
      if (i + 1 < args.length) out.push(args[++i] ?? "");
      continue;
    }
    const eq = a.indexOf("=");
    if (a.startsWith("--") && eq > 2 && VALUED_FLAGS.has(a.slice(0, eq))) {
      out.push(a.slice(0, eq), a.slice(eq + 1));
      continue;
    }
    out.push(a);
  }
  return out;
}

/** Options from the files named on the command line, then the flags over them. */
export async function brokerOptionsFromArgs(args: readonly string[]): Promise<BrokerOptions> {
  let base: BrokerOptions = { ...defaultBrokerOptions(), socket: defaultSocket() };
  const config = lastFlagValue(args, "--config");
  if (config !== undefined) {
    base = (await parseConfig(readFile("--config", config), config, base, false, hostName))
      .options;
  }
  const policy = lastFlagValue(args, "--policy");
  if (policy !== undefined) {
    base = (await parseConfig(readFile("--policy", policy), policy, base, true)).options;
  }
  return parseBrokerArgs(args, base, hostName);
}

/**
 * The listening socket systemd passed (socket activation): descriptor 3 when LISTEN_PID is this
 * process and LISTEN_FDS is at least 1. The variables are removed so no child inherits them.
 */
export function activationFd(): number | undefined {
  const pid = Deno.env.get("LISTEN_PID");
  const fds = Number(Deno.env.get("LISTEN_FDS") ?? "0");
  if (pid === undefined || pid !== String(Deno.pid) || !(fds >= 1)) return undefined;
  Deno.env.delete("LISTEN_PID");
  Deno.env.delete("LISTEN_FDS");
  Deno.env.delete("LISTEN_FDNAMES");
  return 3;
}

/**
 * argv that runs this same CLI with `args`: the compiled binary itself, or `deno run` with the
 * CLI's permissions and entry point.
 */
export function selfCommand(args: readonly string[]): string[] {
  const exe = Deno.execPath();
  const base = exe.slice(exe.lastIndexOf("/") + 1);
  if (base !== "deno") return [exe, ...args];
  return [
    exe,
    "run",
    "--allow-ffi",
    "--allow-read",
    "--allow-write",
    "--allow-env",
    "--allow-run",
    // The cluster tier (--cluster) talks to NATS over the network.
    "--allow-net",
    Deno.mainModule,
    ...args,
  ];
}

/**
 * Descriptors handed over by an old broker: MEMFDBUS_TAKEOVER=`LISTEN,STATE` (set when the old
 * broker started this process on SIGUSR2).
 */
function inheritedTakeover(): { listenFd: number; takeoverFd: number } | undefined {
  const v = Deno.env.get("MEMFDBUS_TAKEOVER");
  if (v === undefined) return undefined;
  Deno.env.delete("MEMFDBUS_TAKEOVER");
  const [l, t] = v.split(",").map(Number);
  if (!Number.isInteger(l) || !Number.isInteger(t)) {
    throw new UsageError(`invalid MEMFDBUS_TAKEOVER: ${v}`);
  }
  return { listenFd: l as number, takeoverFd: t as number };
}

/** Whether this process runs in a terminal (stdin, stdout or stderr is one). */
function inTerminal(): boolean {
  try {
    return Deno.stdin.isTerminal() || Deno.stdout.isTerminal() || Deno.stderr.isTerminal();
  } catch {
    return false;
  }
}

/** Name the socket path in a failure to create it: `bind: /tmp/x.sock: Permission denied`. */
function nameSocket(e: unknown, socket: string): unknown {
  if (
    !(e instanceof ErrnoError) ||
    !["bind", "listen", "chmod", "unlink", "lstat"].includes(e.syscall)
  ) {
    return e;
  }
  const what = e.message.slice(0, e.message.length - e.description.length - 2);
  const named = new ErrnoError(e.syscall, e.errno, e.description, `${what}: ${socket}`);
  return named;
}

/**
 * Run the broker; resolves with exit code 0 after a signal stopped it, 1 when it stopped on an
 * internal error.
 */
export async function brokerCommand(argv: readonly string[]): Promise<number> {
  const split = splitFlagValues(argv);
  const takeoverFlag = split.includes("--takeover");
  const args = split.filter((a) => a !== "--takeover");
  const { shadow, ...options } = await brokerOptionsFromArgs(args);
  // Signal handlers go in before the socket exists: a SIGTERM that arrives as soon as the
  // listening line is out must stop the broker cleanly, not kill it.
  let broker: Broker | null = null;
  let stopRequested = false;
  const stop = (): void => {
    stopRequested = true;
    void broker?.close();
  };
  const terminal = inTerminal();
  // SIGUSR2: start a new broker (this same program and arguments) and hand everything to it.
  const upgrade = (): void => {
    if (terminal) {
      err(
        "memfdbus broker: SIGUSR2 ignored: this broker runs in a terminal, where its successor " +
          "would not stop on Ctrl-C; run `memfdbus broker --takeover` in another terminal\n",
      );
      return;
    }
    void broker?.handover(selfCommand(["broker", ...args]));
  };
  const hangup = (): void => {
    if (terminal) return stop();
    err("memfdbus broker: SIGHUP ignored (SIGUSR2 upgrades, SIGTERM stops)\n");
  };
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  Deno.addSignalListener("SIGHUP", hangup);
  Deno.addSignalListener("SIGUSR2", upgrade);
  try {
    const inherited = inheritedTakeover() ??
      (takeoverFlag ? await requestTakeover(options.socket) : undefined);
    const listenFd = inherited?.listenFd ?? activationFd();
    try {
      broker = await Broker.start({
        ...options,
        blockingWait: true,
        ...(listenFd === undefined ? {} : { listenFd }),
        ...(inherited === undefined ? {} : { takeoverFd: inherited.takeoverFd }),
        ...(shadow === null ? {} : {
          shadow: { path: shadow, command: selfCommand(["shadow", "--socket", shadow]) },
        }),
      });
    } catch (e) {
      throw nameSocket(e, options.socket);
    }
    if (stopRequested) void broker.close();
    await broker.closed;
    // An internal error (already reported on stderr) must not look like a clean stop.
    if (broker.failure !== null) return 1;
  } finally {
    Deno.removeSignalListener("SIGINT", stop);
    Deno.removeSignalListener("SIGTERM", stop);
    Deno.removeSignalListener("SIGHUP", hangup);
    Deno.removeSignalListener("SIGUSR2", upgrade);
  }
  return 0;
}
