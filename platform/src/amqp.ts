import amqp, { type ChannelModel } from 'amqplib';
import { settlesWithin } from './retry.ts';

export type { ChannelModel };
export type { Channel, ConfirmChannel, ConsumeMessage, Options } from 'amqplib';

/** The one durable topic exchange every event goes through (DESIGN.md "Events"). */
export const EVENTS_EXCHANGE = 'strangler.events';

let open = 0;
/** Connections opened through `connectAmqp` and not yet closed in this process (leak checks). */
export const openAmqpConnections = () => open;

/**
 * Opens a connection named `name` (visible in the management UI and `rabbitmqctl`), failing
 * after 10 s without an answer. Callers handle `error`/`close` and reconnect themselves; this
 * only counts opens and closes.
 */
export async function connectAmqp(url: string, name: string): Promise<ChannelModel> {
  // The timeout bounds the TCP connect and the AMQP handshake: a broker that accepts the socket
  // but never answers (starting up, overloaded) must not hang a reconnect loop forever.
  const conn = await amqp.connect(url, { clientProperties: { connection_name: name }, timeout: 10_000 });
  open++;
  let counted = true;
  conn.connection.on('close', () => {
    if (counted) open--;
    counted = false;
  });
  // An 'error' is always followed by 'close'; a listener keeps it from becoming uncaught.
  conn.on('error', () => {});
  return conn;
}

/**
 * Closes the connection with the broker's handshake, or, if that does not complete within `ms`
 * (a partition: the socket accepts writes and nothing comes back), drops the socket. Also drops
 * it when close() fails at once because a close is already under way: that one may be waiting
 * for a broker that stopped answering. Never rejects; also fine on a connection already closed.
 */
export async function closeAmqp(conn: ChannelModel, ms = 2_000): Promise<void> {
  let closed = false;
  await settlesWithin(conn.close().then(() => void (closed = true)), ms);
  // amqplib notices a socket error (not a bare 'close'): it then closes the connection object.
  if (!closed) (conn.connection as unknown as { stream?: { destroy(err?: Error): void } }).stream?.destroy(new Error(`the connection did not close within ${ms} ms`));
}
