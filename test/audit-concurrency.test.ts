// One audit trail, several writers: the running daemon records recipe switches (each naming who
// asked, from the MQTT 5 user property) while `crad-edge validate` runs beside it as its own
// process and records its golden run, and three more processes append as fast as they can. Every
// entry gets its own seq and seqs rise strictly in file order, so paging with --before stays exact.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { loadConfig } from '../src/config/load.js';
import { AuditLog } from '../src/service/audit.js';
import { Daemon } from '../src/service/daemon.js';
import { createLogger } from '../src/shared/log.js';
import { killOnExit, tempDir } from './helpers/cleanup.js';
import { demoModel, repoRoot, samplesDir } from './helpers/daemon.js';
import { Mosquitto } from './helpers/mosquitto.js';
import { Subscriber, until } from './helpers/publish-fixtures.js';

function run(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; output: string }> {
  const child = killOnExit(spawn(process.execPath, ['--import', 'tsx', ...args], { cwd: repoRoot, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] }));
  let output = '';
  child.stdout!.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (output += d.toString()));
  return new Promise((resolve) => child.once('exit', (code) => resolve({ code, output })));
}

/** Appends `count` entries to the audit log of `dir` from a process of its own. */
const APPENDER = `
import { AuditLog } from '${path.join(repoRoot, 'src/service/audit.ts')}';
const log = new AuditLog(process.env.AUDIT_DIR, { maxBytes: 1 << 24, keepFiles: 2 });
for (let i = 0; i < Number(process.env.COUNT); i++) log.record({ kind: 'test', outcome: 'appended', actor: { kind: 'cli' }, details: { writer: process.env.WRITER, i } });
`;

test('the daemon, crad-edge validate and other processes append at once: every seq once, strictly rising; commands record who sent them', async () => {
  const broker = await Mosquitto.start();
  const dir = tempDir('audit-concurrency');
  const configFile = path.join(dir, 'config.json');
  const settings = {
    device: { id: 'press5' },
    model: { path: demoModel, warmupRuns: 0, goldenDir: samplesDir },
    cameras: [{ id: 'cam1', source: 'folder', path: samplesDir, trigger: 'mqtt' }],
    recipes: { A: { inference: { sensitivity: 0.05 } } },
    mqtt: { url: broker.url, topicPrefix: 'plant/audit' },
    outbox: { path: path.join(dir, 'outbox.sqlite') },
    service: { stateDir: dir, shutdownTimeoutMs: 5000 },
  };
  fs.writeFileSync(configFile, JSON.stringify(settings));
  const appender = path.join(dir, 'appender.ts');
  const daemon = new Daemon({ config: loadConfig(undefined, settings), log: createLogger('silent') });
  const mes = await Subscriber.connect(broker.url, 5, 'plant/audit/press5/recipe/response');
  try {
    fs.writeFileSync(appender, APPENDER);
    await daemon.start();
    let switches = 0;
    let busy = true;
    const switching = (async () => {
      while (busy) {
        const recipe = switches % 2 === 0 ? 'A' : null;
        await mes.client.publishAsync('plant/audit/press5/recipe/set', JSON.stringify({ transaction: `sw${switches}`, recipe }), {
          qos: 1, properties: { userProperties: { 'client-id': 'mes-7' } },
        });
        switches++;
        await until(`answer ${switches}`, () => mes.messages.length >= switches, 10_000);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    })();
    const writers = [1, 2, 3].map((n) => run([appender], { AUDIT_DIR: path.join(dir, 'audit'), COUNT: '60', WRITER: `w${n}` }));
    const validate = await run([path.join(repoRoot, 'src/main.ts'), 'validate', '--config', configFile]);
    const written = await Promise.all(writers);
    busy = false;
    await switching;
    assert.equal(validate.code, 0, validate.output);
    for (const w of written) assert.equal(w.code, 0, w.output);

    const lines = fs.readFileSync(path.join(dir, 'audit', 'audit.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    const seqs = lines.map((l) => l.seq as number);
    const out = seqs.findIndex((seq, i) => i > 0 && seq <= seqs[i - 1]!);
    assert.equal(out, -1, `seq ${seqs[out]} after ${seqs[out - 1]} at line ${out + 1}`);
    assert.equal(new Set(seqs).size, seqs.length, 'no seq twice');
    assert.equal(lines.filter((l) => l.kind === 'test').length, 180);
    assert.equal(lines.filter((l) => l.actor.kind === 'cli' && l.kind === 'golden').length, 1, 'the CLI\'s golden run is there');
    const recipes = lines.filter((l) => l.kind === 'recipe');
    assert.ok(recipes.length >= 2, `recipe switches recorded (${recipes.length})`);
    for (const entry of recipes) assert.deepEqual(entry.actor, { kind: 'mqtt', clientId: 'mes-7', clientIdFrom: 'user-property' });
    // Paging by seq finds every entry once.
    const log = new AuditLog(path.join(dir, 'audit'), { maxBytes: 1 << 24, keepFiles: 2 });
    const paged: number[] = [];
    for (let before: number | null = null; ;) {
      const page = log.read({ limit: 50, before });
      paged.push(...page.entries.map((e) => e.seq));
      if (page.next === null) break;
      before = page.next;
    }
    assert.deepEqual(paged, [...seqs].reverse());
  } finally {
    await daemon.stop();
    await mes.close();
    await broker.stop();
  }
});
