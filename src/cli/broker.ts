/**
 * `memfdbus broker [...]`: run a broker until SIGINT or SIGTERM. `--config FILE` (JSONC) sets
 * any option and `--policy FILE` the identity policy; flags on the command line override both.
 * Every option is checked before the socket is created.
 *
 * @module
 */

import { Broker } from "../broker.ts";
import { parseConfig } from "../core/config.ts";
import { UsageError } from "../errors.ts";
import { requestTakeover } from "../client/takeover.ts";
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

/** Options from the files named on the command line, then the flags over them. */
export async function brokerOptionsFromArgs(args: readonly string[]): Promise<BrokerOptions> {
  let base = defaultBrokerOptions();
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
 * broker started this process on SIGHUP).
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

/** Run the broker; resolves with exit code 0 after a signal stopped it. */
export async function brokerCommand(argv: readonly string[]): Promise<number> {
  const takeoverFlag = argv.includes("--takeover");
  const args = argv.filter((a) => a !== "--takeover");
  const { shadow, ...options } = await brokerOptionsFromArgs(args);
  // Signal handlers go in before the socket exists: a SIGTERM that arrives as soon as the
  // listening line is out must stop the broker cleanly, not kill it.
  let broker: Broker | null = null;
  let stopRequested = false;
  const stop = (): void => {
    stopRequested = true;
    void broker?.close();
  };
  // SIGHUP: start a new broker (this same program and arguments) and hand everything to it.
  const upgrade = (): void => void broker?.handover(selfCommand(["broker", ...args]));
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  Deno.addSignalListener("SIGHUP", upgrade);
  try {
    const inherited = inheritedTakeover() ??
      (takeoverFlag ? await requestTakeover(options.socket) : undefined);
    const listenFd = inherited?.listenFd ?? activationFd();
    broker = await Broker.start({
      ...options,
      blockingWait: true,
      ...(listenFd === undefined ? {} : { listenFd }),
      ...(inherited === undefined ? {} : { takeoverFd: inherited.takeoverFd }),
      ...(shadow === null ? {} : {
        shadow: { path: shadow, command: selfCommand(["shadow", "--socket", shadow]) },
      }),
    });
    if (stopRequested) void broker.close();
    await broker.closed;
  } finally {
    Deno.removeSignalListener("SIGINT", stop);
    Deno.removeSignalListener("SIGTERM", stop);
    Deno.removeSignalListener("SIGHUP", upgrade);
  }
  return 0;
}
