import js from '@eslint/js';
import prettier from 'eslint-config-prettier';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  {
    ignores: [
      'node_modules/**',
      'services/generated/**',
      'native/build/**',
      'dist/**',
      'clients/typescript/dist/**',
      'clients/typescript/install.mjs',
      'clients/python/**',
      '.hotpot/**',
      'bin/**',
      'scripts/**',
      'eslint.config.mjs',
    ],
  },
  js.configs.recommended,
  ...tseslint.configs.strictTypeChecked,
  {
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/consistent-type-imports': ['error', { fixStyle: 'inline-type-imports' }],
      '@typescript-eslint/restrict-template-expressions': ['error', { allowNumber: true }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      '@typescript-eslint/no-confusing-void-expression': 'off',
      eqeqeq: 'error',
    },
  },
  {
    // Tests narrow values with t.true/t.is that the type checker cannot follow.
    files: ['test/**/*.ts'],
    rules: {
      '@typescript-eslint/no-unnecessary-condition': 'off',
      '@typescript-eslint/require-await': 'off',
      '@typescript-eslint/no-unnecessary-type-parameters': 'off',
      '@typescript-eslint/no-unsafe-enum-comparison': 'off',
    },
  },
  {
    // The dashboard's page: plain browser ES modules served as they are, outside the TypeScript project.
    files: ['services/dashboard/static/**/*.js'],
    ...tseslint.configs.disableTypeChecked,
  },
  {
    files: ['services/dashboard/static/**/*.js'],
    languageOptions: { globals: { document: 'readonly', fetch: 'readonly', EventSource: 'readonly' } },
  },
  prettier,
);
