"""Security of the console, against the real process over HTTPS: sign-in, sessions, CSRF, roles, the
reverse proxy's identity header, and the who-did-what log."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from console_helpers import ConsoleProc, Database, Lane, alarm_decision, session
from publish_helpers import Broker

OPERATOR, SUPERVISOR = "correct horse 1", "battery staple 2"


@pytest.fixture(scope="module")
def console(module_broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleProc]:
    workdir = tmp_path_factory.mktemp("console")
    db = Database("sqlite", f"sqlite:///{workdir}/console.sqlite3", "console_")
    site = f"a{uuid.uuid4().hex[:6]}"
    c = ConsoleProc(workdir, db, module_broker.port, (f"xray/{site}/+/#",),
                    extra="auth:\n  proxy_header: X-Remote-User\n  trusted_proxies: [127.0.0.1]\n")
    c.add_user("olga", OPERATOR, "operator")
    c.add_user("sam", SUPERVISOR, "supervisor")
    c.add_user("proxied", "unused-password-3", "operator")
    c.start()
    c.site = site  # type: ignore[attr-defined]
    yield c
    c.stop()


@pytest.fixture(scope="module")
def alarm(console: ConsoleProc, module_broker: Broker) -> str:
    lane = Lane(module_broker.port, console.site, "lane1", f"xray/{console.site}/lane1")  # type: ignore[attr-defined]
    record_id = str(lane.publish_decision(alarm_decision(f"bag-{uuid.uuid4().hex[:6]}", "lane1"))["record_id"])
    lane.close()
    client = session(console, "olga", OPERATOR)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if client.get(f"/api/items/{record_id}").status_code == 200:  # type: ignore[attr-defined]
            return record_id
        time.sleep(0.05)
    raise AssertionError("the alarm was not stored")


def _anonymous(console: ConsoleProc) -> httpx.Client:
    return httpx.Client(base_url=console.url, verify=False, timeout=10)


def test_signed_out_requests_are_refused(console: ConsoleProc) -> None:
    c = _anonymous(console)
    assert c.get("/api/items").status_code == 401
    assert c.get("/events").status_code == 401
    page = c.get("/")
    assert page.status_code == 303 and page.headers["location"] == "/login"
    assert "default-src 'self'" in c.get("/login").headers["content-security-policy"]


def test_wrong_password_is_refused_and_logged(console: ConsoleProc) -> None:
    c = _anonymous(console)
    token = re.search(r'name="csrf-token" content="([^"]+)"', c.get("/login").text).group(1)  # type: ignore[union-attr]
    answer = c.post("/login", json={"login": "olga", "password": "wrong password"}, headers={"X-CSRF-Token": token})
    assert answer.status_code == 401
    assert c.get("/api/items").status_code == 401
    audit = session(console, "sam", SUPERVISOR).get("/api/audit").json()["audit"]  # type: ignore[attr-defined]
    assert any(a["action"] == "login_failed" and a["login"] == "olga" for a in audit)


def test_repeated_wrong_passwords_lock_the_login_for_a_while(console: ConsoleProc) -> None:
    console.add_user("target", "right-password-1")
    c = _anonymous(console)
    token = re.search(r'name="csrf-token" content="([^"]+)"', c.get("/login").text).group(1)  # type: ignore[union-attr]
    codes = [c.post("/login", json={"login": "target", "password": f"guess-{i}"}, headers={"X-CSRF-Token": token}
                    ).status_code for i in range(6)]
    assert codes == [401] * 5 + [429]
    right = c.post("/login", json={"login": "target", "password": "right-password-1"}, headers={"X-CSRF-Token": token})
    assert right.status_code == 429, "the right password does not open a locked login either"
    assert session(console, "olga", OPERATOR) is not None, "other logins are not locked"


def test_a_post_without_the_csrf_token_is_refused(console: ConsoleProc, alarm: str) -> None:
    client: Any = session(console, "olga", OPERATOR)
    token = client.headers.pop("X-CSRF-Token")
    body = {"record_id": alarm, "verdict": "cleared"}
    assert client.post("/api/verdicts", json=body).status_code == 403
    assert client.post("/api/verdicts", json=body, headers={"X-CSRF-Token": "forged"}).status_code == 403
    cross = client.post("/api/verdicts", json=body,
                        headers={"X-CSRF-Token": token, "Origin": "https://evil.example"})
    assert cross.status_code == 403 and "cross-origin" in cross.json()["error"]
    # behind the site's reverse proxy (a trusted address) the browser's origin is the proxy's host
    proxied = client.post("/api/verdicts", json={"record_id": "none", "verdict": "cleared"},
                          headers={"X-CSRF-Token": token, "Origin": "https://console.site.example",
                                   "X-Forwarded-Host": "console.site.example"})
    assert proxied.status_code == 409, proxied.text  # past the guard: refused only as an unknown item
    # a login form posted from elsewhere (no token) is refused too: no login CSRF
    assert _anonymous(console).post("/login", json={"login": "olga", "password": OPERATOR}).status_code == 403
    assert client.get(f"/api/items/{alarm}").json()["verdict"] is None, "a refused request changed nothing"
    ok = client.post("/api/verdicts", json=body, headers={"X-CSRF-Token": token})
    assert ok.status_code == 201, ok.text
    # a second verdict on the same item (another operator, a double click) is refused: one verdict per item
    again = session(console, "sam", SUPERVISOR).post("/api/verdicts", json=body)  # type: ignore[attr-defined]
    assert again.status_code == 409


def test_operators_cannot_do_supervisor_actions(console: ConsoleProc, alarm: str) -> None:
    olga: Any = session(console, "olga", OPERATOR)
    sam: Any = session(console, "sam", SUPERVISOR)
    if olga.get(f"/api/items/{alarm}").json()["verdict"] is None:
        assert olga.post("/api/verdicts", json={"record_id": alarm, "verdict": "cleared"}).status_code == 201
    assert olga.post(f"/api/items/{alarm}/reopen").status_code == 403
    assert olga.post("/api/users", json={"login": "mallory", "password": "12345678", "role": "supervisor"}
                     ).status_code == 403
    assert olga.post("/api/users/olga", json={"role": "supervisor"}).status_code == 403
    assert olga.get("/api/audit").status_code == 403
    assert olga.get("/users").status_code == 403
    assert sam.get("/users").status_code == 200 and "Who did what" in sam.get("/users").text
    # the supervisor may: re-open puts the item back in the queue; then a new verdict is possible
    reopened = sam.post(f"/api/items/{alarm}/reopen")
    assert reopened.status_code == 200 and reopened.json()["item"]["verdict"] is None
    again = olga.post("/api/verdicts", json={"record_id": alarm, "verdict": "sent_to_search"})
    assert again.status_code == 201
    assert sam.post("/api/users", json={"login": "nina", "password": "nina-pass-1", "role": "operator"}
                    ).status_code == 201
    assert sam.post("/api/users", json={"login": "eve", "password": "eve-pass-12", "role": "admin"}
                    ).status_code == 400
    short = sam.post("/api/users", json={"login": "bob", "password": "short", "role": "operator"})
    assert short.status_code == 400 and "at least 8 characters" in short.json()["error"]
    assert session(console, "nina", "nina-pass-1") is not None
    assert sam.post("/api/users/nina", json={"disabled": True}).status_code == 200
    assert _anonymous(console).get("/").status_code == 303
    # who did what
    audit = sam.get("/api/audit").json()["audit"]
    done = [(a["login"], a["action"], a["target"]) for a in reversed(audit)]
    assert ("olga", "refused", f"/api/items/{alarm}/reopen") in done
    assert ("sam", "reopen", alarm) in done
    assert ("olga", "verdict", alarm) in done
    assert ("sam", "user_add", "nina") in done and ("sam", "user_disable", "nina") in done


def test_passwords_are_salted_argon2_hashes(console: ConsoleProc) -> None:
    from sqlalchemy import select

    from console.config import DatabaseConfig
    from console.db import Tables, open_engine

    engine = open_engine(DatabaseConfig(url=console.db.url, table_prefix=console.db.prefix))
    users = Tables(console.db.prefix).users
    with engine.connect() as conn:
        hashes = dict(conn.execute(select(users.c.login, users.c.password_hash)).all())
    engine.dispose()
    assert hashes["olga"].startswith("$argon2id$") and OPERATOR not in hashes["olga"]
    console.add_user("twin", OPERATOR)  # same password, other salt
    with open_engine(DatabaseConfig(url=console.db.url, table_prefix=console.db.prefix)).connect() as conn:
        twin = conn.execute(select(users.c.password_hash).where(users.c.login == "twin")).scalar_one()
    assert twin != hashes["olga"]


def test_reverse_proxy_identity_header(console: ConsoleProc) -> None:
    c = _anonymous(console)
    page = c.get("/", headers={"X-Remote-User": "proxied"})
    assert page.status_code == 200 and "proxied (operator)" in page.text
    token = re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    assert c.get("/api/items", headers={"X-Remote-User": "proxied"}).status_code == 200
    # an unknown login in the header signs nobody in; the header still needs the CSRF token to change things
    assert _anonymous(console).get("/api/items", headers={"X-Remote-User": "nobody"}).status_code == 401
    assert c.post("/api/verdicts", json={}, headers={"X-Remote-User": "proxied"}).status_code == 403
    assert c.post("/api/verdicts", json={}, headers={"X-Remote-User": "proxied", "X-CSRF-Token": token}
                  ).status_code == 409


def test_add_user_cli(console: ConsoleProc) -> None:
    added = console.cli("add-user", "carl", "--role", "supervisor", "--password-stdin", stdin="carl-pass-1\n")
    assert added.returncode == 0 and "added supervisor carl" in added.stdout, added.stderr
    assert session(console, "carl", "carl-pass-1") is not None
    dup = console.cli("add-user", "olga", "--password-stdin", stdin="long enough 1\n")
    assert dup.returncode == 1 and "exists already" in dup.stderr


def test_unreadable_messages_are_kept_not_dropped(console: ConsoleProc, module_broker: Broker) -> None:
    site = console.site  # type: ignore[attr-defined]
    lane = Lane(module_broker.port, site, "lane9", f"xray/{site}/lane9")
    lane.publish_raw("alarms", b"{not json")
    lane.close()
    from sqlalchemy import select

    from console.config import DatabaseConfig
    from console.db import Tables, open_engine

    engine = open_engine(DatabaseConfig(url=console.db.url, table_prefix=console.db.prefix))
    rejects = Tables(console.db.prefix).rejects
    deadline = time.monotonic() + 5
    rows: list[Any] = []
    while time.monotonic() < deadline and not rows:
        with engine.connect() as conn:
            rows = list(conn.execute(select(rejects).where(rejects.c.topic == f"xray/{site}/lane9/alarms")))
        time.sleep(0.05)
    engine.dispose()
    assert rows and rows[0].payload == b"{not json" and "bad JSON" in rows[0].error
    assert json.loads(httpx.get(f"{console.url}/healthz", verify=False).text)["ok"] is True


def test_a_signed_out_session_cookie_is_refused_afterwards(console: ConsoleProc) -> None:
    """Sign-out ends the session on the console, not only in this browser: a copy of the cookie (another tab,
    a shared machine's cookie store, a captured header) is refused after it (it was accepted until the cookie's
    12 h expiry)."""
    client: Any = session(console, "olga", OPERATOR)
    cookie = client.cookies.get("edge_console")
    copy = _anonymous(console)
    copy.cookies.set("edge_console", cookie)
    assert copy.get("/api/items").status_code == 200
    assert client.post("/logout").status_code == 200
    assert copy.get("/api/items").status_code == 401
    assert copy.get("/events").status_code == 401
    assert session(console, "olga", OPERATOR).get("/api/items").status_code == 200  # a new sign-in works


def test_a_live_stream_ends_for_a_disabled_user_while_alarms_keep_coming(console: ConsoleProc,
                                                                         module_broker: Broker) -> None:
    """The stream re-checks its user by the clock: on busy lanes it is never quiet for 15 s, and the old check
    (only on a quiet stream) kept streaming every alarm to a disabled operator for as long as alarms came."""
    import threading

    console.add_user("dora", "dora-pass-1")
    dora: Any = session(console, "dora", "dora-pass-1")
    site = console.site  # type: ignore[attr-defined]
    lane = Lane(module_broker.port, site, "lane7", f"xray/{site}/lane7")
    ended = threading.Event()
    alarms: list[bytes] = []

    def read() -> None:
        with dora.stream("GET", "/events", timeout=httpx.Timeout(10, read=60)) as stream:
            for chunk in stream.iter_bytes():
                alarms.append(chunk)
        ended.set()

    threading.Thread(target=read, daemon=True).start()
    time.sleep(0.5)
    sam: Any = session(console, "sam", SUPERVISOR)
    assert sam.post("/api/users/dora", json={"disabled": True}).status_code == 200
    deadline = time.monotonic() + 25
    try:
        while time.monotonic() < deadline and not ended.is_set():  # an alarm every 0.4 s: never quiet
            lane.publish_decision(alarm_decision(f"bag-{uuid.uuid4().hex[:6]}", "lane7"))
            ended.wait(0.4)
    finally:
        lane.close()
    assert any(b"event: alarm" in a for a in alarms), "the stream carried the alarms before"
    assert ended.is_set(), "the disabled user's live stream still runs after 25 s of alarms"


def test_a_box_verdict_the_console_does_not_know_goes_to_the_queue(console: ConsoleProc, module_broker: Broker) -> None:
    """Fail-safe: only a CLEAR stays out of the operators' queue. A verdict the console does not know (a newer
    box's, "ALARM" in capitals) was stored as not an alarm: no operator ever saw the parcel."""
    site = console.site  # type: ignore[attr-defined]
    lane = Lane(module_broker.port, site, "lane8", f"xray/{site}/lane8")
    ids = {v: f"{site}-lane8-item-{uuid.uuid4().hex[:8]}" for v in ("ALARM", "suspect", "clear")}
    for verdict, rid in ids.items():
        body = {"schema": "item-2", "record_id": rid, "site_id": site, "scanner_id": "lane8",
                "item_id": f"bag-{verdict}", "verdict": verdict, "objects": [], "reasons": []}
        lane.publish_raw("items", json.dumps(body).encode())
    lane.close()
    client: Any = session(console, "olga", OPERATOR)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and client.get(f"/api/items/{ids['clear']}").status_code != 200:
        time.sleep(0.05)
    queued = {i["record_id"] for i in client.get("/api/items", params={"lane": f"xray/{site}/lane8"}).json()["items"]}
    assert queued == {ids["ALARM"], ids["suspect"]}


