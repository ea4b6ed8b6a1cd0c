#!/usr/bin/env python3
"""Drive codex-runner from Python, with the standard library only.

    python3 examples/python/orchestrator.py target/debug/codex-runner \\
        --codex-bin target/debug/fake-codex --codex-home "$(mktemp -d)"

The first argument is the daemon (default: $CODEX_RUNNER_BIN, else
`codex-runner` on PATH); the others are its flags. Starts three turns at once,
each with the MCP server at $MCP_URL (default http://127.0.0.1:9/mcp, which the
fake codex never connects to; with the real codex, point it at a live server),
cancels the third once it has started, prints every result, and exits 1 if
anything is off.

The protocol is in docs/protocol.md; its JSON Schemas are in docs/schema/.
"""

import asyncio
import json
import os
import sys

TIMEOUT_SECS = float(os.environ.get("ORCHESTRATOR_TIMEOUT_SECS", "300"))


class Run:
    """One run: its events as they arrive, and a future for its last line."""

    def __init__(self, run_id, line_number):
        self.id = run_id
        self.line = line_number  # of its request on stdin
        self.events = []
        self.started = asyncio.Event()  # set on thread.started
        self.done = asyncio.get_running_loop().create_future()

    def on_line(self, line):
        if line["type"] == "event":
            event = line["event"]
            self.events.append(event)
            print(f"{self.id}: {event.get('type')}")
            if event.get("type") == "thread.started":
                self.started.set()
        elif not self.done.done():
            # `end`, or a `rejected` line or a failure of the daemon.
            self.done.set_result(line)

    def final_message(self):
        texts = [
            e["item"]["text"]
            for e in self.events
            if e.get("type") == "item.completed"
            and e.get("item", {}).get("type") == "agent_message"
        ]
        return texts[-1] if texts else ""


class Runner:
    """One codex-runner child. A reader task routes stdout lines by run id."""

    def __init__(self, proc):
        self.proc = proc
        self.runs = {}  # id -> Run, until its end
        self.lines_sent = 0
        self.run_lines = {}  # stdin line number -> run id: `rejected` names the line
        self.problems = []
        self.stdout_task = asyncio.create_task(self._read_stdout())
        self.stderr_task = asyncio.create_task(self._read_stderr())

    @classmethod
    async def start(cls, argv):
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            # An event line can be as long as the daemon's --max-event-bytes
            # (32 MiB); asyncio's default line limit is 64 KiB.
            limit=64 * 1024 * 1024,
        )
        return cls(proc)

    async def _send(self, request):
        self.lines_sent += 1
        try:
            self.proc.stdin.write(json.dumps(request).encode() + b"\n")
            await self.proc.stdin.drain()
        except (BrokenPipeError, ConnectionResetError) as e:
            # The daemon is gone: the stdout reader fails every pending run
            # once it has its exit status (and stderr its `fatal` line).
            self.problems.append(f"cannot write to codex-runner: {e}")

    async def run(self, run_id, params):
        if run_id in self.runs:
            raise ValueError(f"run id {run_id!r} has not ended yet")
        run = self.runs[run_id] = Run(run_id, self.lines_sent + 1)
        self.run_lines[run.line] = run_id
        await self._send({"type": "run", "id": run_id, "params": params})
        return run

    def _ended(self, run, line):
        del self.runs[run.id]
        self.run_lines.pop(run.line, None)
        run.on_line(line)

    async def cancel(self, run_id):
        await self._send({"type": "cancel", "id": run_id})

    async def _read_stdout(self):
        why = None
        try:
            async for raw in self.proc.stdout:
                self._route(raw)
        except Exception as e:  # a line over `limit`, say: we can no longer follow
            why = f"cannot read codex-runner's stdout: {e!r}"
            self.problems.append(why)
            self.proc.terminate()
        finally:
            # Whatever happened, no run is left waiting.
            code = await self.proc.wait()
            for run in self.runs.values():
                run.on_line({"type": "failed", "error": why or f"codex-runner exited ({code})"})
            self.runs.clear()
            self.run_lines.clear()

    def _route(self, raw):
        try:
            line = json.loads(raw)
            kind = line["type"]
        # RecursionError: codex may print JSON nested deeper than Python's
        # stack allows (the daemon forwards any JSON object).
        except (ValueError, KeyError, TypeError, RecursionError):
            self.problems.append(f"unparseable output line: {raw[:200]!r}")
            return
        if kind in ("event", "end"):
            run = self.runs.get(line.get("id"))
            if run is None:
                return
            if kind == "end":
                self._ended(run, line)
            else:
                run.on_line(line)
        elif kind == "rejected":
            # No `id` here, by design: match the request by its line number.
            self.problems.append(f"rejected: {line}")
            run = self.runs.get(self.run_lines.get(line.get("line")))
            if run is not None:
                self._ended(run, line)
        # Any other type was added by a newer daemon: ignore it.

    async def _read_stderr(self):
        async for raw in self.proc.stderr:
            try:
                line = json.loads(raw)
            except ValueError:
                line = None
            if isinstance(line, dict) and line.get("type") == "diag":
                text = f"  {line['id']} {line['level']}: {line['message']}\n"
            elif isinstance(line, dict) and line.get("type") == "fatal":
                self.problems.append(f"fatal: {line['message']}")
                continue
            else:  # a log line
                text = raw.decode(errors="replace")
            # Off the event loop: a stderr nobody reads would block it.
            await asyncio.to_thread(sys.stderr.write, text)

    async def close(self):
        """End of input: the daemon finishes every run, then exits."""
        self.proc.stdin.close()
        await self.stdout_task
        await self.stderr_task
        return await self.proc.wait()

    async def stop(self):
        """Giving up: SIGTERM stops every turn (a second one at once, without
        the grace period) and the daemon cleans up; SIGKILL would leave the
        turns' commands running and their homes on disk."""
        for wait in (1, 10):
            if self.proc.returncode is not None:
                break
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), wait)
            except asyncio.TimeoutError:
                pass
        else:
            self.proc.kill()
        await self.proc.wait()


