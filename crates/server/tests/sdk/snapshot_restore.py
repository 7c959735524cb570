"""A browser state saved and restored through the official AGI Python SDK.
Usage: snapshot_restore.py BASE KEY SITE_BASE"""
import sys
import time

from agi import AGIClient

base, key, site = sys.argv[1:4]
client = AGIClient(api_key=key, base_url=base, max_retries=1)


def title_when(session_id, prefix):
    deadline = time.time() + 15
    while time.time() < deadline:
        title = client.sessions.screenshot(session_id).title
        if title.startswith(prefix):
            return title
        time.sleep(0.05)
    raise SystemExit(f"no title starting with {prefix!r}")


s = client.sessions.create(agent_name="agi-0")
client.sessions.navigate(s.session_id, f"{site}/account/login")
title_when(s.session_id, "Logged in")
client.sessions.navigate(s.session_id, f"{site}/account")
title_when(s.session_id, "State:")

deleted = client.sessions.delete(s.session_id, save_snapshot_mode="filesystem")
assert deleted.deleted and deleted.success, deleted

restored = client.sessions.create(agent_name="agi-0", restore_from_environment_id=s.environment_id)
assert restored.status == "ready", restored
assert restored.environment_id == s.environment_id, restored
state = title_when(restored.session_id, "State:")
for part in ["remember=yes", "sid=abc123", "ls=dark", "ss=hello", "idb=alice"]:
    assert part in state, state
client.sessions.delete(restored.session_id)
print("sdk snapshot ok")
