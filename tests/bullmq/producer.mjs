// Enqueue COUNT jobs on QUEUE (through BullMQ's own Queue, so meta.version is written) and print their ids.
// Env: REDIS_URL, PREFIX, QUEUE, COUNT; PAUSE=1 then pauses the queue with BullMQ's own Queue.pause().
import { Queue } from 'bullmq';

const env = process.env;
const url = new URL(env.REDIS_URL);
const connection = { host: url.hostname, port: Number(url.port || 6379), db: Number(url.pathname.slice(1) || 0) };
const queue = new Queue(env.QUEUE, { connection, prefix: env.PREFIX });
await queue.waitUntilReady();

const ids = [];
for (let n = 0; n < Number(env.COUNT); n++) {
  const job = await queue.add('slow', { n });
  ids.push(job.id);
}
// Queue writes meta.version in the background; make sure it landed before we exit.
for (let i = 0; i < 50 && !(await queue.getVersion()); i++) {
  await new Promise((resolve) => setTimeout(resolve, 100));
}
if (env.PAUSE === '1') {
  await queue.pause();
}
console.log(JSON.stringify({ ids, version: await queue.getVersion() }));
await queue.close();
