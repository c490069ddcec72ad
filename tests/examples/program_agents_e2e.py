#!/usr/bin/env python3
"""ws-server --config examples/agents.conf, end to end: a WebSocket client
runs the Python agent through its human-in-the-loop exchange (json framing)
and the shell agent (text framing), and checks the events, the exit status
mapping, and that cancelled runs leave no process behind.

Usage: program_agents_e2e.py WS_SERVER REPOSITORY_ROOT
"""
import asyncio
import os
import sys
import time

from ws_peer import Client, Server, check, fail

WS_SERVER, ROOT = sys.argv[1], sys.argv[2]


def processes():
    """(pid, ppid, pgrp) of every process now."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        found.append((int(entry), int(fields[1]), int(fields[2])))
    return found


def children(server_pid):
    return [pid for pid, ppid, _ in processes() if ppid == server_pid]


async def until_group_gone(group, timeout=5):
    deadline = time.monotonic() + timeout
    while any(pgrp == group for _, _, pgrp in processes()):
        if time.monotonic() > deadline:
            fail(f"process group {group} still alive {timeout} s after the cancel")
        await asyncio.sleep(0.05)


def texts(events):
    return "".join(event["text"] for event in events if event.get("kind") == "text_delta")


async def human_in_the_loop(client):
    agents = client.connected["payload"]["agents"]
    check(agents[0] == {"name": "assistant", "description": "Answers a prompt, asks before sending",
                        "accepts_input": True}, f"the assistant, the default, first: {agents}")
    check({"name": "count", "description": "Counts to its input, a line every 0.2 s",
           "accepts_input": False} in agents, f"count offered: {agents}")

    # The default agent: the answer word by word, a question, "yes".
    await client.send(command="start_run", run_id="r1", input="hello world",
                      params={"delay_ms": 0})
    await client.expect("run_started", run_id="r1")
    events = await client.agent_events("r1", until_kind="input_required")
    check(texts(events) == "You asked: hello world ", f"the answer: {events}")
    check(events[-1]["options"] == ["yes", "no"], f"the question: {events[-1]}")
    await client.send(command="send_input", run_id="r1", input="yes")
    await client.expect("input_received", run_id="r1")
    await client.expect("run_event", run_id="r1", kind="text", text="Sent.")
    done = await client.expect("run_done", run_id="r1")
    check("ok" not in done, f"exit 0 is a run that went well: {done}")

    # A bad answer is asked again; {"approve": false} discards.
    await client.send(command="start_run", run_id="r2", agent="assistant",
                      input={"prompt": "x"}, params={"delay_ms": 0})
    await client.expect("run_started", run_id="r2")
    await client.agent_events("r2", until_kind="input_required")
    await client.send(command="send_input", run_id="r2", input="maybe")
    await client.expect("input_received", run_id="r2")
    again = await client.expect("run_event", run_id="r2", kind="input_required")
    check("error" in again, f"asked again with the reason: {again}")
    await client.send(command="send_input", run_id="r2", input={"approve": False})
    await client.expect("input_received", run_id="r2")
    await client.expect("run_event", run_id="r2", kind="text", text="Discarded.")
    await client.expect("run_done", run_id="r2")

    # No prompt: the agent says why and exits 1.
    await client.send(command="start_run", run_id="r3", agent="assistant", input=42)
    await client.expect("run_started", run_id="r3")
    await client.expect("run_event", run_id="r3", kind="error")
    await client.expect("run_done", run_id="r3", ok=False, exit_code=1)


async def cancel_while_waiting(client, server_pid):
    await client.send(command="start_run", run_id="r4", agent="assistant", input="x",
                      params={"delay_ms": 0})
    await client.expect("run_started", run_id="r4")
    await client.agent_events("r4", until_kind="input_required")
    (child,) = children(server_pid)
    await client.send(command="cancel_run", run_id="r4")
    await client.expect("run_cancelled", run_id="r4", reason="client")
    await until_group_gone(child)

    # Mid-stream, a word a minute.
    await client.send(command="start_run", run_id="r5", agent="assistant", input="a b c",
                      params={"delay_ms": 60_000})
    await client.expect("run_started", run_id="r5")
    await client.expect("run_event", run_id="r5", kind="text_delta")
    (child,) = children(server_pid)
    await client.send(command="cancel_run", run_id="r5")
    await client.expect("run_cancelled", run_id="r5", reason="client")
    await until_group_gone(child)


async def text_framing(client, server_pid):
    for run_id, value in (("c1", 3), ("c2", "3")):
        await client.send(command="start_run", run_id=run_id, agent="count", input=value)
        await client.expect("run_started", run_id=run_id)
        for step, line in enumerate(["1", "2", "3"]):
            event = await client.expect("run_event", run_id=run_id, step=step, text=line)
            check(set(event) == {"run_id", "step", "seq", "text"}, f"text only: {event}")
        done = await client.expect("run_done", run_id=run_id)
        check("ok" not in done, f"exit 0: {done}")

    # Other values as compact JSON: not a count, exit 2, stderr quoted.
    await client.send(command="start_run", run_id="c3", agent="count", input={"n": 1})
    await client.expect("run_started", run_id="c3")
    done = await client.expect("run_done", run_id="c3", ok=False, exit_code=2)
    check('not a count: {"n":1}' in done["error"], f"the input as one compact line: {done}")
    await client.send(command="start_run", run_id="c3", agent="count", input="1\n2")
    await client.expect("error", code="invalid_input", run_id="c3")

    # It takes no input; a cancel ends the shell and its sleep.
    await client.send(command="start_run", run_id="c4", agent="count", input=1000)
    await client.expect("run_started", run_id="c4")
    await client.expect("run_event", run_id="c4", text="1")
    await client.send(command="send_input", run_id="c4", input="more")
    await client.expect("error", code="input_not_accepted", run_id="c4")
    (child,) = children(server_pid)
    await client.send(command="cancel_run", run_id="c4")
    while (event := await client.event())["event_type"] == "run_event":
        pass  # lines printed before the cancel
    check(event["event_type"] == "run_cancelled" and event["payload"]["reason"] == "client",
          f"run_cancelled expected, got {event}")
    await until_group_gone(child)


async def scenario(server):
    client = await Client.connect(server.url())
    await human_in_the_loop(client)
    await cancel_while_waiting(client, server.proc.pid)
    await text_framing(client, server.proc.pid)
    await client.close()
    check(children(server.proc.pid) == [], "no child left")


async def from_the_command_line(server):
    # The README's first line: --agent and --default-agent, no config file.
    client = await Client.connect(server.url())
    agents = client.connected["payload"]["agents"]
    check(agents[0]["name"] == "assistant" and agents[0]["accepts_input"],
          f"the assistant, the default, first: {agents}")
    await client.send(command="start_run", run_id="r1", input={"prompt": "hi"},
                      params={"delay_ms": 0})
    await client.expect("run_started", run_id="r1")
    events = await client.agent_events("r1", until_kind="input_required")
    check(texts(events) == "You asked: hi ", f"the answer: {events}")
    await client.send(command="send_input", run_id="r1", input="no")
    await client.expect("input_received", run_id="r1")
    await client.expect("run_event", run_id="r1", kind="text", text="Discarded.")
    await client.expect("run_done", run_id="r1")
    await client.close()


def serve(argv, scenario_of):
    server = Server([WS_SERVER, *argv, "--port", "0", "--threads", "1", "--log-level", "info"],
                    cwd=ROOT)
    try:
        asyncio.run(scenario_of(server))
    except BaseException:
        print(server.text())
        raise
    finally:
        status = server.stop()
    check(status == 0, f"exit status {status} after SIGTERM:\n{server.text()}")
    server.remove_log()


def main():
    serve(["--config", "examples/agents.conf"], scenario)
    serve(["--agent", "assistant=examples/python_agent.py", "--default-agent", "assistant"],
          from_the_command_line)
    print("ok")


if __name__ == "__main__":
    main()
