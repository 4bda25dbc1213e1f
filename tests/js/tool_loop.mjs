// One call with a tool and a multi-step stop condition: the SDK runs the tool and sends its
// result back within the same call. Prints {"ok", "text" (the last step's), "toolCalls": [{name, input}],
// "toolResults": [...], "stepTexts": [...], "finishReason"}.
import { generateText, stepCountIs, streamText, tool } from 'ai';
import { z } from 'zod';
import { defaultModel, onStreamError, parseArgs, report, streamed } from './common.mjs';

const { baseURL, modelId, mode, extra: nonce } = parseArgs('nonce');
const model = defaultModel(baseURL, modelId);

const weather = tool({
  description: 'The weather in a city',
  inputSchema: z.object({ city: z.string() }),
  execute: async ({ city }) => `sunny in ${city}, ${nonce}`,
});

await report(async (progress) => {
  // filled step by step, so a failure in a later step still shows what the earlier ones did
  Object.assign(progress, { stepTexts: [], toolCalls: [], toolResults: [] });
  const onStepFinish = (step) => {
    progress.stepTexts.push(step.text);
    progress.toolCalls.push(...step.toolCalls.map((c) => ({ name: c.toolName, input: c.input })));
    progress.toolResults.push(...step.toolResults.map((r) => r.output));
  };
  const options = {
    model, tools: { weather }, stopWhen: stepCountIs(3), maxRetries: 0, onStepFinish,
    messages: [{ role: 'user', content: 'What is the weather in Paris?' }],
  };
  const done = mode === 'generate'
    ? await generateText(options)
    : await streamed(streamText({ ...options, onError: onStreamError }));
  return { ...progress, steps: done.steps.length, text: done.text, finishReason: done.finishReason };
});
