/**
 * A stand-in for a broker on a Unix socket: a few lines of python that answer every connection's
 * first 48 bytes (a request header) with one fixed reply, or never accept at all. Tests use it for
 * what a real broker of ours would never do: a C broker's odd listings, a squatter on the socket
 * path, a broker that accepts and then says nothing.
 *
 * @module
 */

import { ok } from "./assert.ts";

/** The system python the stand-in runs on. */
export const PYTHON = "/usr/bin/python3";

/** Options of {@link standIn}. */
export interface StandInOptions {
  /** Answer every connection's header with these bytes; without, never accept. */
  readonly reply?: Uint8Array;
  /** Run as this uid (and gid) through setpriv (needs root). */
  readonly uid?: number;
}

/** Listen on `path` until disposed (killed by pid), as {@link StandInOptions} says. */
export async function standIn(path: string, o: StandInOptions = {}): Promise<AsyncDisposable> {
  const serve = o.reply === undefined
    ? "signal.pause()"
    : "while True:\n  c,_=s.accept()\n  n=0\n  while n<48:\n    b=c.recv(48-n)\n    if not b: break\n" +
      "    n+=len(b)\n  try: c.sendall(bytes.fromhex(sys.argv[2]))\n  except OSError: pass\n  c.close()";
  const hex = Array.from(o.reply ?? [], (b) => b.toString(16).padStart(2, "0")).join("");
  const python = [
    PYTHON,
    "-c",
    "import signal,socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.bind(sys.argv[1])\ns.listen(16)\n" +
    "print('ready',flush=True)\n" + serve,
    path,
    hex,
  ];
  const argv = o.uid === undefined
    ? python
    : ["setpriv", `--reuid=${o.uid}`, `--regid=${o.uid}`, "--clear-groups", ...python];
  const child = new Deno.Command(argv[0] ?? PYTHON, {
    args: argv.slice(1),
    stdout: "piped",
    stderr: "inherit",
    stdin: "null",
  }).spawn();
  const reader = child.stdout.getReader();
  const first = await reader.read();
  ok(new TextDecoder().decode(first.value ?? new Uint8Array()).includes("ready"), "stand-in ready");
  return {
    async [Symbol.asyncDispose](): Promise<void> {
      child.kill("SIGKILL");
      await child.status;
      reader.releaseLock();
      await child.stdout.cancel();
    },
  };
}
