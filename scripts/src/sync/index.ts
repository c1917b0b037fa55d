export * from './spec.ts';
export * from './canonical.ts';
export * from './backfill.ts';
export * from './verify.ts';
