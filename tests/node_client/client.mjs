// Drives a realm server with the official OpenAI Node client and prints what it got as JSON.
// Usage: node client.mjs BASE_URL MODEL
import OpenAI from "openai";

const [baseURL, model] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey: "unused", maxRetries: 0 });

const models = (await client.models.list()).data.map((m) => m.id);
const completion = await client.completions.create({
  model, prompt: "The capital of France is", max_tokens: 8, temperature: 0,
});
const chat = await client.chat.completions.create({
  model, messages: [{ role: "user", content: "Say hello." }], max_tokens: 8, temperature: 0,
});
const stream = await client.chat.completions.create({
  model, messages: [{ role: "user", content: "Say hello." }], max_tokens: 8, temperature: 0,
  stream: true, stream_options: { include_usage: true },
});
let streamed = "";
let usage = null;
let finish = null;
for await (const chunk of stream) {
  if (chunk.choices.length) {
    streamed += chunk.choices[0].delta.content ?? "";
    finish = chunk.choices[0].finish_reason ?? finish;
  } else {
    usage = chunk.usage;
  }
}
let notFound = null;
try {
  await client.completions.create({ model: "no-such-model", prompt: "x" });
} catch (err) {
  notFound = { status: err.status, code: err.code };
}
console.log(JSON.stringify({
  models, completion: completion.choices[0].text, chat: chat.choices[0].message.content,
  streamed, finish, usage, notFound,
}));
