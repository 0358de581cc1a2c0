/** A model's id as Gemini's list names it, without the `models/` prefix a request may carry. */
export function modelId (name: string): string {
  return name.startsWith('models/') ? name.slice('models/'.length) : name
}
