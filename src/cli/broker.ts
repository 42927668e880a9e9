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
import { UsageError } from "../errors.ts";
import { requestTakeover } from "../client/takeover.ts";
import { type FlagKind, parseCommandLine } from "./args.ts";
import { err } from "./output.ts";
import { nameSocket } from "./exit.ts";
import { defaultSocket } from "../client.ts";
import {
  BROKER_FLAGS,
  type BrokerOptions,
  defaultBrokerOptions,
  lastFlagValue,
  parseBrokerArgs,
} from "../core/options.ts";

/** A file named by --config or --policy; one that cannot be read is a file error (exit 1). */
function readFile(flag: string, path: string): string {
  try {
    return Deno.readTextFileSync(path);
  } catch (e) {
    throw new Error(
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

/** The broker's flags as the shared grammar reads them (names without dashes). */
function brokerSpec(): Record<string, FlagKind> {
  const spec: Record<string, FlagKind> = { takeover: "boolean" };
  for (const f of BROKER_FLAGS.valued) spec[f.slice(2)] = "string";
  for (const f of BROKER_FLAGS.switches) spec[f.slice(2)] = "boolean";
  return spec;
}

/**
 * The broker's arguments in the one grammar of every subcommand (`node:util` `parseArgs`, see
 * {@link parseCommandLine}): each `--flag=value` becomes `--flag value`; `--help`/`-h` throws
 * `HelpRequested`; a switch given a value is refused. Unknown flags and positionals are
 * passed on in place, so the option parser reports the first mistake in command-line order,
 * with the C broker's text.
 */
export function splitFlagValues(args: readonly string[]): string[] {
  const known = brokerSpec();
  const out: string[] = [];
  // parseCommandLine refuses an unknown --flag at once; the broker's parser must see it in
  // order, after the values before it were checked. Each unknown flag gets a placeholder.
  const unknown: string[] = [];
  // `--` is no terminator for the broker (the C broker calls it an unexpected argument).
  const masked = args.map((a) => {
    const name = a.startsWith("--") ? a.slice(2).split("=")[0] ?? "" : "";
    if (a !== "--" && (!a.startsWith("--") || name === "help" || Object.hasOwn(known, name))) {
      return a;
    }
    unknown.push(a);
    return `\u0000${unknown.length - 1}`;
  });
  const unmask = (text: string): string =>
    text.startsWith("\u0000") ? unknown[Number(text.slice(1))] ?? "" : text;
  const { items } = parseCommandLine(masked, known);
  for (const it of items) {
    if (it.kind === "flag") out.push(it.flag, unmask(it.value));
    else if (it.kind === "switch") out.push(it.flag);
    else out.push(unmask(it.text));
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
