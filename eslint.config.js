import neostandard from 'neostandard'

export default [
  ...neostandard({
    ts: true,
    // The seed contract's examples are kept byte for byte as the contract gives them.
    ignores: ['dist/**', '.cache/**', '.tap/**', 'coverage/**', 'bench/results/**', 'test/fixtures/seed-examples/**']
  }),
  {
    rules: {
      // `void promise` marks a promise deliberately left running, as typescript-eslint's no-floating-promises has it.
      'no-void': ['error', { allowAsStatement: true }]
    }
  },
  {
    files: ['**/*.ts'],
    rules: {
      // A TypeBox schema and its static type share a name by design; the compiler catches real redeclarations.
      '@typescript-eslint/no-redeclare': 'off'
    }
  }
]