def test_bad_query_parameters_are_400_not_500(console: ConsoleProc) -> None:
    sam: Any = session(console, "sam", SUPERVISOR)
    assert sam.get("/api/items", params={"limit": "abc"}).status_code == 400
    sam = session(console, "sam", SUPERVISOR)
    assert sam.get("/api/audit", params={"limit": "x"}).status_code == 400
    sam = session(console, "sam", SUPERVISOR)
    assert sam.get("/api/audit", params={"limit": "-1"}).status_code == 200
    assert sam.get("/images/99999999999999999999999").status_code == 404
    assert sam.get("/api/items").status_code == 200


def test_malformed_alarms_reach_the_queue_and_do_not_break_it(console: ConsoleProc, module_broker: Broker) -> None:
    """MQTT payloads are untrusted. A NaN score in one object made /api/items answer 500 for every operator while
    that item was in the queue; a wrong type (objects: 5, a score "high", a reason that is a mapping) made the
    ALARM a reject that no operator saw. Each is now queued with what can be read of it."""
    site = console.site  # type: ignore[attr-defined]
    lane = Lane(module_broker.port, site, "lane6", f"xray/{site}/lane6")
    bodies = {
        "nan": '"objects": [{"object_id": 1, "anomaly_score": NaN, "anomalous": true}], "item_score": Infinity',
        "objects-int": '"objects": 5',
        "score-str": '"objects": [{"object_id": 1, "anomaly_score": "high", "anomalous": true, "reasons": "x"}]',
        "reason-map": '"reason": {"a": 1}, "image": {"topic": 5}',
    }
    ids = {}
    for name, extra in bodies.items():
        ids[name] = f"{site}-lane6-{name}-{uuid.uuid4().hex[:6]}"
        lane.publish_raw("items", (f'{{"record_id": "{ids[name]}", "site_id": "{site}", "scanner_id": "lane6", '
                                   f'"item_id": "bag-{name}", "verdict": "alarm", {extra}}}').encode())
    lane.publish_raw("health", b'{"site_id": "x", "status": "online", "links": [{"name": NaN, "state": 1}]}')
    lane.close()
    client: Any = session(console, "olga", OPERATOR)
    deadline = time.monotonic() + 5
    queued: set[str] = set()
    while time.monotonic() < deadline and not set(ids.values()) <= queued:
        answer = client.get("/api/items", params={"lane": f"xray/{site}/lane6"})
        assert answer.status_code == 200, answer.text
        queued = {i["record_id"] for i in answer.json()["items"]}
        time.sleep(0.1)
    assert queued == set(ids.values())
    assert client.get("/api/lanes").status_code == 200
    nan = client.get(f"/api/items/{ids['nan']}").json()
    assert nan["objects"][0]["anomaly_score"] is None and nan["item_score"] is None


