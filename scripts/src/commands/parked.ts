import { amqpEnv, loadConfig } from '@strangler/platform';
import { listParked, replayParked } from '@strangler/outbox';
import { UsageError, type Command } from '../cli.ts';

export const command: Command = {
  summary: "list a consumer's parked messages, or replay them",
  usage: 'npm run strangler -- parked <consumer> [--replay [--id ID]] [--limit N]   (consumer: the name given to consume(), e.g. notification)',
  options: {
    replay: { type: 'boolean' },
    id: { type: 'string' },
    limit: { type: 'string' },
  },
  async run({ positionals, values }) {
    const [queue, ...extra] = positionals;
    if (!queue || extra.length) throw new UsageError('Give exactly one consumer name.');
    if (values.id !== undefined && !values.replay) throw new UsageError('--id only goes with --replay.');
    const limit = values.limit === undefined ? undefined : Number(values.limit);
    if (limit !== undefined && (!Number.isInteger(limit) || limit < 1)) throw new UsageError('--limit must be a positive integer.');
    const { AMQP_URL: amqpUrl } = loadConfig(amqpEnv);
    if (values.replay) {
      const { replayed, remaining } = await replayParked({ amqpUrl, queue, limit, id: values.id as string | undefined });
      for (const m of replayed) console.log(`replayed ${m.id} ${m.type} ${aggregateOf(m)}`);
      console.log(`${replayed.length} replayed to ${queue}.events, ${remaining} still parked`);
      if (values.id !== undefined && !replayed.length) {
        console.error(`No parked message with id ${values.id as string} in ${queue}.dead.`);
        return 1;
      }
      return 0;
    }
    const { total, messages } = await listParked({ amqpUrl, queue, limit });
    for (const m of messages) {
      console.log(`${m.id}  ${m.type}  ${aggregateOf(m)}  attempts=${m.attempts}  parked=${m.parkedAt ?? '?'}\n    ${m.error}`);
    }
    console.log(`${total} parked in ${queue}.dead${messages.length < total ? ` (showing ${messages.length})` : ''}`);
    return 0;
  },
};

/** `order/o-1 v3`, or what a message without the aggregate headers (not written by a relay) lacks. */
function aggregateOf(m: { aggregateType?: string | null; aggregateId?: string | null; aggregateVersion?: number | null }): string {
  if (m.aggregateType == null && m.aggregateId == null && m.aggregateVersion == null) return '(no aggregate headers)';
  return `${m.aggregateType ?? '?'}/${m.aggregateId ?? '?'} v${m.aggregateVersion ?? '?'}`;
}
