// What the scripts share: the command line, the SDK's default model, and the one JSON line they print.
import { createOpenAI } from '@ai-sdk/openai';

/** `node <script> <fastroute base URL> <model id> <generate|stream> [extra]` */
export function parseArgs(extraName) {
  const [baseURL, modelId, mode, extra] = process.argv.slice(2);
  if (!baseURL || !modelId || !['generate', 'stream'].includes(mode) || (extraName && !extra)) {
    const tail = extraName ? ` <${extraName}>` : '';
    process.stderr.write(`usage: node ${process.argv[1]} <base URL ending in /v1> <model id> <generate|stream>${tail}\n`);
    process.exit(2);
  }
  return { baseURL, modelId, mode, extra };
}

/** The SDK's default model: `createOpenAI(...)(id)` is the OpenAI Responses API, with every other default kept. */
export function defaultModel(baseURL, modelId) {
  return createOpenAI({ baseURL, apiKey: 'sk-vercel-ai-sdk-test' })(modelId);
}

// streamText does not reject on a failed request: it hands the error to onError and then
// rejects its promises with a NoOutputGeneratedError. Keep the first error to report it instead.
let streamError;
export function onStreamError({ error }) {
  streamError ??= error;
}

/** Wait for a streamText result to end: {text, finishReason, steps, messages}, or throw the stream's own error. */
export async function streamed(result) {
  try {
    const [text, finishReason, steps, response] =
      await Promise.all([result.text, result.finishReason, result.steps, result.response]);
    if (streamError !== undefined) throw streamError;
    return { text, finishReason, steps, messages: response.messages };
  } catch (error) {
    throw streamError ?? error;
  }
}

/** Run a scenario and print one JSON line: `{"ok": true, ...result}` (exit 0) or `{"ok": false, "error", ...so far}` (exit 1). */
export async function report(scenario) {
  const progress = {};
  try {
    Object.assign(progress, await scenario(progress));
    process.stdout.write(JSON.stringify({ ok: true, ...progress }) + '\n');
  } catch (error) {
    const seen = {
      name: error?.name,
      message: String(error?.message ?? error),
      statusCode: error?.statusCode,
      responseBody: error?.responseBody,
      url: error?.url,
    };
    process.stdout.write(JSON.stringify({ ok: false, error: seen, ...progress }) + '\n');
    process.exitCode = 1;
  }
}
