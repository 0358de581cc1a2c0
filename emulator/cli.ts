// Standalone Gemini emulator: `npm run emulator` or `node dist/emulator/cli.js`.
// Settings come from the environment (see env.ts); one line per request goes to stdout.

import { emulatorOptionsFromEnv, EmulatorEnvError, hugeEventMatchFromEnv } from './env.js'
import { GeminiEmulator } from './server.js'

async function main (): Promise<void> {
  let options
  try {
    options = emulatorOptionsFromEnv(process.env)
  } catch (err) {
    if (!(err instanceof EmulatorEnvError)) throw err
    process.stderr.write(`gemini-emulator: invalid configuration: ${err.message}\n`)
    process.exit(1)
  }
  const emulator = await GeminiEmulator.start({ ...options, logger: line => process.stdout.write(`${line}\n`) })
  const hugeEventMatch = hugeEventMatchFromEnv(process.env)
  if (hugeEventMatch !== undefined) emulator.addFault({ kind: 'huge-event', afterChunks: 1 }, { match: hugeEventMatch, times: Infinity })
  process.stdout.write(`gemini-emulator listening on ${emulator.url} - use GEMINI_BASE_URL=${emulator.url} ` +
    `(SDK: httpOptions.baseUrl) with ${options.apiKey === undefined ? 'any non-empty API key' : 'the key in EMULATOR_API_KEY'}\n`)

  let stopping = false
  const stop = (signal: NodeJS.Signals): void => {
    if (stopping) return
    stopping = true
    process.stdout.write(`gemini-emulator: ${signal}, closing\n`)
    emulator.close().then(() => process.exit(0), () => process.exit(1))
  }
  process.once('SIGINT', stop)
  process.once('SIGTERM', stop)
}

main().catch((err: unknown) => {
  process.stderr.write(`gemini-emulator: ${err instanceof Error ? err.message : String(err)}\n`)
  process.exit(1)
})
