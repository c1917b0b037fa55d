import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['**/node_modules/**', '.data/**'] },
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      // Boundaries from DESIGN.md: shared building blocks and the facade never import domain code.
      'no-restricted-imports': 'off',
    },
  },
  {
    files: ['platform/**', 'outbox/**', 'facade/**'],
    rules: {
      'no-restricted-imports': ['error', { patterns: ['@strangler/monolith', '@strangler/notification', '**/monolith/**', '**/extracted/**'] }],
    },
  },
  {
    files: ['monolith/**'],
    rules: { 'no-restricted-imports': ['error', { patterns: ['@strangler/notification', '**/extracted/**'] }] },
  },
  {
    files: ['extracted/**'],
    rules: { 'no-restricted-imports': ['error', { patterns: ['@strangler/monolith', '**/monolith/**'] }] },
  },
);
