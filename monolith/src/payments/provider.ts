import { sleep } from '@strangler/platform';

export interface ChargeRequest {
  /** Idempotency key at the provider: a retried charge with the same id charges once. */
  paymentId: string;
  amountCents: number;
  currency: string;
  token: string;
}

export type ChargeResult = { outcome: 'captured'; reference: string } | { outcome: 'declined'; reference: string; declineCode: string };

export interface RefundRequest {
  /** Idempotency key at the provider. */
  refundId: string;
  paymentReference: string;
  amountCents: number;
}

/**
 * The payment provider as the payments module sees it. Calls must honour `signal`: the caller
 * aborts at its deadline and treats the outcome as unknown (hence the idempotency keys).
 */
export interface PaymentProvider {
  charge(req: ChargeRequest, signal: AbortSignal): Promise<ChargeResult>;
  refund(req: RefundRequest, signal: AbortSignal): Promise<{ reference: string }>;
}

export interface FakePaymentProviderOptions {
  /** Simulated latency of every call in ms (default 0); lets tests hold a request in flight. */
  latencyMs?: number;
}

/** Test card tokens (DESIGN.md): the outcome is a function of the token alone. */
export const TEST_TOKENS = {
  tok_visa: 'captured',
  tok_mastercard: 'captured',
  tok_declined: 'declined',
  tok_timeout: 'hangs until the caller gives up',
} as const;

/**
 * Deterministic in-process provider: `tok_visa` and `tok_mastercard` are captured,
 * `tok_declined` is declined (`card_declined`), `tok_timeout` never answers (until aborted), any
 * other token is declined as `invalid_token`. References derive from the idempotency key, and a
 * repeated key returns the first result, as a real provider would.
 */
export class FakePaymentProvider implements PaymentProvider {
  private readonly charges = new Map<string, ChargeResult>();
  constructor(private readonly options: FakePaymentProviderOptions = {}) {}

  async charge(req: ChargeRequest, signal: AbortSignal): Promise<ChargeResult> {
    await this.delay(signal);
    if (req.token === 'tok_timeout') {
      await sleep(60_000, signal);
      throw new Error('fake provider: charge abandoned');
    }
    const known = this.charges.get(req.paymentId);
    if (known) return known;
    const reference = `ch_${req.paymentId.replaceAll('-', '')}`;
    const result: ChargeResult =
      req.token === 'tok_visa' || req.token === 'tok_mastercard'
        ? { outcome: 'captured', reference }
        : { outcome: 'declined', reference, declineCode: req.token === 'tok_declined' ? 'card_declined' : 'invalid_token' };
    this.remember(req.paymentId, result);
    return result;
  }

  async refund(req: RefundRequest, signal: AbortSignal): Promise<{ reference: string }> {
    await this.delay(signal);
    return { reference: `re_${req.refundId.replaceAll('-', '')}` };
  }

  private async delay(signal: AbortSignal) {
    if (this.options.latencyMs) await sleep(this.options.latencyMs, signal);
    if (signal.aborted) throw new Error('fake provider: call aborted');
  }

  // Bounded, like a real provider's idempotency window: the oldest keys are forgotten first.
  private remember(key: string, result: ChargeResult) {
    this.charges.set(key, result);
    if (this.charges.size > 100_000) this.charges.delete(this.charges.keys().next().value!);
  }
}
