/**
 * Support for the cluster tests: real nats-server processes (one node, or three in a cluster)
 * on free loopback ports with temporary stores, started and stopped by pid.
 *
 * @module
 */

import { tempDir } from "./harness.ts";
import { waitFor } from "./wait.ts";

/** Where nats-server is, or null. */
export function findNatsServer(): string | null {
  const dirs = (Deno.env.get("PATH") ?? "").split(":").concat(["/usr/sbin", "/usr/local/bin"]);
  for (const d of dirs) {
    if (d === "") continue;
    try {
      const st = Deno.statSync(`${d}/nats-server`);
      if (st.isFile && ((st.mode ?? 0) & 0o111) !== 0) return `${d}/nats-server`;
    } catch {
      // not here
    }
  }
  return null;
}

/** The nats-server binary, when there is one. */
export const NATS_SERVER: string | null = findNatsServer();

/** Why the cluster tests are skipped, or false when they run. */
export const NATS_IGNORE: false | string = NATS_SERVER === null
  ? "nats-server not found (apt-get install nats-server); cluster tests skipped"
  : false;

if (NATS_IGNORE !== false) console.warn(`ignored: ${NATS_IGNORE}`);

/**
 * A test of brokers on a real nats-server: ignored without one, given a temporary directory
 * (removed afterwards), and free of the resource and op sanitizers (the engine's client keeps
 * timers and sockets of its own past a test's end).
 */
export function clusterTest(name: string, fn: (dir: { path: string }) => Promise<void>): void {
  Deno.test({
    name,
    ignore: NATS_IGNORE !== false,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      using dir = tempDir();
      await fn(dir);
    },
  });
}

async function portOpen(port: number): Promise<boolean> {
  try {
    const c = await Deno.connect({ hostname: "127.0.0.1", port });
    c.close();
    return true;
  } catch {
    return false;
  }
}

/** Ports nobody listens on right now (bound once to learn them, then released). */
export function freePorts(n: number): number[] {
  const ls = Array.from({ length: n }, () => Deno.listen({ hostname: "127.0.0.1", port: 0 }));
  const ports = ls.map((l) => (l.addr as Deno.NetAddr).port);
  for (const l of ls) l.close();
  return ports;
}

/** One nats-server process with JetStream and a store directory that outlives restarts. */
export class NatsNode implements AsyncDisposable {
  readonly dir: string;
  readonly #args: string[];
  #child: Deno.ChildProcess | null = null;
  #port = 0;

  private constructor(dir: string, args: string[]) {
    this.dir = dir;
    this.#args = args;
  }

  /** Start a single node on a free port (`-p -1`, port read from the ports file). */
  static async single(): Promise<NatsNode> {
    const dir = await Deno.makeTempDir({ prefix: "memfdbus-nats-" });
    const node = new NatsNode(dir, ["-js", "-sd", `${dir}/js`, "-a", "127.0.0.1"]);
    await node.start(-1);
    return node;
  }

  /**
   * A node of a cluster, from a config file.
   *
   * @param dir its directory
   * @param config the config file text
   * @param port its client port
   */
  static async fromConfig(dir: string, config: string, port: number): Promise<NatsNode> {
    await Deno.mkdir(dir, { recursive: true });
    await Deno.writeTextFile(`${dir}/nats.conf`, config);
    const node = new NatsNode(dir, ["-c", `${dir}/nats.conf`]);
    await node.start(port);
    return node;
  }

  /** The client port. */
  get port(): number {
    return this.#port;
  }

  /** The client URL. */
  get url(): string {
    return `nats://127.0.0.1:${this.#port}`;
  }

  /** The process id, while running. */
  get pid(): number | null {
    return this.#child?.pid ?? null;
  }

  /**
   * Start (or restart on the same port) and wait until it accepts connections.
   *
   * @param port the client port; -1 picks a free one (first start only)
   */
  async start(port = this.#port): Promise<void> {
    if (this.#child !== null) throw new Error("nats-server already running");
    const args = [...this.#args];
    if (!args.includes("-c")) args.push("-p", String(port), "--ports_file_dir", this.dir);
    const server = NATS_SERVER;
    if (server === null) throw new Error("nats-server not found");
    this.#child = new Deno.Command(server, {
      args,
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).spawn();
    const pid = this.#child.pid;
    if (port === -1) {
      const file = `${this.dir}/nats-server_${pid}.ports`;
      await waitFor(async () => {
        try {
          const j = JSON.parse(await Deno.readTextFile(file)) as { nats?: string[] };
          const url = j.nats?.[0];
          if (url === undefined) return false;
          this.#port = Number(url.slice(url.lastIndexOf(":") + 1));
          return true;
        } catch {
          return false;
        }
      }, { what: `nats-server ports file ${file}` });
    } else {
      this.#port = port;
    }
    await waitFor(() => portOpen(this.#port), {
      what: `nats-server (pid ${pid}) listening on ${this.#port}`,
    });
  }

  /** Kill the process by its pid (SIGKILL: no clean shutdown) and wait for it to exit. */
  async kill(): Promise<void> {
    const child = this.#child;
    if (child === null) return;
    this.#child = null;
    try {
      child.kill("SIGKILL");
    } catch {
      // already gone
    }
    await child.status;
  }

  /** Stop the process and remove its directory. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.kill();
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}

/** Three nats-server nodes in one cluster, each with its own store. */
export class NatsCluster implements AsyncDisposable {
  readonly nodes: NatsNode[];
  readonly #root: string;

  private constructor(root: string, nodes: NatsNode[]) {
    this.#root = root;
    this.nodes = nodes;
  }

  /** Start three nodes on free ports with routes to each other. */
  static async start(): Promise<NatsCluster> {
    const root = await Deno.makeTempDir({ prefix: "memfdbus-nats3-" });
    const ports = freePorts(6);
    const routes = [3, 4, 5].map((i) => `"nats-route://127.0.0.1:${ports[i]}"`).join(", ");
    const nodes: NatsNode[] = [];
    try {
      for (let i = 0; i < 3; i++) {
        const dir = `${root}/n${i + 1}`;
        const config = `server_name: n${i + 1}
listen: "127.0.0.1:${ports[i]}"
jetstream { store_dir: "${dir}/js" }
cluster { name: memfdbus-test, listen: "127.0.0.1:${ports[i + 3]}", routes: [${routes}] }
`;
        nodes.push(await NatsNode.fromConfig(dir, config, ports[i] ?? 0));
      }
    } catch (e) {
      for (const n of nodes) await n.kill();
      throw e;
    }
    return new NatsCluster(root, nodes);
  }

  /** All client URLs. */
  get urls(): string[] {
    return this.nodes.map((n) => n.url);
  }

  /** Stop every node and remove the directories. */
  async [Symbol.asyncDispose](): Promise<void> {
    for (const n of this.nodes) await n.kill();
    await Deno.remove(this.#root, { recursive: true }).catch(() => {});
  }
}
