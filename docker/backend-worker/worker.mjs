// The demo app's backend-worker: processes the BullMQ queue `sync` (prefix `bull`) and, every few
// seconds, adds a job, so `queues.pause` / `queues.drain` / `queues.resume` have real work to act on.
// Env: REDIS_URL (redis://app-redis:6379/0), JOB_MS (default 2000).
import { Queue, Worker } from 'bullmq';

const url = new URL(process.env.REDIS_URL || 'redis://app-redis:6379/0');
const connection = {
  host: url.hostname,
  port: Number(url.port || 6379),
  db: Number(url.pathname.slice(1) || 0),
  maxRetriesPerRequest: null,
};
const jobMs = Number(process.env.JOB_MS || 2000);

const queue = new Queue('sync', { connection });
const worker = new Worker(
  'sync',
  async (job) => {
    await new Promise((resolve) => setTimeout(resolve, jobMs));
    return `synced shop ${job.data.shop}`;
  },
  { connection, concurrency: 2 },
);
worker.on('completed', (job) => console.log(`job ${job.id} done`));
worker.on('error', (err) => console.error('worker error', err));

let shop = 0;
const producer = setInterval(() => {
  shop = (shop % 20) + 1;
  queue.add('sync-shop', { shop }, { removeOnComplete: 1000 }).catch((err) => console.error(err));
}, 3000);

const stop = async () => {
  clearInterval(producer);
  await worker.close();
  await queue.close();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
console.log('backend-worker ready');
