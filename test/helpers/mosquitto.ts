// A real mosquitto broker for tests: /usr/sbin/mosquitto on a free loopback port with a temp config
// (anonymous, no persistence), which a test can stop and start again on the same port to play a
// broker outage.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { killOnExit, tempDir } from './cleanup.js';

const MOSQUITTO = process.env.MOSQUITTO_BIN ?? '/usr/sbin/mosquitto';

export class Mosquitto {
  private process: ChildProcess | null = null;
  private output = '';

  /** The TLS listener's port (0 without `tls`). */
  tlsPort = 0;

  private constructor(readonly port: number, private readonly dir: string) {}

  /**
   * Start a broker on a free loopback port (or `port`) and wait until it accepts connections.
   * `persistence: true` keeps retained messages and persistent sessions (clean: false) across
   * stop/start, in the temp directory: a subscriber that must see everything published while the
   * broker was restarting uses such a session.
   */
  static async start(options: {
    port?: number;
    persistence?: boolean;
    /** A second listener with TLS (server files, PEM), client certificates required, and these users. */
    tls?: { ca: string; cert: string; key: string; users: Record<string, string> };
    /** Log every client connection (id, protocol version: "p2" is MQTT 3.1.1, "p5" MQTT 5) to `log`. */
    logConnections?: boolean;
  } = {}): Promise<Mosquitto> {
    const dir = tempDir('mosquitto');
    const broker = new Mosquitto(options.port ?? (await freePort()), dir);
    let tls: string[] = [];
    if (options.tls) {
      broker.tlsPort = await freePort();
      const passwords = path.join(dir, 'passwords');
      fs.writeFileSync(passwords, '');
      for (const [user, password] of Object.entries(options.tls.users)) execFileSync('mosquitto_passwd', ['-b', passwords, user, password]);
      fs.chmodSync(dir, 0o711);
      fs.chmodSync(passwords, 0o644);
      tls = [
        `listener ${broker.tlsPort} 127.0.0.1`, `cafile ${options.tls.ca}`, `certfile ${options.tls.cert}`, `keyfile ${options.tls.key}`,
        'require_certificate true', 'allow_anonymous false', `password_file ${passwords}`,
      ];
    }
    let persistence = ['persistence false'];
    if (options.persistence) {
      // Started as root, mosquitto drops to its own user: it must be able to write the data dir.
      const data = path.join(dir, 'data');
      fs.mkdirSync(data);
      fs.chmodSync(dir, 0o711);
      fs.chmodSync(data, 0o777);
      persistence = ['persistence true', `persistence_location ${data}${path.sep}`, 'autosave_interval 0'];
    }
    fs.writeFileSync(
      path.join(dir, 'mosquitto.conf'),
      [
        ...(options.tls ? ['per_listener_settings true'] : []),
        `listener ${broker.port} 127.0.0.1`, 'allow_anonymous true', ...tls, ...persistence,
        'log_dest stderr', 'log_type error', 'log_type warning', ...(options.logConnections ? ['log_type notice'] : []), '',
      ].join('\n'),
    );
    await broker.start();
    return broker;
  }

  /** What the broker has logged since it was last started. */
  get log(): string {
    return this.output;
  }

  get url(): string {
    return `mqtt://127.0.0.1:${this.port}`;
  }

  get running(): boolean {
    return this.process !== null;
  }

  /** (Re)start the broker on its port; resolves once it accepts TCP connections. */
  async start(): Promise<void> {
    if (this.process) return;
    if (!fs.existsSync(MOSQUITTO)) throw new Error(`mosquitto not found at ${MOSQUITTO} (apt-get install mosquitto, or set MOSQUITTO_BIN)`);
    this.output = '';
    const child = killOnExit(spawn(MOSQUITTO, ['-c', path.join(this.dir, 'mosquitto.conf')], { stdio: ['ignore', 'pipe', 'pipe'] }));
    child.stdout?.on('data', (d: Buffer) => (this.output += d.toString()));
    child.stderr?.on('data', (d: Buffer) => (this.output += d.toString()));
    this.process = child;
    let exited: number | null | undefined;
    child.once('exit', (code) => {
      exited = code;
      if (this.process === child) this.process = null;
    });
    const deadline = Date.now() + 10_000;
    for (;;) {
      if (exited !== undefined) throw new Error(`mosquitto exited with code ${exited} on port ${this.port}:\n${this.output}`);
      if (await accepts(this.port)) return;
      if (Date.now() > deadline) {
        await this.stop();
        throw new Error(`mosquitto did not accept connections on port ${this.port} within 10 s:\n${this.output}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /**
   * Stop the broker (SIGTERM, SIGKILL after 3 s); every client loses its connection. SIGKILL plays
   * a crash: with persistence, what changed since the last save is gone.
   */
  async stop(signal: 'SIGTERM' | 'SIGKILL' = 'SIGTERM'): Promise<void> {
    const child = this.process;
    if (!child) return;
    this.process = null;
    if (child.exitCode !== null || child.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      const kill = setTimeout(() => child.kill('SIGKILL'), 3000);
      child.once('exit', () => {
        clearTimeout(kill);
        resolve();
      });
      child.kill(signal);
    });
  }

  async restart(): Promise<void> {
    await this.stop();
    await this.start();
  }

  /** Stop the broker and remove its temp directory. */
  async dispose(): Promise<void> {
    await this.stop();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}
