import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { backoffDelay, repoRoot, type Logger } from '@strangler/platform';

export interface ProcessSpec {
  /** Shown in logs (`[monolith] ...`). */
  name: string;
  /** A TypeScript entry file, relative to the repository root. */
  entry: string;
  args?: string[];
  env?: Record<string, string>;
}

/**
 * Runs the stack's processes as children (node --import tsx), prefixing their output with their
 * name. A child that exits on its own is restarted with jittered backoff (up to 100 ms, 200 ms,
 * ... capped at 10 s); one that keeps failing fast five times in a row stops the whole stack,
 * since something (config, a port) needs fixing. A child that exits 2 soon after its start (the
 * processes' code for a setting to fix: invalid configuration, a port in use, a database that
 * does not exist) stops it at once: a restart would only print the same message again.
 * `stop()` sends SIGTERM to every child and waits for them (each exits within 10 s by contract;
 * after 12 s it is killed).
 */
export class Supervisor {
  private readonly children = new Map<string, { child: ChildProcess; closed: Promise<void> }>();
  private stopping = false;
  private onFatal: (reason: string) => void = () => {};

  constructor(private readonly log: Logger, private readonly baseEnv: Record<string, string | undefined>) {}

  fatal(handler: (reason: string) => void) {
    this.onFatal = handler;
  }

  start(spec: ProcessSpec, failures = 0): void {
    const startedAt = Date.now();
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(repoRoot, spec.entry), ...(spec.args ?? [])], {
      cwd: repoRoot,
      env: { ...this.baseEnv, ...spec.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const prefix = (stream: NodeJS.WritableStream) => (chunk: Buffer) => {
      for (const line of chunk.toString('utf8').split('\n')) if (line) stream.write(`[${spec.name}] ${line}\n`);
    };
    child.stdout!.on('data', prefix(process.stdout));
    child.stderr!.on('data', prefix(process.stderr));
    // 'close', not 'exit': it comes after the child's last output lines have been read, so its
    // "stopped" line is printed before `npm start` itself exits.
    const closed = new Promise<void>((resolve) =>
      child.on('close', (code, signal) => {
        resolve();
        this.children.delete(spec.name);
        if (this.stopping) {
          this.log[code === 0 ? 'info' : 'warn']({ process: spec.name, code, signal }, code === 0 ? 'process stopped' : 'process stopped uncleanly');
          return;
        }
        const fastFail = Date.now() - startedAt < 10_000;
        if (fastFail && code === 2) {
          this.onFatal(`${spec.name} refused to start (exit 2): a setting needs fixing, see its message above.`);
          return;
        }
        const next = fastFail ? failures + 1 : 0;
        if (next >= 5) {
          this.onFatal(`${spec.name} exited ${signal ?? code} five times within seconds of starting; see its log above.`);
          return;
        }
        const delay = backoffDelay(next, { baseMs: 200, maxMs: 10_000 });
        this.log.warn({ process: spec.name, code, signal, restartInMs: delay }, 'process exited; restarting');
        setTimeout(() => !this.stopping && this.start(spec, next), delay);
      }),
    );
    this.children.set(spec.name, { child, closed });
  }

  async stop(): Promise<void> {
    this.stopping = true;
    await Promise.all(
      [...this.children.values()].map(async ({ child, closed }) => {
        const timer = setTimeout(() => child.kill('SIGKILL'), 12_000);
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
        await closed;
        clearTimeout(timer);
      }),
    );
  }
}
