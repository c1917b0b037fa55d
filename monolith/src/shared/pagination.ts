// Moved to platform (platform/src/pagination.ts): cursors are part of the contract and must be
// interchangeable with the extracted services' (a client may page across a flip).
export { encodeCursor, decodeCursor, pageQuerySchema, toPage, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, type Cursor, type PageQuery, type Page } from '@strangler/platform';
