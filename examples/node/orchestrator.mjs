#!/usr/bin/env node
// Drive codex-runner from Node.js, with the standard library only.
//
//   node examples/node/orchestrator.mjs target/debug/codex-runner \
//       --codex-bin target/debug/fake-codex --codex-home "$(mktemp -d)"
//
// The first argument is the daemon (default: $CODEX_RUNNER_BIN, else
// `codex-runner` on PATH); the others are its flags. Starts three turns at
// once, each with the MCP server at $MCP_URL (default http://127.0.0.1:9/mcp,
// which the fake codex never connects to; with the real codex, point it at a
// live server), cancels the third once it has started, prints every result,
// and exits 1 if anything is off.
//
// The protocol is in docs/protocol.md; its JSON Schemas are in docs/schema/.

import { spawn } from "node:child_process";
import { createInterface } from "node:readline";

const TIMEOUT_MS = 1000 * Number(process.env.ORCHESTRATOR_TIMEOUT_SECS ?? 300);

/** One run: its events as they arrive, and a promise of its last line. */
class Run {
  constructor(id) {
    this.id = id;
    this.events = [];
    this.done = new Promise((resolve) => (this.finish = resolve));
    this.started = new Promise((resolve) => (this.markStarted = resolve));
  }

  onLine(line) {
    if (line.type === "event") {
      this.events.push(line.event);
      console.log(`${this.id}: ${line.event.type}`);
      if (line.event.type === "thread.started") this.markStarted();
    } else {
      // `end`, or a `rejected` line or a failure of the daemon.
      this.finish(line);
    }
  }

  finalMessage() {
    const texts = this.events
      .filter((e) => e.type === "item.completed" && e.item?.type === "agent_message")
      .map((e) => e.item.text);
    return texts.at(-1) ?? "";
  }
}

/** One codex-runner child. One readline routes stdout lines by run id. */
class Runner {
  constructor(program, args) {
    this.runs = new Map(); // id -> Run, until its end
    this.linesSent = 0;
    this.runLines = new Map(); // stdin line number -> run id: `rejected` names the line
    this.problems = [];
    this.child = spawn(program, args, { stdio: ["pipe", "pipe", "pipe"] });
    this.child.on("error", (e) => this.problems.push(`cannot run ${program}: ${e.message}`));
    // EPIPE when the daemon is gone; its exit is reported below.
    this.child.stdin.on("error", (e) => this.problems.push(`stdin: ${e.message}`));
    this.exited = new Promise((resolve) => this.child.on("close", (code, signal) => resolve(code ?? signal)));
    this.stdoutClosed = new Promise((resolve) =>
      createInterface({ input: this.child.stdout, crlfDelay: Infinity })
        .on("line", (text) => this.onStdout(text))
        .on("close", resolve),
    );
    createInterface({ input: this.child.stderr, crlfDelay: Infinity }).on("line", (text) => this.onStderr(text));
    this.exited.then((code) => {
      for (const run of this.runs.values()) run.onLine({ type: "failed", error: `codex-runner exited (${code})` });
      this.runs.clear();
    });
  }

  send(request) {
    this.child.stdin.write(JSON.stringify(request) + "\n");
    this.linesSent += 1;
  }

  run(id, params) {
    if (this.runs.has(id)) throw new Error(`run id ${id} has not ended yet`);
    const run = new Run(id);
    run.line = this.linesSent + 1; // of its request on stdin
    this.runs.set(id, run);
    this.runLines.set(run.line, id);
    this.send({ type: "run", id, params });
    return run;
  }

  ended(run) {
    this.runs.delete(run.id);
    this.runLines.delete(run.line);
  }

  cancel(id) {
    this.send({ type: "cancel", id });
  }

  onStdout(text) {
    let line;
    try {
      line = JSON.parse(text);
    } catch {
      this.problems.push(`unparseable output line: ${text.slice(0, 200)}`);
      return;
    }
    if (line.type === "event" || line.type === "end") {
      const run = this.runs.get(line.id);
      if (!run) return;
      if (line.type === "end") this.ended(run);
      run.onLine(line);
    } else if (line.type === "rejected") {
      // No `id` here, by design: match the request by its line number.
      this.problems.push(`rejected: ${text}`);
      const run = this.runs.get(this.runLines.get(line.line));
      if (run) {
        this.ended(run);
        run.onLine(line);
      }
    }
    // Any other type was added by a newer daemon: ignore it.
  }

