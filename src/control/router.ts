// Inbound commands: one table from topic to handler. The router owns the subscriptions (QoS 1,
// made again on every connection), never acts on a retained command, and answers for a handler
// that throws or rejects, so no command can take the daemon down. It parses nothing: each handler
// gets the payload, the MQTT 5 properties and a reply function.
import type { IPublishPacket, MqttClient } from 'mqtt';
import { Subscription } from 'rxjs';
import type { InboundChannel, InboundMessage } from '../publish/index.js';
import { answerCode } from '../shared/answer-codes.js';
import { requestTransaction } from '../shared/request-transaction.js';
import type { Logger } from '../shared/log.js';

export interface Command {
  readonly topic: string;
  readonly payload: Buffer;
  /** The request's MQTT 5 properties (correlationData, userProperties, ...); empty with 3.1.1. */
  readonly properties: NonNullable<IPublishPacket['properties']>;
  /**
   * Publish `answer` once, verbatim as JSON, on the command's response topic, with the request's
   * correlation data; an answer without "transaction" gets the request's.
   */
  reply(answer: object): void;
  /** Publish an intermediate answer (a stage of a long command) like reply(); reply() still ends it. */
  progress(answer: object): void;
}

export type CommandHandler = (command: Command) => void | Promise<void>;

export interface CommandOptions {
  /** Where answers go; without one, reply() only logs. */
  responseTopic?: string;
  /** The answer when the handler throws or rejects (it must match the response schema). */
  errorAnswer?: (error: string) => object;
}

export interface CommandSpec extends CommandOptions {
  handler: CommandHandler;
}

interface Registration {
  handler: CommandHandler;
  responseTopic: string | null;
  errorAnswer: (error: string) => object;
}

const defaultErrorAnswer = (error: string): object => ({ status: 'error', error });

export class CommandRouter {
  private readonly table = new Map<string, Registration>();
  /** Topics subscribed (or being subscribed) on the current connection. */
  private subscribed = new Set<string>();
  private readonly pending = new Set<Promise<void>>();
  private readonly subscription = new Subscription();

  constructor(private readonly channel: InboundChannel, private readonly log: Logger) {
    this.subscription.add(channel.connects$.subscribe((client) => {
      this.subscribed = new Set();
      this.sync(client);
    }));
    this.subscription.add(channel.messages$.subscribe((message) => this.dispatch(message)));
  }