def test_a_failed_sign_in_takes_as_long_for_an_unknown_login(console: ConsoleProc) -> None:
    """An unknown login was answered without any hash check (~1 ms against ~50 ms for a known one): the time of a
    failed sign-in told which logins exist. A stand-in hash is checked now."""
    console.add_user("tim", "tim-pass-12")
    c = _anonymous(console)
    token = re.search(r'name="csrf-token" content="([^"]+)"', c.get("/login").text).group(1)  # type: ignore[union-attr]

    def fastest(login: str) -> float:
        times = []
        for i in range(3):
            start = time.perf_counter()
            answer = c.post("/login", json={"login": login, "password": f"wrong-{i}-x"},
                            headers={"X-CSRF-Token": token})
            times.append(time.perf_counter() - start)
            assert answer.status_code == 401
        return min(times)

    known, unknown = fastest("tim"), fastest(f"nobody-{uuid.uuid4().hex[:6]}")
    assert unknown > 0.5 * known, f"unknown login {unknown * 1000:.1f} ms, known {known * 1000:.1f} ms"


def test_a_password_change_or_disable_ends_the_users_sessions(console: ConsoleProc) -> None:
    """A supervisor resets a leaked password, or disables and later re-enables a user: the sessions signed in
    before stay refused. The old cookie kept working after a password change, and came back with a re-enable."""
    console.add_user("ivy", "ivy-pass-12")
    sam: Any = session(console, "sam", SUPERVISOR)
    before: Any = session(console, "ivy", "ivy-pass-12")
    assert sam.post("/api/users/ivy", json={"password": "ivy-new-pass-3"}).status_code == 200
    assert before.get("/api/items").status_code == 401
    after: Any = session(console, "ivy", "ivy-new-pass-3")
    assert after.get("/api/items").status_code == 200
    assert sam.post("/api/users/ivy", json={"disabled": True}).status_code == 200
    assert sam.post("/api/users/ivy", json={"disabled": False}).status_code == 200
    assert after.get("/api/items").status_code == 401
    assert session(console, "ivy", "ivy-new-pass-3").get("/api/items").status_code == 200


