// A loopback TCP proxy between the edge node and its broker, to cut the link the way networks do:
// hold() stops forwarding in both directions without closing anything (a silent, half-open link:
// bytes are read and dropped, new connections are accepted and held too), reset() ends every
// connection with a TCP RST and forwards again. refuseSubscriptions plays a broker whose ACL or
// maximum QoS refuses them (mosquitto 2.0.11 instead grants and filters, or refuses the CONNECT):
// every MQTT 3.1.1 SUBACK it forwards says 0x80 (failure) for each topic.
import net from 'node:net';

export class LinkProxy {
  private holding = false;
  refuseSubscriptions = false;
  /** Every whole MQTT 3.1.1 packet the clients sent, in order (all connections). */
  readonly clientPackets: SeenPacket[] = [];
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
      from.on('data', (chunk: Buffer) => {
        if (this.refuseSubscriptions && from === upstream) refuseSubacks(chunk);
        if (from === client) readClientPackets(chunk, this.clientPackets);
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

/** The whole MQTT packets of a chunk: first byte, and where the variable header starts and the packet ends. */
function* packets(chunk: Buffer): Generator<{ first: number; body: number; end: number }> {
  for (let at = 0; at < chunk.length;) {
    let length = 0;
    let i = at + 1;
    for (let shift = 0; i < chunk.length; shift += 7) {
      const byte = chunk[i++]!;
      length += (byte & 0x7f) << shift;
      if (!(byte & 0x80)) break;
    }
    if (i + length > chunk.length) return;
    yield { first: chunk[at]!, body: i, end: i + length };
    at = i + length;
  }
}

/** Rewrite, in place, the return codes of the whole MQTT 3.1.1 SUBACKs in a chunk to 0x80. */
function refuseSubacks(chunk: Buffer): void {
  for (const p of packets(chunk)) if (p.first === 0x90) chunk.fill(0x80, p.body + 2, p.end);
}

export interface SeenPacket {
  /** MQTT packet type: 1 CONNECT, 3 PUBLISH, 8 SUBSCRIBE, ... */
  type: number;
  /** SUBSCRIBE: topic filter -> requested QoS. */
  subscriptions?: Record<string, number>;
  /** CONNECT: the Will's flags. */
  will?: { set: boolean; qos: number; retain: boolean };
}

/** What an MQTT 3.1.1 client sent, packet by packet (SUBSCRIBE with its filters and QoS). */
function readClientPackets(chunk: Buffer, into: SeenPacket[]): void {
  for (const p of packets(chunk)) {
    const type = p.first >> 4;
    if (type === 1) {
      const flags = chunk[p.body + 2 + chunk.readUInt16BE(p.body) + 1]!; // after protocol name and level
      into.push({ type, will: { set: Boolean(flags & 0x04), qos: (flags >> 3) & 0x03, retain: Boolean(flags & 0x20) } });
      continue;
    }
    if (type !== 8) {
      into.push({ type });
      continue;
    }
    const subscriptions: Record<string, number> = {};
    for (let i = p.body + 2; i + 2 < p.end;) {
      const length = chunk.readUInt16BE(i);
      subscriptions[chunk.toString('utf8', i + 2, i + 2 + length)] = chunk[i + 2 + length]! & 0x03;
      i += 3 + length;
    }
    into.push({ type, subscriptions });
  }
}
