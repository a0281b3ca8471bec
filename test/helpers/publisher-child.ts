// A publisher in its own process, for the restart test: it queues `count` results (the broker at
// `url` is down), prints "stored <count>" once they are committed to the outbox, then waits to be
// killed with SIGKILL.
import { Publisher } from '../../src/publish/index.js';
import { createLogger } from '../../src/shared/log.js';
import { makeResult, testConfig } from './publish-fixtures.js';

const [url, outboxPath, countText] = process.argv.slice(2);
if (!url || !outboxPath || !countText) throw new Error('usage: publisher-child.ts <broker url> <outbox file> <count>');
const count = Number(countText);
const publisher = new Publisher(testConfig(url, outboxPath), createLogger('silent'));
await publisher.start();
for (let sequence = 1; sequence <= count; sequence++) publisher.publishResult(makeResult('cam1', sequence, { crops: 1 }));
const timer = setInterval(() => {
  if (publisher.stats().outbox.pendingResults === count) {
    process.stdout.write(`stored ${count}\n`);
    clearInterval(timer);
    setInterval(() => {}, 60_000); // stay alive until killed
  }
}, 10);
