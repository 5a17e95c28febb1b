// Mistakes a webr1 user can make, each of which index.d.ts must reject. package-users.test.mjs runs tsc on this file and
// expects an error on exactly the lines marked `// error:`, so a declaration that lets one of them through fails the test.

import * as webr1 from 'webr1';

export async function mistakes(url: string): Promise<void> {
  const engine = await webr1.load(url, { contextLength: '4096' }); // error: a context length is a number
  await webr1.load(url, { contextLenght: 4096 }); // error: a misspelt option
  await webr1.load(42); // error: not a URL, File or Blob

  const stream = await engine.chat.completions.create({ messages: [{ role: 'user', content: 'Hi' }], stream: true });
  console.log(stream.choices); // error: a stream is iterated, it has no choices
  for await (const chunk of stream) console.log(chunk.choices[0].delta.reasoning); // error: the field is reasoning_content

  const completion = await engine.chat.completions.create({ messages: [{ role: 'user', content: 'Hi' }], max_tokens: '8' }); // error: max_tokens is a number
  if (completion.choices[0].finish_reason === 'max_tokens') console.log('cut'); // error: the reasons are stop, length and abort
  const tokens: string = completion.usage.completion_tokens; // error: a count is a number

  try {
    await engine.unload();
  } catch (e) {
    if ((e as webr1.Webr1Error).code === 'model.toolarge') console.log(e); // error: not one of webr1's codes
  }
  engine.generate(); // error: Engine has no generate(); the API is chat.completions.create
  console.log(tokens);
}
