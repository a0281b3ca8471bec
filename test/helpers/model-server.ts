// A model file server on loopback (http, or https with helpers/certs.ts's certificates) whose
// files can misbehave the ways a real one does: stall, never answer, lie about the length.
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo, Socket } from 'node:net';

/**
 * normal: the body, honouring Range; stall: headers and half the body, then nothing;
 * silent: accepts the connection and never answers; short: announces the full length, sends half
 * and closes; long: announces and sends more than the body (chunked, no length); missing: 404.
 */
export type Behaviour = 'normal' | 'stall' | 'silent' | 'short' | 'long' | 'missing';

export class ModelServer {
  /** Range headers received, per path, in order. */
  readonly ranges: Array<{ path: string; range: string | undefined }> = [];
  private readonly files = new Map<string, { body: Buffer; behaviour: Behaviour }>();
  private readonly sockets = new Set<Socket>();

  private constructor(private readonly server: http.Server, readonly origin: string) {
    server.on('connection', (socket) => {
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
    });
  }

  static async start(tls?: { cert: string; key: string }): Promise<ModelServer> {
    const handler = (req: http.IncomingMessage, res: http.ServerResponse) => holder.handle(req, res);
    const server = tls ? https.createServer({ cert: fs.readFileSync(tls.cert), key: fs.readFileSync(tls.key) }, handler) : http.createServer(handler);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    const holder = new ModelServer(server, `${tls ? 'https' : 'http'}://127.0.0.1:${port}`);
    return holder;
  }

  /** Serve `body` at `urlPath`; returns its URL. */
  serve(urlPath: string, body: Buffer, behaviour: Behaviour = 'normal'): string {
    this.files.set(urlPath, { body, behaviour });
    return `${this.origin}${urlPath}`;
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await new Promise((resolve) => this.server.close(resolve));
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const urlPath = req.url ?? '';
    this.ranges.push({ path: urlPath, range: req.headers.range });
    const file = this.files.get(urlPath);
    if (!file || file.behaviour === 'missing') {
      res.writeHead(404).end();
      return;
    }
    const { body, behaviour } = file;
    if (behaviour === 'silent') return;
    if (behaviour === 'long') {
      res.writeHead(200);
      res.end(Buffer.concat([body, Buffer.alloc(1024, 1)]));
      return;
    }
    const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    const start = range ? Number(range[1]) : 0;
    const part = body.subarray(start);
    const headers = { 'content-length': String(part.length), 'content-type': 'application/octet-stream' };
    if (range) res.writeHead(206, { ...headers, 'content-range': `bytes ${start}-${body.length - 1}/${body.length}` });
    else res.writeHead(200, headers);
    if (behaviour === 'normal') {
      res.end(part);
      return;
    }
    res.write(part.subarray(0, Math.floor(part.length / 2)));
    if (behaviour === 'short') setImmediate(() => res.socket?.destroy());
    // stall: the rest never comes
  }
}
