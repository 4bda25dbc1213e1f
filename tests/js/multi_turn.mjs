// Three turns of one conversation with the SDK's documented pattern:
// messages = [...earlier, ...result.response.messages, {role: 'user', content}].
// Prints {"ok", "questions": [the user's, one per turn], "texts": [the answers], "finishReasons": [...]}.
import { generateText, streamText } from 'ai';
import { defaultModel, onStreamError, parseArgs, report, streamed } from './common.mjs';

const QUESTIONS = ['first question', 'second question', 'third question'];

const { baseURL, modelId, mode } = parseArgs();
const model = defaultModel(baseURL, modelId);

async function turn(messages) {
  if (mode === 'generate') {
    const result = await generateText({ model, messages, maxRetries: 0 });
    return { text: result.text, finishReason: result.finishReason, messages: result.response.messages };
  }
  return streamed(streamText({ model, messages, maxRetries: 0, onError: onStreamError }));
}

await report(async (progress) => {
  progress.questions = QUESTIONS;
  progress.texts = [];
  progress.finishReasons = [];
  let messages = [];
  for (const question of QUESTIONS) {
    messages = [...messages, { role: 'user', content: question }];
    const done = await turn(messages);
    progress.texts.push(done.text);
    progress.finishReasons.push(done.finishReason);
    messages = [...messages, ...done.messages];
  }
  return progress;
});
