/** A misconfiguration the operator must fix; the server prints its message alone, without a stack trace. */
export class ConfigError extends Error {
  override name = 'ConfigError'
}
