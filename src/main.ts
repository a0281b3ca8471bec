// The CLI: parses the command, builds what it needs, nothing else.
import './cv.js';
import { Command, Option } from 'commander';
import { ConfigError, redact } from './config/load.js';
import { loadLayered, valueSources } from './config/layers.js';
import { valueAt } from './config/schema.js';
import { createLogger } from './shared/log.js';
import { runDaemonUntilSignal } from './cli/run.js';
import { inferCommand } from './cli/infer.js';
import { demoCommand } from './cli/demo.js';
import { configReference } from './cli/config-docs.js';
import { signCommand } from './cli/sign.js';
import { validateCommand } from './cli/validate.js';
import { auditCommand } from './cli/audit.js';
import { deliverCommand } from './cli/deliver.js';
import { version } from './paths.js';


const program = new Command('crad-edge')
  .description('Visual inspection daemon: cameras -> CRAD anomaly detection (onnxruntime) -> MQTT')
  .version(version);

program
  .command('run')
  .description('run the daemon')
  .option('-c, --config <file>', 'config file (JSON); defaults and environment apply underneath')
  .action(async (opts: { config?: string }) => {
    process.exitCode = await runDaemonUntilSignal(opts.config);
  });

program
  .command('infer')
  .description('score images without a broker: one line (or JSON line) per image')
  .argument('<path>', 'an image file or a folder of images')
  .option('-m, --model <file>', 'ONNX model (default: the config\'s model.path)')
  .option('-c, --config <file>', 'config file for thresholds, regions and crops')
  .option('--json', 'print one JSON object per line')
  .option('-o, --out <dir>', 'write heatmap overlays (and region crops) to this folder')
  .action(async (target: string, opts: { model?: string; config?: string; json?: boolean; out?: string }) => {
    process.exitCode = await inferCommand(target, opts);
  });

program
  .command('validate')
  .description('run the golden samples on a model (exit 0 passed, 1 failed, 2 nothing to run)')
  .option('-c, --config <file>', 'config file (model.path, model.goldenDir, thresholds)')
  .option('-m, --model <file>', 'ONNX model (default: the config\'s model.path)')
  .option('-g, --golden <dir>', 'golden samples folder (default: model.goldenDir, else <model>.golden)')
  .option('--json', 'print the run as one JSON object')
  .action(async (opts: { config?: string; model?: string; golden?: string; json?: boolean }) => {
    process.exitCode = await validateCommand(opts);
  });

program
  .command('audit')
  .description('print the audit log (changes of configuration and model, golden-sample runs), newest first')
  .option('-c, --config <file>', 'config file (its service.stateDir holds the log)')
  .addOption(new Option('-n, --limit <n>', 'entries per page (1..100)').default(20).argParser(Number))
  .addOption(new Option('--before <seq>', 'entries older than this seq (the next page)').argParser(Number))
  .option('--json', 'print one JSON object per line')
  .action((opts: { config?: string; limit: number; before?: number; json?: boolean }) => {
    process.exitCode = auditCommand(opts);
  });

const config = program.command('config').description('check or print configuration');
config
  .command('check')
  .description('validate a config file; every error names its key')
  .argument('<file>')
  .action((file: string) => {
    try {
      const layered = loadLayered(file);
      if (layered.fallback) {
        console.error(`${file}: OK, but the recorded pushed revision cannot be used (${layered.fallback.reason}); the daemon would run revision ${layered.fallback.to}`);
        process.exitCode = 1;
      } else {
        console.log(`${file}: OK${layered.revision > 0 ? ` (with pushed revision ${layered.revision} from ${layered.store.dir})` : ''}`);
      }
    } catch (err) {
      console.error(err instanceof ConfigError ? err.message : `${file}: ${(err as Error).message}`);
      process.exitCode = 1;
    }
  });
config
  .command('print')
  .description('print the effective configuration (defaults <- file <- pushed revisions <- environment), secrets redacted')
  .option('-c, --config <file>')
  .option('-s, --sources', 'print each key with its value and where it comes from (default, file, pushed, environment)')
  .action((opts: { config?: string; sources?: boolean }) => {
    try {
      const layered = loadLayered(opts.config);
      const shown = redact(layered.config);
      if (!opts.sources) {
        console.log(JSON.stringify(shown, null, 2));
        return;
      }
      const sources = valueSources(opts.config, layered);
      for (const [key, source] of Object.entries(sources)) console.log(`${key} = ${JSON.stringify(valueAt(shown, key))}  (${source})`);
    } catch (err) {
      console.error((err as Error).message);
      process.exitCode = 1;
    }
  });