  onStderr(text) {
    let line = null;
    try {
      line = JSON.parse(text);
    } catch {}
    if (line?.type === "diag") console.error(`  ${line.id} ${line.level}: ${line.message}`);
    else if (line?.type === "fatal") this.problems.push(`fatal: ${line.message}`);
    else console.error(text); // a log line
  }

  /** End of input: the daemon finishes every run, then exits. */
  async close() {
    this.child.stdin.end();
    await this.stdoutClosed;
    return await this.exited;
  }

  /**
   * Giving up: SIGTERM stops every turn (a second one, a second later, skips
   * the grace period) and the daemon cleans up. Exiting without it would
   * leave the daemon running its turns for nobody until it next writes.
   */
  async stop() {
    const exitedWithin = (ms) =>
      Promise.race([this.exited.then(() => true), new Promise((r) => setTimeout(() => r(false), ms))]);
    for (const ms of [1000, 10000]) {
      if (this.child.exitCode !== null || this.child.signalCode !== null) return;
      this.child.kill("SIGTERM");
      if (await exitedWithin(ms)) return;
    }
    this.child.kill("SIGKILL");
  }
}

async function main(argv) {
  const [program = process.env.CODEX_RUNNER_BIN ?? "codex-runner", ...args] = argv;
  const runner = new Runner(program, args);
  let timer;
  const timedOut = new Promise((resolve) => (timer = setTimeout(() => resolve("timeout"), TIMEOUT_MS)));
  const result = await Promise.race([orchestrate(runner), timedOut]);
  clearTimeout(timer);
  if (result === "timeout") {
    console.error(`orchestrator: timed out after ${TIMEOUT_MS / 1000} s`);
    await runner.stop();
    return 1;
  }
  return result;
}

async function orchestrate(runner) {
  const mcpServers = {
    docs: {
      url: process.env.MCP_URL ?? "http://127.0.0.1:9/mcp",
      http_headers: { Authorization: "Bearer example-token" },
    },
  };
  const prompts = {
    "js-1": "Name three prime numbers.",
    "js-2": "What is the capital of France?",
    "js-3": "Write a very long poem.",
  };
  const runs = {};
  for (const [id, prompt] of Object.entries(prompts)) {
    const params = { prompt, mcp_servers: mcpServers };
    // Only the fake codex reads this (it makes the turn hang until
    // cancelled); the real codex ignores it.
    if (id === "js-3") params.env = { FAKE_CODEX_SCENARIO: "hang" };
    runs[id] = runner.run(id, params);
  }

  // Cancel js-3 once codex is running it (unless it already ended).
  const doomed = runs["js-3"];
  const first = await Promise.race([doomed.started.then(() => "started"), doomed.done.then(() => "ended")]);
  if (first === "started") runner.cancel("js-3");

  const ends = Object.fromEntries(
    await Promise.all(Object.values(runs).map(async (run) => [run.id, await run.done])),
  );
  const exitCode = await runner.close();

  const problems = [...runner.problems];
  for (const [id, end] of Object.entries(ends)) {
    const message = runs[id].finalMessage();
    console.log(`${id}: ${end.status} ${end.code ?? ""} ${message || end.error || ""}`);
    if (id === "js-3") {
      if (end.code !== "cancelled") problems.push(`${id} was not cancelled: ${JSON.stringify(end)}`);
    } else if (end.status !== "ok" || !message || !end.thread_id) {
      problems.push(`${id} did not succeed: ${JSON.stringify(end)}`);
    }
  }
  if (exitCode !== 0) problems.push(`codex-runner exited with status ${exitCode}`);
  for (const problem of problems) console.error(`problem: ${problem}`);
  return problems.length ? 1 : 0;
}

process.exitCode = await main(process.argv.slice(2));
// A run still pending after a timeout keeps nothing alive here.
process.exit();
