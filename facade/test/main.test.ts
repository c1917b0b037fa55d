import { spawn, type ChildProcess } from 'node:child_process';
import net from 'node:net';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { describe, expect, it } from 'vitest';
import { repoRoot } from '@strangler/platform';
import { json, request, startUpstream, table, teardown, tempDir, waitFor } from './helpers.ts';

const TOKEN = 'main-test-admin-token-0123456789';

/** Starts `npm run facade`'s entry point as a real process; resolves with its ports from the start-up log line. */
async function startMain(
  args: string[],
): Promise<{ child: ChildProcess; port: number; adminPort: number | null; metricsPort: number | null; logs: Array<Record<string, unknown>>; exit: Promise<number | null> }> {
  const child = spawn(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'facade/src/main.ts'), ...args], {
    cwd: repoRoot,
    env: { ...process.env, VITEST: '', LOG_LEVEL: 'info', STRANGLER_ADMIN_TOKEN: TOKEN },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  teardown(() => void child.kill('SIGKILL'));
  const exit = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const logs: Array<Record<string, unknown>> = [];
  let stderr = '';
  child.stderr!.on('data', (c) => (stderr += c));
  const listening = new Promise<Record<string, unknown>>((resolve, reject) => {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      try {
        const entry = JSON.parse(line) as Record<string, unknown>;
        logs.push(entry);
        if (entry.msg === 'facade listening') resolve(entry);
      } catch {
        // not a log line
      }
    });
    void exit.then((code) => reject(new Error(`facade exited with ${code}: ${stderr}`)));
  });
  const timeout = new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`facade did not start within 15 s: ${stderr}`)), 15_000));
  const entry = await Promise.race([listening, timeout]);
  return { child, port: entry.port as number, adminPort: (entry.adminPort as number | null) ?? null, metricsPort: (entry.metricsPort as number | null) ?? null, logs, exit };
}

describe('npm run facade', () => {
  it('serves a given route table on the given port, reloads on SIGHUP, and drains in-flight requests on SIGTERM', async () => {
    const monolith = await startUpstream('monolith', async (req, res) => {
      if (req.url === '/slow') await new Promise((r) => setTimeout(r, 600));
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ upstream: 'monolith' }));
    });
    const notification = await startUpstream('notification');
    const dir = await tempDir();
    const file = path.join(dir, 'routes.yaml');
    const routes = (serve: string) =>
      table({
        upstreams: { monolith: { url: monolith.url }, notification: { url: notification.url } },
        routes: [{ id: 'notifications.get', match: { method: 'GET', path: '/api/notifications/:id' }, effects: 'read', serve }],
        default: 'monolith',
      });
    await writeFile(file, routes('monolith'));

    const main = await startMain(['--routes', file, '--port', '0', '--admin-port', '0', '--metrics-port', '0', '--no-watch']);
    const url = `http://127.0.0.1:${main.port}`;
    expect(json(await request(`${url}/api/notifications/1`)).upstream).toBe('monolith');
    expect(json(await request(`${url}/__strangler/readyz`))).toMatchObject({ status: 'ready' });
    expect(main.adminPort).toBeGreaterThan(0);
    expect((await request(`http://127.0.0.1:${main.metricsPort}/metrics`)).body.toString()).toContain('strangler_facade_requests_total{route="notifications.get"');
    expect((await request(`http://127.0.0.1:${main.adminPort}/metrics`)).body.toString()).toContain('strangler_facade_requests_total{route="notifications.get"');

    // Watching is off: only SIGHUP picks up the change.
    await writeFile(file, routes('notification'));
    await new Promise((r) => setTimeout(r, 200));
    expect(json(await request(`${url}/api/notifications/1`)).upstream).toBe('monolith');
    main.child.kill('SIGHUP');
    await waitFor(async () => json(await request(`${url}/api/notifications/1`)).upstream === 'notification', 5_000, 'the SIGHUP reload');
    const audit = (await readFile(path.join(dir, 'routes.audit.jsonl'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l));
    expect(audit).toMatchObject([{ source: 'sighup', routeId: 'notifications.get', why: 'reloaded on SIGHUP', after: { serve: 'notification' } }]);

    // SIGTERM while a request is in flight: it completes, then the process exits 0 well within 10 s.
    const inFlight = request(`${url}/slow`);
    await waitFor(() => monolith.requests.some((r) => r.url === '/slow'), 2_000, 'the slow request');
    const stoppedAt = Date.now();
    main.child.kill('SIGTERM');
    const res = await inFlight;
    expect(res.status).toBe(200);
    expect(await main.exit).toBe(0);
    expect(Date.now() - stoppedAt).toBeLessThan(10_000);
    await expect(request(`${url}/api/notifications/1`, { timeoutMs: 1_000 })).rejects.toThrow();
  }, 40_000);

  it('refuses to start with an invalid route table and says what to fix', async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'routes.json');
    await writeFile(file, JSON.stringify({ upstreams: { monolith: { url: 'http://127.0.0.1:1' } }, routes: [{ id: 'x', match: { method: 'GET', path: '/x' }, effects: 'read', serve: 'nope' }], default: 'monolith' }));
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'facade/src/main.ts'), '--routes', file, '--port', '0'], { cwd: repoRoot, env: { ...process.env, STRANGLER_ADMIN_TOKEN: '' }, stdio: ['ignore', 'pipe', 'pipe'] });
    teardown(() => void child.kill('SIGKILL'));
    let stderr = '';
    child.stderr.on('data', (c) => (stderr += c));
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    expect(code).toBe(2);
    expect(stderr).toContain('route "x" (routes[0]) field "serve": unknown upstream "nope": declare it under "upstreams" or use one of monolith');
  }, 20_000);

  it('refuses to start on a port in use, naming the setting to change, without a stack trace', async () => {
    const dir = await tempDir();
    const file = path.join(dir, 'routes.json');
    await writeFile(file, JSON.stringify({ upstreams: { monolith: { url: 'http://127.0.0.1:1' } }, routes: [], default: 'monolith' }));
    const taken = net.createServer();
    await new Promise<void>((resolve) => taken.listen(0, '127.0.0.1', resolve));
    teardown(() => void taken.close());
    const port = (taken.address() as net.AddressInfo).port;
    for (const [args, setting] of [
      [['--port', String(port)], '--port or FACADE_PORT'],
      [['--port', '0', '--admin-port', String(port)], '--admin-port or FACADE_ADMIN_PORT'],
    ] as const) {
      const child = spawn(process.execPath, ['--import', 'tsx', path.join(repoRoot, 'facade/src/main.ts'), '--routes', file, ...args], { cwd: repoRoot, env: { ...process.env, STRANGLER_ADMIN_TOKEN: TOKEN }, stdio: ['ignore', 'pipe', 'pipe'] });
      teardown(() => void child.kill('SIGKILL'));
      let stderr = '';
      child.stderr.on('data', (c) => (stderr += c));
      const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
      expect(code).toBe(2);
      expect(stderr).toContain(`Cannot listen on 127.0.0.1:${port}: the port is in use (another copy of this process, or another program?). Choose another with ${setting}.`);
      expect(stderr).not.toMatch(/\n\s+at /);
    }
  }, 30_000);
});
