/**
 * `memfdbus broker [...]`: run a broker until SIGINT or SIGTERM. `--config FILE` (JSONC) sets
 * any option and `--policy FILE` the identity policy; flags on the command line override both.
 * Every option is checked before the socket is created.
 *
 * @module
 */

import { Broker } from "../broker.ts";
import { parseConfig } from "../config.ts";
import { UsageError } from "../errors.ts";
import {
  type BrokerOptions,
  defaultBrokerOptions,
  lastFlagValue,
  parseBrokerArgs,
} from "../options.ts";

function readFile(flag: string, path: string): string {
  try {
    return Deno.readTextFileSync(path);
  } catch (e) {
    throw new UsageError(
      `${flag} ${path}: ${(e as Error).message.replace(/ \(os error \d+\).*$/s, "")}`,
    );
  }
}

/** Options from the files named on the command line, then the flags over them. */
export function brokerOptionsFromArgs(args: readonly string[]): BrokerOptions {
  let base = defaultBrokerOptions();
  const config = lastFlagValue(args, "--config");
  if (config !== undefined) base = parseConfig(readFile("--config", config), config, base).options;
  const policy = lastFlagValue(args, "--policy");
  if (policy !== undefined) {
    base = parseConfig(readFile("--policy", policy), policy, base, true).options;
  }
  return parseBrokerArgs(args, base);
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

/** Run the broker; resolves with exit code 0 after a signal stopped it. */
export async function brokerCommand(args: readonly string[]): Promise<number> {
  const options = brokerOptionsFromArgs(args);
  const listenFd = activationFd();
  const broker = await Broker.start({
    ...options,
    blockingWait: true,
    ...(listenFd === undefined ? {} : { listenFd }),
  });
  const stop = (): void => void broker.close();
  Deno.addSignalListener("SIGINT", stop);
  Deno.addSignalListener("SIGTERM", stop);
  await broker.closed;
  Deno.removeSignalListener("SIGINT", stop);
  Deno.removeSignalListener("SIGTERM", stop);
  return 0;
}
