// The README's runnable examples, taken from the README itself so that the tests run what readers copy.
// A block is marked by an HTML comment on the line before its fence, invisible once rendered:
//
//   <!-- test: embed -->
//   ```js

export interface CodeBlock {
  /** The fence's info string, e.g. `js`. */
  lang: string
  /** The block's text, verbatim, ending with a newline. */
  code: string
}

/** The fenced block right after `<!-- test: NAME -->`; throws when the marker is missing, repeated or not followed by a fence. */
export function markedBlock (markdown: string, name: string): CodeBlock {
  const marker = `<!-- test: ${name} -->`
  const lines = markdown.split('\n')
  const at = lines.flatMap((line, i) => line.trim() === marker ? [i] : [])
  if (at.length !== 1) throw new Error(`README: expected one "${marker}", found ${at.length}`)
  const open = /^```(\S*)\s*$/.exec(lines[at[0]! + 1] ?? '')
  if (open === null) throw new Error(`README: "${marker}" is not followed by a code fence on the next line`)
  const body = lines.slice(at[0]! + 2)
  const close = body.findIndex(line => line.trimEnd() === '```')
  if (close === -1) throw new Error(`README: the block after "${marker}" is never closed`)
  return { lang: open[1]!, code: body.slice(0, close).join('\n') + '\n' }
}

/** The names of every marked block, in order, so a test can insist that it runs each one. */
export function markedBlockNames (markdown: string): string[] {
  return [...markdown.matchAll(/^<!-- test: (\S+) -->$/gm)].map(match => match[1]!)
}
