import { ConfigError, loadConfig, type AppConfig } from '../config/load.js';
import { Daemon } from '../service/daemon.js';
import { createLogger, type Logger } from '../shared/log.js';

/**
 * Run the daemon until SIGTERM/SIGINT, then shut down gracefully. Returns the exit code:
 * 0 after a clean stop, 1 when it could not start (systemd's Restart=on-failure retries).
 */
export async function runDaemonUntilSignal(configFile?: string, config?: AppConfig, log?: Logger): Promise<number> {
  let effective: AppConfig;
  try {
    effective = config ?? loadConfig(configFile);
  } catch (err) {
    console.error(err instanceof ConfigError ? err.message : (err as Error).message);
    return 1;
  }
  const logger = log ?? createLogger(effective.log.level);
  const daemon = new Daemon({ configFile, config: effective, log: logger });
  try {
    await daemon.start();
  } catch (err) {
    logger.fatal({ err }, `cannot start: ${(err as Error).message}`);
    await daemon.stop().catch(() => undefined);
    return 1;
  }
  await new Promise<void>((resolve) => {
    const onSignal = (signal: NodeJS.Signals) => {
      logger.info({ signal }, 'shutting down');
      resolve();
    };
    process.once('SIGTERM', onSignal);
    process.once('SIGINT', onSignal);
  });
  // A second signal during shutdown means "now".
  const force = () => process.exit(1);
  process.once('SIGTERM', force);
  process.once('SIGINT', force);
  await daemon.stop();
  return 0;
}
