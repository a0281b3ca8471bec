import { ConfigError, type AppConfig } from '../config/load.js';
import { loadLayered, type LayeredConfig } from '../config/layers.js';
import type { ConfigPushResponse } from '../config/remote.js';
import { Daemon } from '../service/daemon.js';
import { createLogger, type Logger } from '../shared/log.js';

/**
 * Run the daemon until SIGTERM/SIGINT, then shut down gracefully. Returns the exit code:
 * 0 after a clean stop, 1 when it could not start or inspection stopped (systemd's
 * Restart=on-failure restarts it).
 * A rollback restarts the daemon in this process on the recorded configuration; a pushed revision
 * that cannot start is rolled back to the last good one and started again.
 */
export async function runDaemonUntilSignal(configFile?: string, config?: AppConfig, log?: Logger): Promise<number> {
  let stopSignal: (() => void) | null = null;
  const signalled = new Promise<'signal'>((resolve) => {
    stopSignal = () => resolve('signal');
  });
  const onSignal = (signal: NodeJS.Signals) => {
    log?.info({ signal }, 'shutting down');
    stopSignal?.();
    // A second signal during shutdown means "now".
    const force = () => process.exit(1);
    process.once('SIGTERM', force);
    process.once('SIGINT', force);
  };
  process.once('SIGTERM', onSignal);
  process.once('SIGINT', onSignal);

  let undeliveredAnswer: ConfigPushResponse | undefined;
  for (;;) {
    let layered: LayeredConfig;
    try {
      layered = loadLayered(configFile, config);
    } catch (err) {
      console.error(err instanceof ConfigError ? err.message : (err as Error).message);
      return 1;
    }
    log ??= createLogger(layered.config.log.level);
    const fallback = layered.fallback;
    if (fallback && fallback.from >= 0) {
      // Run the older revision as a new one, so numbers only rise and the broken one stays behind.
      log.error({ undid: fallback.from, from: fallback.to, reason: fallback.reason }, 'the recorded configuration could not be used: running an older revision');
      try {
        layered.store.rollBack(fallback.from, `recorded revision ${fallback.from} cannot be used: ${fallback.reason}`, fallback.to);
        continue;
      } catch (err) {
        log.error({ err }, 'the rollback cannot be recorded: running the older revision unrecorded');
      }
    }
    let restart: (reason: string) => void = () => undefined;
    const restartAsked = new Promise<'restart'>((resolve) => (restart = () => resolve('restart')));
    let fault: (reason: string) => void = () => undefined;
    const faulted = new Promise<'fault'>((resolve) => (fault = () => resolve('fault')));
    const daemon = new Daemon({
      configFile, config, layered, log, undeliveredAnswer,
      onFault: (reason) => fault(reason),
      onRestart: (reason, answer) => {
        undeliveredAnswer = answer;
        restart(reason);
      },
    });
    undeliveredAnswer = undefined;
    try {
      await daemon.start();
    } catch (err) {
      const reason = `cannot start: ${(err as Error).message}`;
      await daemon.stop().catch(() => undefined);
      if (layered.store.canRollBack(layered.revision)) {
        const record = layered.store.rollBack(layered.revision, reason);
        log.error({ undid: layered.revision, revision: record.revision, reason }, 'configuration rolled back at start-up');
        continue;
      }
      // A configuration that cannot be used says which key; its stack would only hide that.
      log.fatal(err instanceof ConfigError ? {} : { err }, reason);
      return 1;
    }
    const outcome = await Promise.race([signalled, restartAsked, faulted]);
    await daemon.stop();
    if (outcome === 'signal') return 0;
    // Inspection stopped: a fresh process (systemd's Restart=on-failure) rather than more of this one.
    if (outcome === 'fault') return 1;
    log.info('restarting on the recorded configuration');
  }
}
