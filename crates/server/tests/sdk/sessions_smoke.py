"""Drives agentbox with the official AGI Python SDK. Usage: sessions_smoke.py BASE KEY PAGE_URL"""
import base64
import sys

from agi import AGIClient
from agi.exceptions import AuthenticationError, NotFoundError

base, key, page = sys.argv[1:4]
client = AGIClient(api_key=key, base_url=base, max_retries=1)

assert client.sessions.list_models().models[:2] == ["agi-0", "agi-0-fast"]

s = client.sessions.create(agent_name="agi-0", max_steps=25)
assert s.status == "ready", s
assert s.vnc_url and s.environment_id and s.agent_session_type == "managed-cdp"
assert [x.session_id for x in client.sessions.list()] == [s.session_id]
assert client.sessions.get(s.session_id).agent_name == "agi-0"
assert client.sessions.get_status(s.session_id).status == "ready"

nav = client.sessions.navigate(s.session_id, page)
assert nav.current_url == page, nav
shot = client.sessions.screenshot(s.session_id)
assert shot.title == "Fixture Home", shot.title
assert base64.b64decode(shot.screenshot.split(",", 1)[1])[:3] == b"\xff\xd8\xff"

deleted = client.sessions.delete(s.session_id)
assert deleted.deleted and deleted.success
try:
    client.sessions.get(s.session_id)
    raise SystemExit("a deleted session must be 404")
except NotFoundError:
    pass
assert client.sessions.delete(s.session_id).deleted is False
assert client.sessions.delete_all().deleted is False

try:
    AGIClient(api_key="ab_wrong", base_url=base, max_retries=1).sessions.list()
    raise SystemExit("a wrong key must be 401")
except AuthenticationError:
    pass

with client.session("agi-0-fast") as ctx:
    assert client.sessions.get(ctx.session_id).agent_name == "agi-0-fast"
assert client.sessions.list() == []
print("sdk smoke ok")