async def main(argv):
    program = argv[1] if len(argv) > 1 else os.environ.get("CODEX_RUNNER_BIN", "codex-runner")
    runner = await Runner.start([program, *argv[2:]])
    try:
        return await asyncio.wait_for(orchestrate(runner), TIMEOUT_SECS)
    except asyncio.TimeoutError:
        print(f"orchestrator: timed out after {TIMEOUT_SECS} s", file=sys.stderr)
        await runner.stop()
        return 1


async def orchestrate(runner):
    mcp_servers = {
        "docs": {
            "url": os.environ.get("MCP_URL", "http://127.0.0.1:9/mcp"),
            "http_headers": {"Authorization": "Bearer example-token"},
        }
    }
    prompts = {
        "py-1": "Name three prime numbers.",
        "py-2": "What is the capital of France?",
        "py-3": "Write a very long poem.",
    }
    runs = {}
    for run_id, prompt in prompts.items():
        params = {"prompt": prompt, "mcp_servers": mcp_servers}
        if run_id == "py-3":
            # Only the fake codex reads this (it makes the turn hang until
            # cancelled); the real codex ignores it.
            params["env"] = {"FAKE_CODEX_SCENARIO": "hang"}
        runs[run_id] = await runner.run(run_id, params)

    # Cancel py-3 once codex is running it (unless it already ended).
    doomed = runs["py-3"]
    started = asyncio.create_task(doomed.started.wait())
    await asyncio.wait([started, doomed.done], return_when=asyncio.FIRST_COMPLETED)
    started.cancel()
    if not doomed.done.done():
        await runner.cancel("py-3")

    ends = dict(zip(runs, await asyncio.gather(*(run.done for run in runs.values()))))
    exit_code = await runner.close()

    problems = list(runner.problems)
    for run_id, end in ends.items():
        message = runs[run_id].final_message()
        print(f"{run_id}: {end.get('status')} {end.get('code') or ''} {message or end.get('error', '')}")
        if run_id == "py-3":
            if end.get("code") != "cancelled":
                problems.append(f"{run_id} was not cancelled: {end}")
        elif end.get("status") != "ok" or not message or not end.get("thread_id"):
            problems.append(f"{run_id} did not succeed: {end}")
    if exit_code != 0:
        problems.append(f"codex-runner exited with status {exit_code}")
    for problem in problems:
        print(f"problem: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv)))