config
  .command('docs')
  .description('print the configuration reference (Markdown) generated from the schema')
  .action(() => console.log(configReference()));
config
  .command('sign')
  .description('sign a remote config push with an Ed25519 private key (PEM); prints the signed request')
  .argument('<request>', 'JSON file with {transaction, baseRevision, changes}')
  .requiredOption('-k, --key <file>', 'Ed25519 private key, PEM')
  .requiredOption('-d, --device <id>', 'device id the push is for (a signature is valid for that device only)')
  .action((request: string, opts: { key: string; device: string }) => {
    process.exitCode = signCommand(request, opts.key, opts.device);
  });

program
  .command('deliver')
  .description('publish a model file, already served at --url, to stations with model/deliver (signed per device with --key); waits for each answer')
  .argument('<model>', 'the ONNX file (its sha256 and size go in the request)')
  .requiredOption('-u, --url <url>', 'where the stations download it (http or https)')
  .requiredOption('-b, --broker <url>', 'the stations\' MQTT broker (mqtt://, mqtts://)')
  .requiredOption('-p, --prefix <prefix>', 'their mqtt.topicPrefix')
  .requiredOption('-d, --device <id...>', 'device ids to deliver to')
  .option('-k, --key <file>', 'Ed25519 private key (PEM) for stations with remoteConfig.publicKey')
  .option('-n, --name <file>', 'file name on the stations (default: the model file\'s name)')
  .addOption(new Option('-t, --timeout <seconds>', 'wait at most this long for each station\'s status and final answer').default(300).argParser(Number))
  .option('--ca <file>', 'CA certificate (PEM) of an mqtts:// broker, besides the system CAs')
  .option('--cert <file>', 'client certificate (PEM) for a broker that requires one')
  .option('--cert-key <file>', 'the client certificate\'s private key (PEM)')
  .option('--username <name>', 'broker user (the password comes from CRAD_DELIVER_PASSWORD)')
  .action(async (model: string, opts: { url: string; broker: string; prefix: string; device: string[]; key?: string; name?: string; timeout: number; ca?: string; cert?: string; certKey?: string; username?: string }) => {
    const password = process.env.CRAD_DELIVER_PASSWORD;
    process.exitCode = await deliverCommand(model, {
      broker: opts.broker, prefix: opts.prefix, devices: opts.device, url: opts.url, timeoutSeconds: opts.timeout,
      ...(opts.key ? { key: opts.key } : {}), ...(opts.name ? { name: opts.name } : {}), ...(opts.ca ? { ca: opts.ca } : {}),
      ...(opts.cert ? { cert: opts.cert } : {}), ...(opts.certKey ? { certKey: opts.certKey } : {}),
      ...(opts.username !== undefined ? { username: opts.username } : {}), ...(password !== undefined ? { password } : {}),
    });
  });

program
  .command('demo')
  .description('run the committed demo model on the sample images with an embedded MQTT broker')
  .addOption(new Option('-p, --port <port>', 'broker port on 127.0.0.1').default(1883).argParser(Number))
  .addOption(new Option('--frames <n>', 'stop after this many results (default: run until Ctrl-C)').argParser(Number))
  .addOption(new Option('--fps <n>', 'frames per second from the sample camera').default(4).argParser(Number))
  .addOption(new Option('--console-port <port>', 'operator console port on 127.0.0.1 (0 = a free port)').default(0).argParser(Number))
  .option('--no-console', 'no operator console')
  .action(async (opts: { port: number; frames?: number; fps: number; consolePort: number; console: boolean }) => {
    process.exitCode = await demoCommand({ ...opts, consolePort: opts.console ? opts.consolePort : false });
  });

program.parseAsync().catch((err: unknown) => {
  createLogger('error').fatal({ err }, 'crad-edge failed');
  process.exitCode = 1;
});
