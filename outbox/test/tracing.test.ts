import { afterAll, describe, expect, it } from 'vitest';
import { createLogger, currentContext, flushTracing, runWithContext, startTracing, stopTracing, type RequestContext } from '@strangler/platform';
import { createTestBroker, createTestDatabase, startOtlpCollector, type CollectedSpan } from '@strangler/platform/testing';
import { appendEvent, consume, createRelay } from '../src/index.ts';
import { appliedCount, createDomainTables, replicaHandler, waitFor, writeEvent } from './helpers.ts';

const db = await createTestDatabase('monolith');
const broker = await createTestBroker();
await createDomainTables(db.knex);
const collector = await startOtlpCollector();
startTracing('outbox-tracing-test', createLogger('tracing-test'), { OTEL_EXPORTER_OTLP_ENDPOINT: collector.url });
afterAll(() => stopTracing());

// What each event's apply ran under, and the event it appended in turn (for 'chain' items).
const contexts = new Map<string, RequestContext | undefined>();
const handler = replicaHandler(async (event) => {
  contexts.set(event.id, currentContext());
  if (event.aggregateId === 'poison') throw new Error('cannot apply this one');
});
const relay = createRelay({ connection: db.connection, amqpUrl: broker.url, exchange: broker.exchange, pollIntervalMs: 100, leaseRetryMs: 200 });
const consumer = await consume({
  queue: `${broker.prefix}.traced`,
  bindings: ['item.*'],
  handler: {
    ...handler,
    async apply(trx, event) {
      await handler.apply!(trx, event);
      // A consumer's own write, appended in its transaction: it continues the trace.
      if (event.aggregateId === 'chain') await appendEvent(trx, { aggregateType: 'note', aggregateId: 'n1', aggregateVersion: 1, eventType: 'note.written', payload: {}, origin: 'test' });
    },
  },
  db: db.newPool('consumer'),
  amqpUrl: broker.url,
  exchange: broker.exchange,
  retry: { maxAttempts: 1, baseMs: 100, maxMs: 100 },
});
afterAll(() => consumer.stop());
afterAll(() => relay.stop());
void relay.start();

const TRACE = '0af7651916cd43dd8448eb211c80319c';
const WRITER_SPAN = 'b7ad6b7169203331';
const spanFor = (spans: CollectedSpan[], name: string, messageId: string) => spans.find((s) => s.name === name && s.attributes['messaging.message.id'] === messageId);

describe('outbox tracing', () => {
  it('continues the writer\'s trace: a publish span, then a process span, under which the handler runs and writes', async () => {
    const { id } = await runWithContext({ requestId: 'req-traced', traceparent: `00-${TRACE}-${WRITER_SPAN}-01` }, () => writeEvent(db.knex, 'chain'));
    await waitFor('the event applied', async () => (await appliedCount(db.knex)) >= 1);
    await flushTracing();
    const spans = await collector.waitFor((s) => !!spanFor(s, 'process item.created', id));
    const publish = spanFor(spans, 'publish item.created', id)!;
    const processed = spanFor(spans, 'process item.created', id)!;
    expect(publish).toMatchObject({ service: 'outbox-tracing-test', kind: 4, traceId: TRACE, parentSpanId: WRITER_SPAN, status: 0 });
    expect(publish.attributes).toMatchObject({ 'messaging.system': 'rabbitmq', 'messaging.destination.name': broker.exchange, 'messaging.rabbitmq.destination.routing_key': 'item.created', 'strangler.aggregate': 'item/chain', 'strangler.aggregate_version': 1 });
    expect(processed).toMatchObject({ kind: 5, traceId: TRACE, parentSpanId: publish.spanId, status: 0 });
    expect(processed.attributes).toMatchObject({ 'messaging.destination.name': `${broker.prefix}.traced.events`, 'strangler.outcome': 'applied' });
    // The handler ran in the writer's request and the consumer span; its own event carries both.
    expect(contexts.get(id)).toEqual({ requestId: 'req-traced', traceparent: `00-${TRACE}-${processed.spanId}-01` });
    const note = await db.knex('outbox').where({ aggregate_type: 'note' }).first('headers');
    expect(note.headers).toMatchObject({ traceparent: `00-${TRACE}-${processed.spanId}-01`, requestId: 'req-traced' });
  });

  it('fails the process span of an event whose handler throws', async () => {
    const { id } = await writeEvent(db.knex, 'poison');
    await flushTracing();
    await waitFor('the failed attempt exported', async () => {
      await flushTracing();
      return spanFor(collector.spans, 'process item.created', id);
    });
    const processed = spanFor(collector.spans, 'process item.created', id)!;
    const publish = spanFor(collector.spans, 'publish item.created', id)!;
    expect(processed).toMatchObject({ status: 2, parentSpanId: publish.spanId, traceId: publish.traceId });
    // The writer had no trace: the publication started one.
    expect(publish.parentSpanId).toBe('');
  });
});
