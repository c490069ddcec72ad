#!/usr/bin/env python3
"""examples/cpp_agent.cpp (the README's C++ agent) as a server, driven by a
WebSocket client: the answer streams, the question waits for send_input,
"yes" applies, anything else does not, a bad start is refused, a cancel
ends the wait.

Usage: cpp_agent_test.py AGENTWS_EXAMPLE_CPP_AGENT
"""
import asyncio
import sys

from ws_peer import Client, Server, check


def texts(events):
    return "".join(event["text"] for event in events if event.get("kind") == "text_delta")


async def scenario(url):
    client = await Client.connect(url)
    agents = client.connected["payload"]["agents"]
    check(agents[0] == {"name": "assistant", "description": "Answers a prompt, asks before acting",
                        "accepts_input": True}, f"assistant offered first: {agents}")

    await client.send(command="start_run", run_id="r1", agent="assistant",
                      input={"prompt": "hello world"})
    await client.expect("run_started", run_id="r1")
    events = await client.agent_events("r1", until_kind="input_required")
    check(texts(events) == "You asked: hello world ", f"the answer: {events}")
    check(events[-1]["prompt"] == "Apply it?", f"the question: {events[-1]}")
    await client.send(command="send_input", run_id="r1", input="yes")
    await client.expect("input_received", run_id="r1")
    applied = await client.expect("run_event", run_id="r1", kind="text", text="Applied.")
    check(applied["step"] == len(events), f"the next step: {applied}")
    done = await client.expect("run_done", run_id="r1")
    check("ok" not in done, f"a run that went well: {done}")

    # The default agent, answered "no": nothing applied.
    await client.send(command="start_run", run_id="r2", input={"prompt": "x"})
    await client.expect("run_started", run_id="r2")
    await client.agent_events("r2", until_kind="input_required")
    await client.send(command="send_input", run_id="r2", input="no")
    await client.expect("input_received", run_id="r2")
    done = await client.expect("run_done", run_id="r2")
    check("ok" not in done, f"a run that went well: {done}")

    # validate(): a bad start is an error, and no run.
    for bad in ("hello", {"prompt": 3}, None):
        await client.send(command="start_run", run_id="r3", input=bad)
        await client.expect("error", code="invalid_input", run_id="r3")

    # A cancel while the agent waits in next_input().
    await client.send(command="start_run", run_id="r4", input={"prompt": "x"})
    await client.expect("run_started", run_id="r4")
    await client.agent_events("r4", until_kind="input_required")
    await client.send(command="cancel_run", run_id="r4")
    await client.expect("run_cancelled", run_id="r4", reason="client")
    await client.close()


def main():
    server = Server([sys.argv[1], "0"])
    try:
        asyncio.run(scenario(server.url()))
    except BaseException:
        print(server.text())
        raise
    finally:
        status = server.stop()
    check(status == 0, f"exit status {status} after SIGTERM:\n{server.text()}")
    server.remove_log()
    print("ok")


if __name__ == "__main__":
    main()
