import t, { type Test } from 'tap'
import fc from 'fast-check'
import { SseParser, type SseEvent } from '../client/sse-parser.js'

const encoder = new TextEncoder()

function parseAll (pieces: Array<Uint8Array | string>): SseEvent[] {
  const parser = new SseParser()
  const events = pieces.flatMap(piece => parser.feed(piece))
  return [...events, ...parser.end()]
}

function message (data: string, lastEventId = ''): SseEvent {
  return { data, event: 'message', lastEventId }
}

/** Every way to cut `bytes` in two, plus one byte at a time: the events must never change. */
function checkEverySplit (t: Test, bytes: Uint8Array, expected: SseEvent[]): void {
  let failures = 0
  for (let cut = 0; cut <= bytes.length; cut++) {
    const got = parseAll([bytes.slice(0, cut), bytes.slice(cut)])
    if (JSON.stringify(got) !== JSON.stringify(expected)) {
      failures++
      if (failures <= 3) t.same(got, expected, `cut at byte ${cut}`)
    }
  }
  t.equal(failures, 0, `all ${bytes.length + 1} two-piece cuts give the same events`)
  t.same(parseAll([...bytes].map(byte => Uint8Array.of(byte))), expected, 'one byte at a time')
}

// The gateway's own framing, with the characters that break naive clients: multi-byte UTF-8
// (2, 3 and 4 bytes), an escaped newline and quote inside the JSON, and a heartbeat comment.
const GATEWAY_STREAM =
  ': ping\n\n' +
  'data: {"chunk":"Café naïve — 🚀","index":1}\n\n' +
  ': ping\n' +
  'data: {"chunk":"line\\nbreak \\"quoted\\" Zürich ✨","index":2}\n\n' +
  'data: {"complete":true,"totalChunks":2,"fullText":"Café naïve — 🚀line\\nbreak \\"quoted\\" Zürich ✨","usage":{"promptTokens":1,"completionTokens":9,"totalTokens":10}}\n\n'

const GATEWAY_EVENTS = [
  message('{"chunk":"Café naïve — 🚀","index":1}'),
  message('{"chunk":"line\\nbreak \\"quoted\\" Zürich ✨","index":2}'),
  message('{"complete":true,"totalChunks":2,"fullText":"Café naïve — 🚀line\\nbreak \\"quoted\\" Zürich ✨","usage":{"promptTokens":1,"completionTokens":9,"totalTokens":10}}')
]

t.test('the gateway stream parses identically however the bytes are cut, even inside a character', async t => {
  const bytes = encoder.encode(GATEWAY_STREAM)
  t.ok(bytes.length > GATEWAY_STREAM.length, 'the stream has multi-byte characters to cut through')
  checkEverySplit(t, bytes, GATEWAY_EVENTS)
})

t.test('LF, CRLF and CR line endings give the same events at every cut', async t => {
  for (const [name, eol] of [['LF', '\n'], ['CRLF', '\r\n'], ['CR', '\r']] as const) {
    await t.test(name, async t => {
      checkEverySplit(t, encoder.encode(GATEWAY_STREAM.replaceAll('\n', eol)), GATEWAY_EVENTS)
    })
  }
  t.same(parseAll(['data: a\r\n\r\ndata: b\n\rdata: c\r\r']), [message('a'), message('b'), message('c')], 'mixed endings in one stream')
})

t.test('several events in one read, multi-line data, data: without a space, comments', async t => {
  const stream =
    'data:no-space\n\n' +
    'data: first line\ndata:second line\ndata:  two spaces keep one\n\n' +
    ':comment with data: inside\n' +
    'data\n\n' +
    'event: custom\ndata: typed\n\n' +
    'id: 7\ndata: with id\n\n' +
    'retry: 1000\nunknown: field\n\n'
  const expected = [
    message('no-space'),
    message('first line\nsecond line\n two spaces keep one'),
    message(''),
    { data: 'typed', event: 'custom', lastEventId: '' },
    message('with id', '7')
  ]
  t.same(parseAll([stream]), expected, 'as one read')
  checkEverySplit(t, encoder.encode(stream), expected)
})

t.test('an event not terminated by a blank line is discarded at the end of the stream', async t => {
  t.same(parseAll(['data: {"chunk":"a","index":1}\n\ndata: {"complete":true']), [message('{"chunk":"a","index":1}')])
  t.same(parseAll(['data: whole\n\ndata: cut\n']), [message('whole')], 'a single line ending is not enough')
  t.same(parseAll(['data: a\n\n', '']), [message('a')], 'an empty read changes nothing')
})

t.test('a UTF-8 byte order mark at the start is skipped', async t => {
  t.same(parseAll([Uint8Array.of(0xef, 0xbb), Uint8Array.of(0xbf, ...encoder.encode('data: x\n\n'))]), [message('x')])
})

t.test('random events, random line endings, random cuts', async t => {
  const dataLine = fc.string({ unit: 'grapheme', maxLength: 12 }).map(text => text.replace(/[\r\n]/g, ' '))
  const event = fc.array(dataLine, { minLength: 1, maxLength: 3 })
  const eol = fc.constantFrom('\n', '\r\n', '\r')
  t.doesNotThrow(() => fc.assert(fc.property(
    fc.array(fc.record({ lines: event, eol, comment: fc.boolean() }), { maxLength: 6 }),
    fc.array(fc.nat(), { maxLength: 8 }),
    (events, cutSeeds) => {
      const text = events.map(({ lines, eol, comment }) =>
        (comment ? `: ping${eol}` : '') + lines.map(line => `data: ${line}${eol}`).join('') + eol).join('')
      const bytes = encoder.encode(text)
      const cuts = [...new Set(cutSeeds.map(seed => seed % (bytes.length + 1)))].sort((a, b) => a - b)
      const pieces: Uint8Array[] = []
      let from = 0
      for (const cut of [...cuts, bytes.length]) {
        pieces.push(bytes.slice(from, cut))
        from = cut
      }
      const expected = events.map(({ lines }) => message(lines.join('\n')))
      return JSON.stringify(parseAll(pieces)) === JSON.stringify(expected)
    }
  ), { numRuns: 500 }), '500 random streams parsed as written')
})
