import { describe, expect, it, vi } from 'vitest';
import { createLogger } from '@strangler/platform';
import { Supervisor } from '../src/supervisor.ts';

describe('Supervisor', () => {
  it('stops the stack at once when a process refuses its settings (exit 2), instead of restarting it five times', async () => {
    const log = createLogger('supervisor-test');
    const restarts = vi.spyOn(log, 'warn');
    const supervisor = new Supervisor(log, process.env);
    const reason = new Promise<string>((resolve) => supervisor.fatal(resolve));
    vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      supervisor.start({ name: 'refuses', entry: 'scripts/test/fixtures/refuses-config.ts' });
      const timeout = new Promise<never>((_, reject) => setTimeout(() => reject(new Error('no fatal report within 20 s')), 20_000));
      expect(await Promise.race([reason, timeout])).toBe('refuses refused to start (exit 2): a setting needs fixing, see its message above.');
      expect(restarts.mock.calls.filter(([, msg]) => msg === 'process exited; restarting')).toEqual([]);
    } finally {
      vi.restoreAllMocks();
      await supervisor.stop();
    }
  }, 30_000);
});
