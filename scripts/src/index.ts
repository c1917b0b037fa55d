export * from './databases.ts';
export * from './migrate.ts';
