const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * True for a syntactically valid uuid. Path ids that are not uuids answer 404 with the
 * resource's NOT_FOUND code (such a resource cannot exist), never reach Postgres as a cast error.
 */
export const isUuid = (value: unknown): value is string => typeof value === 'string' && UUID.test(value);
