import { ConfigError } from './standalone/config-error.js'
import { loadEnv } from './standalone/env.js'
import { startServer } from './standalone/start.js'

// The process entry: the whole environment is checked before anything is built, so a bad value stops the start
// with one line naming the variable. Anything else that stops it is a fault, printed with its stack.
try {
  await startServer(loadEnv(process.env))
} catch (error: unknown) {
  const detail = error instanceof ConfigError ? error.message : error instanceof Error ? error.stack ?? error.message : String(error)
  process.stderr.write(`amrikyy gateway failed to start: ${detail}\n`)
  process.exit(1)
}
