// A loopback TCP proxy between the edge node and its broker, to cut the link the way networks do:
// hold() stops forwarding in both directions without closing anything (a silent, half-open link:
// bytes are read and dropped, new connections are accepted and held too), reset() ends every
// connection with a TCP RST and forwards again.
import net from 'node:net';

export class LinkProxy {
  private holding = false;
  /** Connections accepted so far (each carries one MQTT CONNECT). */
  accepted = 0;
  private readonly sockets = new Set<net.Socket>();

  private constructor(private readonly server: net.Server, readonly port: number, private readonly targetPort: number) {
    server.on('connection', (client) => this.pipe(client));
  }

  static async start(targetPort: number): Promise<LinkProxy> {
    const server = net.createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    return new LinkProxy(server, (server.address() as net.AddressInfo).port, targetPort);
  }

  get url(): string {
    return `mqtt://127.0.0.1:${this.port}`;
  }

  hold(): void {
    this.holding = true;
  }

  /** RST on both sides of every connection; new ones are forwarded. */
  reset(): void {
    this.holding = false;
    for (const socket of this.sockets) socket.resetAndDestroy();
    this.sockets.clear();
  }

  async close(): Promise<void> {
    this.reset();
    await new Promise((resolve) => this.server.close(resolve));
  }

  private pipe(client: net.Socket): void {
    this.accepted++;
    const upstream = net.connect(this.targetPort, '127.0.0.1');
    this.sockets.add(client);
    this.sockets.add(upstream);
    const forward = (from: net.Socket, to: net.Socket) => {
      from.on('data', (chunk) => {
        if (!this.holding && !to.destroyed) to.write(chunk);
      });
      // While holding, a side that closes is not passed on: the other end must not learn of it.
      from.on('close', () => {
        this.sockets.delete(from);
        if (!this.holding) to.destroy();
      });
      from.on('error', () => {});
    };
    forward(client, upstream);
    forward(upstream, client);
  }
}
