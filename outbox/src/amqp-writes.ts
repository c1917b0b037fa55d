import type { Socket } from 'node:net';
import type { ChannelModel } from '@strangler/platform';

interface AmqplibInternals {
  connection: {
    stream: Socket;
    muxer: { _readIncoming(): void; out: Socket };
  };
}

/**
 * Writes every frame amqplib has queued in one turn of the event loop to the socket in one
 * system call, and with Nagle's algorithm off.
 *
 * amqplib queues each frame (a publish, an ack) in its channel's buffer and, on the next
 * `setImmediate`, its multiplexer writes them to the socket one `write()` each: one syscall and
 * one TCP segment per message, which on loopback also pays the broker side's receive work.
 * Measured in bench/outbox.ts on 2 cores: these writes were ~30% of the relay's CPU and a
 * third of the consumer's amqplib time. Corking the socket around the multiplexer's pass turns
 * them into one `writev` (Node writes the corked chunks together on uncork); the order of
 * frames is unchanged, and so are flow control (`drain`) and every AMQP semantic.
 *
 * amqplib also leaves Nagle on by default: a small write then waits for the ACK of the previous
 * segment, which a delayed ACK can hold back for up to 40 ms.
 *
 * Relies on amqplib internals (`connection.muxer`, `connection.stream`, 0.10.x); when they are
 * not there it does nothing and returns false, so an amqplib upgrade can only lose the
 * optimisation (outbox/test/amqp-writes.test.ts notices).
 */
export function coalesceWrites(conn: ChannelModel): boolean {
  const c = (conn as unknown as Partial<AmqplibInternals>).connection;
  const mux = c?.muxer;
  const socket = c?.stream;
  if (!mux || typeof mux._readIncoming !== 'function' || !socket || typeof socket.cork !== 'function') return false;
  if (typeof socket.setNoDelay === 'function') socket.setNoDelay(true);
  const readIncoming = mux._readIncoming;
  mux._readIncoming = function (this: typeof mux) {
    socket.cork();
    try {
      readIncoming.call(this);
    } finally {
      socket.uncork();
    }
  };
  return true;
}
