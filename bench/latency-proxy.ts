// A TCP proxy that adds a fixed one-way delay to every byte in both directions: a stand-in
// for the network between a CI runner and Cloudflare's edge (round-trip time = 2 × delay)
// where the kernel offers no netem. It models propagation delay only: bandwidth and order
// are untouched, every chunk is forwarded `delayMs` after it arrived.
import { createServer, connect, type Server, type Socket } from "node:net";

export class LatencyProxy {
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  private listening = 0;

  private constructor(targetPort: number, delayMs: number) {
    this.server = createServer((client) => {
      const upstream = connect(targetPort, "127.0.0.1");
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on("close", () => this.sockets.delete(s));
        s.on("error", () => {
          client.destroy();
          upstream.destroy();
        });
      }
      pipeDelayed(client, upstream, delayMs);
      pipeDelayed(upstream, client, delayMs);
    });
  }

  /** Listens on 127.0.0.1 (a free port) and forwards to 127.0.0.1:`targetPort`. */
  static async start(targetPort: number, delayMs: number): Promise<LatencyProxy> {
    const proxy = new LatencyProxy(targetPort, delayMs);
    await new Promise<void>((resolve) => proxy.server.listen(0, "127.0.0.1", resolve));
    const address = proxy.server.address();
    if (typeof address !== "object" || address === null) throw new Error("the proxy has no port");
    proxy.listening = address.port;
    return proxy;
  }

  get port(): number {
    return this.listening;
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** Forwards `from` to `to`, each chunk `delayMs` after it arrived; the end likewise. */
function pipeDelayed(from: Socket, to: Socket, delayMs: number): void {
  from.on("data", (chunk: Buffer) => {
    setTimeout(() => {
      if (!to.destroyed) to.write(chunk);
    }, delayMs);
  });
  from.on("end", () => setTimeout(() => to.end(), delayMs));
}