def test_an_oversized_body_is_refused_unread(console: ConsoleProc) -> None:
    """The sign-in page gives anyone a CSRF token: a POST /login of any size was read whole into memory."""
    c = _anonymous(console)
    token = re.search(r'name="csrf-token" content="([^"]+)"', c.get("/login").text).group(1)  # type: ignore[union-attr]
    big = b'{"login": "olga", "password": "' + b"x" * 2_000_000 + b'"}'
    headers = {"X-CSRF-Token": token, "content-type": "application/json"}
    assert c.post("/login", content=big, headers=headers).status_code == 413
    chunked = c.post("/login", content=iter([big[i:i + 65536] for i in range(0, len(big), 65536)]), headers=headers)
    assert chunked.status_code == 413
    assert session(console, "olga", OPERATOR).get("/api/items").status_code == 200


def test_the_last_active_supervisor_cannot_be_demoted_or_disabled_on_the_page(console: ConsoleProc) -> None:
    """A supervisor who made themself an operator, or disabled themself, as the only active supervisor locked
    everyone out of user management (and of re-opening verdicts) on the page. Refused with 409 and the reason;
    with another active supervisor the same change is allowed."""
    sam: Any = session(console, "sam", SUPERVISOR)
    others = [u["login"] for u in sam.get("/api/users").json()["users"]
              if u["role"] == "supervisor" and not u["disabled"] and u["login"] != "sam"]
    for login in others:  # sam becomes the only active supervisor
        assert sam.post(f"/api/users/{login}", json={"disabled": True}).status_code == 200
    try:
        for change in ({"role": "operator"}, {"disabled": True}, {"role": "operator", "disabled": True}):
            refused = sam.post("/api/users/sam", json=change)
            assert refused.status_code == 409, (change, refused.status_code, refused.text)
            assert "sam is the last active supervisor" in refused.json()["error"]
        users = {u["login"]: u for u in sam.get("/api/users").json()["users"]}
        assert users["sam"]["role"] == "supervisor" and not users["sam"]["disabled"]
        assert sam.get("/api/audit").status_code == 200, "sam is still signed in as a supervisor"
    finally:
        for login in others:
            assert sam.post(f"/api/users/{login}", json={"disabled": False}).status_code == 200
    # with sam active, a second supervisor may make themself an operator
    assert sam.post("/api/users", json={"login": "vera", "password": "vera-pass-12", "role": "supervisor"}
                    ).status_code == 201
    vera: Any = session(console, "vera", "vera-pass-12")
    assert vera.post("/api/users/vera", json={"role": "operator"}).status_code == 200
    assert vera.get("/api/audit").status_code == 403  # an operator now
