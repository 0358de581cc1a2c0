// A strict reader of the Prometheus text exposition (format 0.0.4), shared by the tests and the
// operational scripts that check a gateway's metrics.

/** One sample line of a Prometheus text exposition. */
export interface Sample {
  name: string
  labels: Record<string, string>
  value: number
}

const NAME = /[a-zA-Z_:][a-zA-Z0-9_:]*/y
const LABEL_NAME = /[a-zA-Z_][a-zA-Z0-9_]*/y

function parseValue (text: string): number {
  // Like Prometheus (Go's ParseFloat): NaN and Inf in any letter case, e.g. the JavaScript client's "Nan".
  const lower = text.toLowerCase()
  if (lower === 'nan') return NaN
  if (lower === '+inf' || lower === 'inf') return Infinity
  if (lower === '-inf') return -Infinity
  const value = Number(text)
  if (text === '' || Number.isNaN(value)) throw new Error(`not a sample value: ${JSON.stringify(text)}`)
  return value
}

/**
 * Parses the sample lines of a text exposition (format 0.0.4), label escapes included, and throws
 * on anything malformed. Validity of the whole document is checked by Prometheus' own promtool.
 */
export function parseSamples (text: string): Sample[] {
  const result: Sample[] = []
  for (const [lineNumber, line] of text.split('\n').entries()) {
    if (line === '' || line.startsWith('#')) continue
    const fail = (what: string): never => { throw new Error(`line ${lineNumber + 1}: ${what}: ${line}`) }
    NAME.lastIndex = 0
    const name = NAME.exec(line)?.[0] ?? fail('no metric name')
    let at = name.length
    const labels: Record<string, string> = {}
    if (line[at] === '{') {
      at++
      while (line[at] !== '}') {
        LABEL_NAME.lastIndex = at
        const label = LABEL_NAME.exec(line)?.[0] ?? fail('bad label name')
        at += label.length
        if (line.slice(at, at + 2) !== '="') fail('expected ="')
        at += 2
        let value = ''
        while (line[at] !== '"') {
          if (at >= line.length) fail('unterminated label value')
          if (line[at] === '\\') {
            const escaped = line[at + 1]
            value += escaped === 'n' ? '\n' : escaped === '\\' ? '\\' : escaped === '"' ? '"' : fail('bad escape')
            at += 2
          } else {
            value += line[at]
            at++
          }
        }
        labels[label] = value
        at++
        if (line[at] === ',') at++
        else if (line[at] !== '}') fail('expected , or }')
      }
      at++
    }
    if (line[at] !== ' ') fail('expected a space before the value')
    const [value = '', ...rest] = line.slice(at + 1).split(' ')
    if (rest.length > 1) fail('trailing text')
    result.push({ name, labels, value: parseValue(value) })
  }
  return result
}

export class Exposition {
  readonly samples: Sample[]
  constructor (readonly text: string) {
    this.samples = parseSamples(text)
  }

  /**
   * The value of the one sample of `name` whose labels are exactly `labels`; undefined when there is
   * none. What a test asserts `metric{labels} value` with.
   */
  sample (name: string, labels: Record<string, string> = {}): number | undefined {
    const wanted = Object.entries(labels)
    return this.samples.find(sample => sample.name === name &&
      Object.keys(sample.labels).length === wanted.length &&
      wanted.every(([key, value]) => sample.labels[key] === value))?.value
  }

  /** Sum of the values of `name`'s samples whose labels include `labels`; 0 when none match. */
  value (name: string, labels: Record<string, string> = {}): number {
    return this.samples
      .filter(sample => sample.name === name && Object.entries(labels).every(([key, value]) => sample.labels[key] === value))
      .reduce((sum, sample) => sum + sample.value, 0)
  }

  /** Distinct label sets of a metric name. */
  labelSets (name: string): Array<Record<string, string>> {
    return this.samples.filter(sample => sample.name === name).map(sample => sample.labels)
  }

  /** Metric family names declared by `# TYPE` lines. */
  families (): Set<string> {
    return new Set([...this.text.matchAll(/^# TYPE (\S+) /gm)].map(match => match[1] as string))
  }
}
