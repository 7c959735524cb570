"""Runs agent tasks through the official AGI Python SDK. Usage: run_task.py BASE KEY SITE_BASE"""
import sys

from agi import AGIClient
from agi.exceptions import AgentExecutionError

base, key, site = sys.argv[1:4]
client = AGIClient(api_key=key, base_url=base, max_retries=1)

with client.session("agi-0") as s:
    result = s.run_task("what is the price of Widget Pro", start_url=f"{site}/products", timeout=120, poll_interval=0.2)
    assert result.data == {"content": "$24.99"}, result.data
    assert result.metadata.steps >= 2, result.metadata
    msgs = client.sessions.get_messages(s.session_id).messages
    assert [m.type for m in msgs][0] == "USER", msgs
    assert all(m.type != "LOG" for m in msgs), "sanitized by default"
    assert client.sessions.get_status(s.session_id).status == "finished"

    try:
        s.run_task("make me a sandwich", timeout=60, poll_interval=0.2)
        raise SystemExit("a task the rule planner cannot understand must fail")
    except AgentExecutionError as e:
        assert "make me a sandwich" in str(e), e

    try:
        client.sessions.pause(s.session_id)
        raise SystemExit("pause with no task running must be refused")
    except Exception as e:  # the SDK maps 409 to its own error type
        assert "no task" in str(e).lower(), e
print("sdk run_task ok")
