// A two-call chain in Node.js with the official openai package, as a user would write it: the
// SDK reads OPENAI_BASE_URL and OPENAI_API_KEY from the environment (chainfleet exec points the
// base URL at its proxy). The topic is the first argument; the article goes to stdout.
import OpenAI from "openai";

const topic = process.argv[2];
const client = new OpenAI({ maxRetries: 0 });
const ask = async (content) => {
  const reply = await client.chat.completions.create({
    model: "gpt-4o-mini",
    messages: [{ role: "user", content }],
  });
  return reply.choices[0].message.content;
};

const notes = await ask(`Research notes on: ${topic}`);
const article = await ask(`Write an article on ${topic} from these notes:\n${notes}`);
process.stdout.write(article);
