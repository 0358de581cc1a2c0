// The checks the gateway's plugins make of their numeric options, with one wording: a host that passes a bad value
// learns which plugin and which option at registration.

/** `value`, or `fallback` when it is unset; throws naming `plugin` and `name` unless it is a positive integer. */
export function positiveInteger (plugin: string, name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback
  if (!Number.isInteger(value) || value < 1) throw new Error(`${plugin}: option "${name}" must be a positive integer`)
  return value
}
