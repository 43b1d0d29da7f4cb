"""The HTTP edge: every body a client may send gets a fast JSON answer, and no other web page
can act for a user. Raw sockets, so that what the client sends is exactly what is tested."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from helpers import Service, running
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobs import limits
from jobs.settings import Settings, default_allowed_hosts
from server.auth import LOGIN_ATTEMPTS, SESSION_COOKIE, Sessions

MAX_BODY = 1024 * 1024
ANSWER_SECONDS = 1.0  # every request of the corpus is answered within this


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    service = Service(tmp_path_factory.mktemp("edge") / "d", JOB_MODULES="testjobs")
    try:
        yield service.start()
    finally:
        service.stop()


def request(path: str, body: bytes, content_type: str | None = "application/json",
            method: str = "POST", **headers: str) -> bytes:  # fmt: skip
    head = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
    if content_type:
        head.append(f"Content-Type: {content_type}")
    head += [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def read_answer(s: socket.socket, buffer: bytearray) -> tuple[int, dict[str, str], bytes]:
    """One HTTP response off the socket (Content-Length framed): status, headers, body."""
    while b"\r\n\r\n" not in buffer:
        chunk = s.recv(65536)
        assert chunk, "connection closed before an answer"
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    size = int(headers.get("content-length", "0"))
    while len(rest) < size:
        chunk = s.recv(65536)
        assert chunk, "connection closed inside an answer"
        rest += chunk
    buffer[:] = rest[size:]
    return int(lines[0].split()[1]), headers, rest[:size]


def exchange(svc: Service, data: bytes, pieces: int = 1, answers: int = 1) -> list[tuple[int, dict[str, str], bytes]]:  # fmt: skip
    """Send `data` in `pieces` writes, then read `answers` answers, each within ANSWER_SECONDS."""
    with socket.create_connection(("127.0.0.1", svc.port), timeout=ANSWER_SECONDS) as s:
        step = max(1, -(-len(data) // pieces))
        for i in range(0, len(data), step):
            s.sendall(data[i : i + step])
        buffer = bytearray()
        return [read_answer(s, buffer) for _ in range(answers)]


def enqueue_body(size: int) -> bytes:
    """An enqueue of exactly `size` bytes (size >= 40)."""
    frame = b'{"jobName":"noop","data":{"pad":""}}'
    return frame.replace(b'""', b'"' + b"x" * (size - len(frame)) + b'"')


SIZES = [1, 100, 64 * 1024 - 1, 64 * 1024 + 1, 200_000, MAX_BODY]


@pytest.mark.parametrize("pieces", [1, 97])
@pytest.mark.parametrize("size", SIZES)
def test_a_body_of_any_size_up_to_the_limit_is_answered_however_it_is_split(
    svc: Service, size: int, pieces: int
) -> None:
    body = b"1" if size == 1 else enqueue_body(size)
    [(status, headers, answer)] = exchange(svc, request("/enqueue-task", body), pieces)
    assert headers["content-type"] == "application/json"
    assert status == (422 if size == 1 else 202), answer[:200]


def test_pipelined_enqueues_with_large_bodies_are_all_accepted(svc: Service) -> None:
    data = b"".join(request("/enqueue-task", enqueue_body(n)) for n in (150_000, 40, 300_000))
    answers = exchange(svc, data, pieces=13, answers=3)
    assert [a[0] for a in answers] == [202, 202, 202]


def test_a_body_over_the_limit_is_413_declared_or_chunked_never_431(svc: Service) -> None:
    head = b"POST /enqueue-task HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    [(status, _, answer)] = exchange(svc, head + b"Content-Length: 5242880\r\n\r\n")
    assert status == 413 and json.loads(answer)["error"] == "payload_too_large"
    chunk = b"%x\r\n%s\r\n" % (256 * 1024, b"x" * 256 * 1024)
    chunked = head + b"Transfer-Encoding: chunked\r\n\r\n" + chunk * 5
    [(status, _, _)] = exchange(svc, chunked, pieces=20)
    assert status == 413


# deeper than json can write back, shallower than orjson reads: the surrogate check's depth
DEEP_PAIR = (
    '{"jobName": "noop", "data": {"a": ' + "[" * 1010 + '"\\ud83d\\ude00"' + "]" * 1010 + "}}"
)
CORPUS = [
    ('{"jobName": "noop", "data": {"text": "\\udfff"}}', 400, "lone surrogate"),
    ('{"jobName": "noop", "data": {"text": "\\ud83d\\ude00"}}', 202, None),  # a pair: fine
    ('{"jobName": "noop", "data": {"n": NaN}}', 400, "NaN"),
    ('{"jobName": "noop", "data": {"n": -Infinity}}', 400, "-Infinity"),
    ('{"jobName": "noop", "data": {"n": 1e999}}', 400, "range of a double"),
    ('{"jobName": "noop", "data": {"a": ' + "[" * 40 + "]" * 40 + "}}", 422, "nested"),
    ('{"jobName": "noop", "data": {"a": ' + "[" * 100_000 + "]" * 100_000 + "}}", 400, None),
    (DEEP_PAIR, 400, "nested too deeply"),
    ('{"jobName": "noop", "options": {"jobId": "a/b"}}', 422, "jobId"),
    ('{"jobName": "noop", "options": {"jobId": ".."}}', 422, "jobId"),
]


@pytest.mark.parametrize(("body", "status", "says"), CORPUS)
def test_json_a_job_cannot_carry_is_refused_by_name_before_anything_is_written(
    svc: Service, body: str, status: int, says: str | None
) -> None:
    raw = body.encode()
    [(got, _, answer)] = exchange(svc, request("/enqueue-task", raw))
    assert got == status, answer[:300]
    if says:
        assert says in json.loads(answer)["detail"]


def test_bytes_that_are_not_utf8_are_400(svc: Service) -> None:
    body = b'{"jobName": "noop", "data": {"t": "\xed\xa0\x80"}}'  # an encoded surrogate
    [(status, _, answer)] = exchange(svc, request("/enqueue-task", body))
    assert status == 400 and "UTF-8" in json.loads(answer)["detail"]


@pytest.mark.parametrize(
    "content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                     "multipart/form-data; boundary=x", "application/json; charset=latin-1"]
)  # fmt: skip
def test_a_json_route_takes_only_application_json(svc: Service, content_type: str | None) -> None:
    body = b'{"jobName": "noop"}'
    [(status, _, answer)] = exchange(svc, request("/enqueue-task", body, content_type))
    assert status == 415 and json.loads(answer)["error"] == "unsupported_media_type"
    ok = request("/enqueue-task", body, "Application/JSON; charset=UTF-8")
    assert exchange(svc, ok)[0][0] == 202


def test_oversized_heads_are_431_and_a_large_body_never_counts_as_head(svc: Service) -> None:
    big = request("/health", b"", None, "GET", X_Big="a" * 70_000)
    assert exchange(svc, big)[0][0] == 431
    # an endless head sent slowly: refused once past the bound (the last write crosses it, so
    # the server has read all that was sent and the answer is not lost to a reset)
    endless = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * (64 * 1024 - 50)
    with socket.create_connection(("127.0.0.1", svc.port), timeout=ANSWER_SECONDS) as s:
        for i in range(0, len(endless), 1300):
            s.sendall(endless[i : i + 1300])
        s.sendall(b"a" * 100)
        assert read_answer(s, bytearray())[0] == 431
    assert exchange(svc, request("/enqueue-task", enqueue_body(65_000), X_Pad="p" * 60_000))[0][0] == 202  # fmt: skip


def test_a_burst_of_good_enqueues_beside_the_bad_corpus_all_get_202(svc: Service) -> None:
    bad = [c[0].encode() for c in CORPUS if c[1] != 202]
    codes: list[int] = []
    errors: list[BaseException] = []

    def good() -> None:
        try:
            codes.append(exchange(svc, request("/enqueue-task", b'{"jobName":"noop"}'))[0][0])
        except BaseException as exc:  # a hang shows as a timeout here
            errors.append(exc)

    def hostile(body: bytes) -> None:
        try:
            exchange(svc, request("/enqueue-task", body))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=good) for _ in range(60)]
    threads += [threading.Thread(target=hostile, args=(b,)) for b in bad * 3]
    for i, t in enumerate(sorted(threads, key=lambda t: hash(t.name))):
        t.start()
        if i % 10 == 0:
            time.sleep(0)  # let some start together: they share a pipeline
    for t in threads:
        t.join(10)
    assert not errors, errors[:3]
    assert codes == [202] * 60


def test_a_result_json_cannot_carry_is_a_failed_try_and_the_record_stays_readable(
    svc: Service,
) -> None:
    for kind in ("surrogate", "inf"):
        job = svc.enqueue("bad_result", {"kind": kind}, attempts=1)
        record = svc.wait_status(job, "dead", 30)
        assert "cannot be stored" in (record["error"] or ""), record


def test_a_stored_record_holding_nan_reads_as_null_never_500(svc: Service) -> None:
    job = svc.enqueue("noop")
    svc.wait_status(job, "completed", 30)
    key = f"{{mq:default}}:job:{job}"
    svc.store().hset(key, mapping={"result": '{"n": NaN}', "progress": '"\\udfff"'})
    r = svc.http.get(f"/jobs/{job}")
    assert r.status_code == 200 and r.json()["result"] is None and r.json()["progress"] is None


ID = st.text(st.characters(codec="utf-8"), min_size=1, max_size=limits.MAX_JOB_ID)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(job_id=ID)
def test_every_accepted_job_id_answers_get_and_delete_at_its_location(
    svc: Service, job_id: str
) -> None:
    r = svc.http.post("/enqueue-task", json={"jobName": "noop", "options": {"jobId": job_id, "delay": 3600}})  # fmt: skip
    assert r.status_code in (200, 202, 422), r.text
    assert (r.status_code != 422) == limits.valid_job_id(job_id)
    if r.status_code == 422:
        return
    location = r.headers["location"]
    assert location == "/jobs/" + quote(job_id, safe="")
    got = svc.http.get(location)
    assert got.status_code == 200 and got.json()["id"] == job_id
    assert svc.http.delete(location).status_code in (200, 409)


def test_a_host_not_allowed_is_400_so_a_rebound_dns_name_reads_nothing(svc: Service) -> None:
    for host in ("127.0.0.1", f"127.0.0.1:{svc.port}", "localhost:1", "[::1]:80"):
        r = svc.http.get("/queue/stats", headers={"Host": host})
        assert r.status_code == 200, host
    r = svc.http.get("/queue/stats", headers={"Host": f"attacker.example:{svc.port}"})
    assert r.status_code == 400 and r.json()["error"] == "bad_host"
    assert default_allowed_hosts("0.0.0.0") == ("*",)
    wide = Settings.from_env({"HOST": "0.0.0.0"})
    assert wide.allowed_hosts == ("*",) and "API_KEY" in wide.warnings[0]
    assert Settings.from_env({"HOST": "0.0.0.0", "API_KEY": "k"}).warnings == []
    assert Settings.from_env({"ALLOWED_HOSTS": "a.example, B.example"}).allowed_hosts == ("a.example", "b.example")  # fmt: skip


def test_a_request_from_another_origin_may_not_change_anything(svc: Service) -> None:
    body = {"jobName": "noop"}
    own = f"http://127.0.0.1:{svc.port}"
    assert svc.http.post("/enqueue-task", json=body, headers={"Origin": own}).status_code == 202
    for origin in ("http://127.0.0.1:1", "http://evil.example", "null"):
        r = svc.http.post("/enqueue-task", json=body, headers={"Origin": origin})
        assert r.status_code == 403 and r.json()["error"] == "cross_origin", origin
    r = svc.http.post("/enqueue-task", json=body, headers={"Referer": "http://evil.example/x"})
    assert r.status_code == 403
    r = svc.http.post("/enqueue-task", json=body, headers={"Cookie": f"{SESSION_COOKIE}=x"})
    assert r.status_code == 403  # a cookie with no origin named: not a page of ours


ODD_KEY = 'k; e,y "with" spaces=é\\'


def test_the_dashboard_session_is_signed_flagged_bounded_and_any_key_works(
    data_dir: Path,
) -> None:
    with running(data_dir, API_KEY=ODD_KEY, SESSION_SECONDS=600) as svc:
        own = {"Origin": f"http://127.0.0.1:{svc.port}"}
        login = svc.http.post("/dashboard/login", data={"key": ODD_KEY}, headers=own)
        assert login.status_code == 303, login.text
        cookie = login.headers["set-cookie"]
        flags = {p.strip().split("=")[0].lower() for p in cookie.split(";")}
        assert {"httponly", "max-age", "path", "samesite"} <= flags and "secure" not in flags
        assert "samesite=strict" in cookie.lower() and "max-age=600" in cookie.lower()
        token = login.cookies[SESSION_COOKIE]
        svc.http.cookies.clear()
        assert ODD_KEY not in cookie and quote(ODD_KEY) not in cookie
        jar = {SESSION_COOKIE: token}
        assert svc.http.get("/queue/stats", cookies=jar).status_code == 200
        assert svc.http.get("/queue/stats", cookies={SESSION_COOKIE: token[:-1] + ("1" if token[-1] == "0" else "0")}).status_code == 401  # fmt: skip
        bearer = {"Authorization": f"Bearer {ODD_KEY}".encode()}
        assert svc.http.get("/queue/stats", headers=bearer).status_code == 200  # type: ignore[arg-type]
        # https through a trusted proxy: the cookie is Secure
        proxied = svc.http.post("/dashboard/login", data={"key": ODD_KEY},
                                headers={"X-Forwarded-Proto": "https", "Origin": f"https://127.0.0.1:{svc.port}"})  # fmt: skip
        assert "secure" in proxied.headers["set-cookie"].lower()
        out = svc.http.post("/dashboard/logout", cookies=jar, headers=own)
        assert out.status_code == 303 and "max-age=0" in out.headers["set-cookie"].lower()
        # failed sign-ins are limited per client address
        for _ in range(LOGIN_ATTEMPTS):
            assert svc.http.post("/dashboard/login", data={"key": "no"}, headers=own).status_code == 401  # fmt: skip
        limited = svc.http.post("/dashboard/login", data={"key": ODD_KEY}, headers=own)
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    sessions = Sessions(ODD_KEY, 600)
    issued = sessions.issue(now=1000)
    assert sessions.valid(issued, now=1599) and not sessions.valid(issued, now=1601)
    assert not Sessions("another key", 600).valid(issued, now=1000)


def test_template_is_a_page_answered_200(svc: Service) -> None:
    r = svc.http.get("/template")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
