// A crad-edge daemon process with an MQTT 5 client on its topics: config requests with their
// answers (schema-checked), and the results it publishes.
import assert from 'node:assert/strict';
import { DaemonProcess } from './daemon.js';
import { assertValid, schemaValidator, Subscriber, until } from './publish-fixtures.js';
import { firstCopies, resultMessages, type ResultSeen } from './reliability.js';

const ajv = schemaValidator();

/** A daemon process plus an MQTT 5 client that talks to its config topics and records its results. */
export class Device {
  readonly prefix: string;
  readonly process: DaemonProcess;
  client!: Subscriber;
  private counter = 0;

  constructor(private readonly brokerUrl: string, topicPrefix: string, readonly id: string, readonly configFile: string) {
    this.prefix = `${topicPrefix}/${id}`;
    this.process = new DaemonProcess(configFile);
  }

  async start(): Promise<void> {
    this.client = await Subscriber.connect(this.brokerUrl, 5, `${this.prefix}/#`);
    this.process.start();
    await until('the daemon streams results', () => this.results().length >= 3, 90_000).catch((err: Error) => {
      throw new Error(`${err.message}\n${this.process.output.slice(-3000)}`);
    });
  }

  async stop(): Promise<void> {
    const code = await this.process.stop('SIGTERM');
    assert.equal(code, 0, `clean exit\n${this.process.output.slice(-2000)}`);
  }

  /** After a failure too: nothing may keep the test process alive. */
  async dispose(): Promise<void> {
    await this.process.stop('SIGKILL');
    await this.client?.close();
  }

  results(): ResultSeen[] {
    return firstCopies(resultMessages(this.client.messages, this.prefix));
  }

  /** Publish on config/<kind> with a fresh correlationData and return the answer that carries it. */
  async request(kind: 'set' | 'get', payload: Buffer | string | object): Promise<any> {
    const correlation = `corr-${++this.counter}`;
    const body = Buffer.isBuffer(payload) ? payload : Buffer.from(typeof payload === 'string' ? payload : JSON.stringify(payload));
    await this.client.client.publishAsync(`${this.prefix}/config/${kind}`, body, { qos: 1, properties: { correlationData: Buffer.from(correlation) } });
    const answer = () =>
      this.client.messages.find((m) => m.topic === `${this.prefix}/config/response` && m.packet.properties?.correlationData?.toString() === correlation);
    await until(`an answer to config/${kind} ${correlation}`, () => answer() !== undefined, 30_000);
    const json = answer()!.json;
    assertValid(ajv, 'config-response.schema.json', json);
    return json;
  }

  async getConfig(): Promise<{ revision: number; config: any }> {
    const answer = await this.request('get', { transaction: `get-${this.counter}` });
    assert.equal(answer.status, 'ok', JSON.stringify(answer));
    return { revision: answer.revision, config: answer.config };
  }

  /** Wait for `n` results captured after `sinceMs` (epoch) and return them. */
  async resultsAfter(sinceMs: number, n: number, what: string): Promise<ResultSeen[]> {
    const later = () => this.results().filter((r) => r.capturedAt > sinceMs);
    await until(`${n} ${what}`, () => later().length >= n, 60_000).catch((err: Error) => {
      throw new Error(`${err.message}\n${this.process.output.slice(-3000)}`);
    });
    return later();
  }
}

