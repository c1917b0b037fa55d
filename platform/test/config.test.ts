import { describe, expect, it } from 'vitest';
import { amqpEnv, authEnv, loadConfig } from '../src/index.ts';

describe('loadConfig', () => {
  it('names a rejected secret by its length and shows a rejected URL without its password', () => {
    let message = '';
    try {
      loadConfig({ ...authEnv, ...amqpEnv }, { AUTH_TOKEN_SECRET: 'too-short-secret', AMQP_URL: 'http://guest:hunter2@127.0.0.1:5672' });
    } catch (err) {
      message = (err as Error).message;
    }
    expect(message).toContain('AUTH_TOKEN_SECRET=<16 characters, not shown>: must be at least 32 characters');
    expect(message).toContain('AMQP_URL="http://guest:***@127.0.0.1:5672": must be an amqp:// URL');
    expect(message).not.toMatch(/too-short-secret|hunter2/);
  });
});
