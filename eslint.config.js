import neostandard from 'neostandard'

// The core (src/) knows nothing of HTTP frameworks or of the process environment:
// everything it needs is passed in (STYLE.md, "The house").
const coreBoundaries = {
  files: ['src/**/*.ts'],
  rules: {
    'no-restricted-imports': ['error', {
      patterns: [
        { group: ['fastify', 'fastify/*', '@fastify/*', 'fastify-plugin'], message: 'src/ is framework-free: adapt it in plugins/ or routes/ instead.' },
        { group: ['**/plugins/**', '**/routes/**', '**/app.js', '**/server.js'], message: 'Data flows one way: src/ must not import plugins/, routes/ or the app.' }
      ]
    }],
    'no-restricted-properties': ['error', {
      object: 'process',
      property: 'env',
      message: 'Only src/config.ts reads the environment; take the value from Config.'
    }]
  }
}

export default [
  ...neostandard({ ts: true, ignores: ['dist/**', 'clients/*/dist/**', 'coverage/**', 'node_modules/**', '.ci/results/**'] }),
  coreBoundaries,
  {
    files: ['src/config.ts'],
    rules: { 'no-restricted-properties': 'off' }
  }
]