  /**
   * Handle commands on `topic` (an exact topic: per-camera commands register once per camera).
   * Subscribes now when connected, else on the next connection. Returns the unregistration.
   */
  register(topic: string, handler: CommandHandler, options: CommandOptions = {}): () => void {
    if (/[+#]/.test(topic)) throw new Error(`command topic ${topic}: wildcards are not routed`);
    if (this.table.has(topic)) throw new Error(`command topic ${topic} already has a handler`);
    const registration: Registration = {
      handler,
      responseTopic: options.responseTopic ?? null,
      errorAnswer: options.errorAnswer ?? defaultErrorAnswer,
    };
    this.table.set(topic, registration);
    this.syncNow();
    return () => {
      if (this.table.get(topic) !== registration) return;
      this.table.delete(topic);
      this.syncNow();
    };
  }

  /** Resolves once every SUBSCRIBE/UNSUBSCRIBE sent so far has been answered (or failed). */
  async settled(): Promise<void> {
    await Promise.all([...this.pending]);
  }

  /** Stop dispatching (shutdown); the broker forgets the subscriptions with the connection. */
  close(): void {
    this.subscription.unsubscribe();
    this.table.clear();
  }

  private syncNow(): void {
    const client = this.channel.client;
    if (client) this.sync(client);
  }

  private sync(client: MqttClient): void {
    const wanted = new Set(this.table.keys());
    const add = [...wanted].filter((t) => !this.subscribed.has(t));
    const remove = [...this.subscribed].filter((t) => !wanted.has(t));
    this.subscribed = wanted;
    if (add.length > 0) {
      // rap (MQTT 5): a retained command queued for our kept session still says it was retained,
      // so that it is ignored like one delivered on subscribe.
      this.track(new Promise((resolve) => client.subscribe(add, { qos: 1, rap: true }, (err, granted) => {
        if (err) this.log.error({ topics: add, err: err.message }, 'subscribe failed');
        const refused = (granted ?? []).filter((g) => g.qos === 128).map((g) => g.topic);
        if (refused.length > 0) this.log.error({ topics: refused }, 'the broker refused these subscriptions (ACL?)');
        resolve();
      })));
    }
    if (remove.length > 0) {
      this.track(new Promise((resolve) => client.unsubscribe(remove, (err) => {
        if (err) this.log.warn({ topics: remove, err: err.message }, 'unsubscribe failed');
        resolve();
      })));
    }
  }

  private track(request: Promise<void>): void {
    this.pending.add(request);
    void request.then(() => this.pending.delete(request));
  }

  private dispatch({ topic, payload, packet }: InboundMessage): void {
    // A retained trigger or config push would fire again on every reconnect: never act on one.
    if (packet.retain) {
      this.log.warn({ topic }, 'ignoring a retained message on a command topic (publish commands without retain)');
      return;
    }
    const registration = this.table.get(topic);
    if (!registration) {
      this.log.warn({ topic }, 'message on an unexpected topic ignored');
      return;
    }
    const properties = packet.properties ?? {};
    let replied = false;
    const reply = (answer: object): void => {
      if (replied) {
        this.log.warn({ topic }, 'command answered twice: second answer ignored');
        return;
      }
      replied = true;
      this.answer(registration, topic, payload, properties.correlationData, answer);
    };
    const progress = (answer: object): void => {
      if (replied) this.log.warn({ topic }, 'progress after the final answer ignored');
      else this.answer(registration, topic, payload, properties.correlationData, answer);
    };
    const fail = (err: unknown): void => {
      const message = err instanceof Error ? err.message : String(err);
      this.log.error({ topic, err: message }, 'command handler failed');
      if (!replied && registration.responseTopic) reply({ ...registration.errorAnswer(`internal error: ${message}`), code: answerCode('internal-error') });
    };
    // The executor runs the handler now; a throw becomes a rejection like an async handler's.
    new Promise<void>((resolve) => resolve(registration.handler({ topic, payload, properties, reply, progress }))).catch(fail);
  }

  private answer(registration: Registration, topic: string, request: Buffer, correlationData: Buffer | undefined, answer: object): void {
    if (!registration.responseTopic) {
      this.log.warn({ topic }, 'answer dropped: this command has no response topic');
      return;
    }
    const withTransaction = (answer as { transaction?: unknown }).transaction !== undefined ? answer : { ...answer, transaction: requestTransaction(request) };
    const body = withCode(withTransaction);
    this.channel.publishJson(registration.responseTopic, Buffer.from(JSON.stringify(body)), correlationData).catch((err: Error) => {
      this.log.warn({ topic: registration.responseTopic, transaction: (body as { transaction?: unknown }).transaction, err: err.message }, 'answer not delivered');
    });
  }
}

/**
 * Registrations kept equal to a table its owner recomputes (the daemon's, from the config): a
 * topic that appears is registered, one that goes is unregistered; a kept topic keeps its handler,
 * so handlers read live state rather than capture it.
 */
export class CommandGroup {
  private readonly registered = new Map<string, () => void>();

  constructor(private readonly router: CommandRouter) {}

  sync(table: ReadonlyMap<string, CommandSpec>): void {
    for (const [topic, unregister] of this.registered) {
      if (table.has(topic)) continue;
      unregister();
      this.registered.delete(topic);
    }
    for (const [topic, { handler, ...options }] of table) {
      if (!this.registered.has(topic)) this.registered.set(topic, this.router.register(topic, handler, options));
    }
  }
}

/** Every answer carries a numeric code for a PLC's tags: a handler's own, else 0, or "refused" for an error. */
function withCode(answer: object): object {
  if ((answer as { code?: unknown }).code !== undefined) return answer;
  return { ...answer, code: answerCode((answer as { status?: unknown }).status === 'error' ? 'command-refused' : 'ok') };
}
