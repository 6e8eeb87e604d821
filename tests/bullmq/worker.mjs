// A real BullMQ worker for the queue tests: slow jobs, each start and finish recorded in a Redis list.
// Env: REDIS_URL, PREFIX, QUEUE, LOG_KEY, JOB_MS (default 1000), CONCURRENCY (default 2),
// LOCK_MS (BullMQ's lockDuration, default 30000).
import { Worker } from 'bullmq';
import IORedis from 'ioredis';

const env = process.env;
const url = new URL(env.REDIS_URL);
const connection = {
  host: url.hostname,
  port: Number(url.port || 6379),
  db: Number(url.pathname.slice(1) || 0),
  maxRetriesPerRequest: null,
};
const jobMs = Number(env.JOB_MS || 1000);
const logClient = new IORedis(connection);
const record = (what, id) => logClient.rpush(env.LOG_KEY, `${what} ${id} ${Date.now()}`);

const worker = new Worker(
  env.QUEUE,
  async (job) => {
    await record('start', job.id);
    await new Promise((resolve) => setTimeout(resolve, jobMs));
    await record('finish', job.id);
    return job.id;
  },
  {
    connection,
    prefix: env.PREFIX,
    concurrency: Number(env.CONCURRENCY || 2),
    lockDuration: Number(env.LOCK_MS || 30000),
    name: 'expand-test',
  },
);
worker.on('error', (err) => console.error('worker error', err));

await worker.waitUntilReady();
await record('ready', process.pid);
console.log('ready');

const stop = async () => {
  await worker.close();
  await logClient.quit();
  process.exit(0);
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
