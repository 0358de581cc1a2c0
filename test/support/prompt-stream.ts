import type { ChunkEvent, PromptStream } from '../../client/index.js'

/** Every chunk of a client stream, read to its end. */
export async function collect (stream: PromptStream): Promise<ChunkEvent[]> {
  const chunks: ChunkEvent[] = []
  for await (const chunk of stream) chunks.push(chunk)
  return chunks
}

/** Iterates until the stream throws; returns the chunks read before, and the error. */
export async function collectUntilError (stream: PromptStream): Promise<{ chunks: ChunkEvent[], error: unknown }> {
  const chunks: ChunkEvent[] = []
  try {
    for await (const chunk of stream) chunks.push(chunk)
  } catch (error) {
    return { chunks, error }
  }
  throw new Error('the stream ended without an error')
}
