// An app written for OpenAI's Videos API, unchanged but for baseURL and apiKey:
// create, poll with retrieve at the server's pace, download the MP4, list, delete.
// Prints one JSON line of what it saw; tests/test_v1_node.py checks it and the file.
import { writeFile } from "node:fs/promises";
import OpenAI from "openai";

const client = new OpenAI({ baseURL: process.env.SORAKIT_URL + "/v1", apiKey: process.env.SORAKIT_KEY });
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

let video = await client.videos.create({ prompt: "a paper lantern drifting up", seconds: "4", size: "1280x720" });
const created = video.id;
const progress = [];
const pollAfter = new Set();
while (video.status === "queued" || video.status === "in_progress") {
  const { data, response } = await client.videos.retrieve(created).withResponse();
  video = data;
  progress.push(video.progress);
  const after = response.headers.get("openai-poll-after-ms");
  if (after) pollAfter.add(after);
  if (video.status === "queued" || video.status === "in_progress") await sleep(Math.min(Number(after ?? 1000), 300));
}
const content = await client.videos.downloadContent(created);
await writeFile(process.env.SORAKIT_OUT, Buffer.from(await content.arrayBuffer()));
const listed = [];
for await (const item of client.videos.list({ limit: 1 })) listed.push(item.id);
const deleted = await client.videos.delete(created);
let notFound = false;
try {
  await client.videos.retrieve(created);
} catch (err) {
  notFound = err instanceof OpenAI.NotFoundError;
}
console.log(JSON.stringify({ id: created, status: video.status, size: video.size, seconds: video.seconds,
  progress, pollAfter: [...pollAfter], listed, deleted, notFound }));
