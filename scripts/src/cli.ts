import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs, type ParseArgsConfig } from 'node:util';

/**
 * `strangler <command> [args]`: each command is one file under `commands/`, exporting
 * `command: Command`. Exit codes: 0 success, 1 failure or differences found, 2 usage error.
 */
export interface Command {
  summary: string;
  usage: string;
  options?: ParseArgsConfig['options'];
  run(args: { positionals: string[]; values: Record<string, string | boolean | (string | boolean)[] | undefined> }): Promise<number>;
}

export class UsageError extends Error {}

const dir = path.join(path.dirname(fileURLToPath(import.meta.url)), 'commands');

async function loadCommands(): Promise<Map<string, Command>> {
  const out = new Map<string, Command>();
  for (const file of (await readdir(dir)).filter((f) => f.endsWith('.ts')).sort()) {
    const mod = (await import(pathToFileURL(path.join(dir, file)).href)) as { command?: Command };
    if (mod.command) out.set(file.replace(/\.ts$/, ''), mod.command);
  }
  return out;
}

function help(commands: Map<string, Command>): string {
  const rows = [...commands].map(([name, c]) => `  ${name.padEnd(10)} ${c.summary}`);
  return `Usage: npm run strangler -- <command> [options]\n\nCommands:\n${rows.join('\n')}\n\nRun 'npm run strangler -- <command> --help' for a command's options.`;
}

export async function main(argv: string[]): Promise<number> {
  const commands = await loadCommands();
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    console.log(help(commands));
    return name ? 0 : 2;
  }
  const command = commands.get(name);
  if (!command) {
    console.error(`Unknown command "${name}".\n\n${help(commands)}`);
    return 2;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    console.log(`${command.summary}\n\nUsage: ${command.usage}`);
    return 0;
  }
  try {
    const { positionals, values } = parseArgs({ args: rest, options: command.options ?? {}, allowPositionals: true, strict: true });
    return await command.run({ positionals, values });
  } catch (err) {
    const code = (err as { code?: unknown }).code; // amqplib's errors carry numeric codes
    if (err instanceof UsageError || (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS'))) {
      console.error(`${(err as Error).message}\n\nUsage: ${command.usage}`);
      return 2;
    }
    console.error(`strangler ${name} failed: ${describeFailure(err)}`);
    return 1;
  }
}

/**
 * A failure's message, with what to do for the ones a wrong setting or a missing step causes.
 * Other messages are left whole.
 */
export function describeFailure(err: unknown): string {
  type Failure = { message?: unknown; code?: unknown; address?: unknown; port?: unknown; errors?: Failure[] };
  const e = (err ?? {}) as Failure;
  // A connection to "localhost" tries each of its addresses: Node reports them in `errors`, under an empty message.
  const attempts = [e, ...(Array.isArray(e.errors) ? e.errors : [])];
  const message = String(e.message || attempts.map((a) => a.message).filter(Boolean).join('; ') || err);
  switch (e.code) {
    case '3D000':
      return `${message}: check MONOLITH_DB and NOTIFICATION_SVC_DB (and PGHOST, PGPORT), or create the database and run "npm run strangler -- migrate".`;
    case '42P01': {
      // knex puts the whole statement in front of the reason.
      const reason = /relation "[^"]*" does not exist$/.exec(message)?.[0] ?? message;
      return `${reason}: the database is not migrated; run "npm run strangler -- migrate" (or start its owner once, which migrates it).`;
    }
    case '28000':
    case '28P01':
      return `${message}: check PGUSER and PGPASSWORD.`;
    case 'ECONNREFUSED': {
      const where = attempts.filter((a) => a.address).map((a) => `${String(a.address)}:${String(a.port)}`);
      return `${message}: nothing listens${where.length ? ` at ${[...new Set(where)].join(' or ')}` : ''}; is the server running there (Postgres: PGHOST and PGPORT or DATABASE_URL; RabbitMQ: AMQP_URL)?`;
    }
    default:
      return message;
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main(process.argv.slice(2)).then((code) => process.exit(code));
}
