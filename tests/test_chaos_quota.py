"""The chaos server as a provider with a request quota: token bucket, 429, Retry-After.

Over real HTTP on loopback. The quota's clock is a hand-stepped fake in most tests, so
every count and header value is exact; one test uses the real clock and the real openai
client, which must get through by honouring our ``retry-after-ms``.
"""

from __future__ import annotations

import math
import signal
import threading

import httpx
import pytest

from fault_injection import SERVER_SCENARIOS, FaultKind, FaultRule, Scenario, chaos_server
from fault_injection._quota import Quota, TokenBucket, quota_from_value
from fault_injection.chaos._app import retry_after_headers
from fault_injection.chaos._scenarios import SERVER_QUOTAS


class FakeClock:
    """Seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def chat(agent: int | None = None) -> dict:
    text = f"{{'agent_unique_id': {agent}}}" if agent is not None else "hello"
    return {"model": "chaos", "messages": [{"role": "user", "content": text}]}


@pytest.fixture
def client() -> httpx.Client:
    with httpx.Client(timeout=10) as c:
        yield c


# -- the value and the bucket ---------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        (
            {"rate": 0},
            ValueError,
            "Quota.rate must be a positive finite number of requests per second, not 0",
        ),
        (
            {"rate": -1.5},
            ValueError,
            "Quota.rate must be a positive finite number of requests per second, not -1.5",
        ),
        (
            {"rate": math.inf},
            ValueError,
            "Quota.rate must be a positive finite number of requests per second, not inf",
        ),
        ({"rate": True}, TypeError, "Quota.rate must be a number"),
        ({"rate": "50"}, TypeError, "Quota.rate must be a number"),
        ({"rate": 5, "burst": 0}, ValueError, "Quota.burst must be a positive integer, not 0"),
        ({"rate": 5, "burst": 2.5}, TypeError, "Quota.burst must be a positive integer"),
    ],
)
def test_bad_quotas_name_the_field_and_the_value(kwargs, error, words) -> None:
    with pytest.raises(error, match=words.replace("(", r"\(")):
        Quota(**kwargs)


def test_the_default_burst_is_one_seconds_worth() -> None:
    assert Quota(50).capacity == 50
    assert Quota(2.5).capacity == 3
    assert Quota(0.2).capacity == 1
    assert Quota(50, burst=5).capacity == 5
    assert quota_from_value(10) == Quota(10.0)
    assert quota_from_value(None) is None
    with pytest.raises(TypeError, match="quota must be a Quota or requests per second"):
        quota_from_value("fast")  # type: ignore[arg-type]


def test_bucket_admits_the_burst_then_says_exactly_when_the_next_token_comes() -> None:
    clock = FakeClock()
    bucket = TokenBucket(Quota(4, burst=2), clock)
    assert [bucket.take() for _ in range(2)] == [0.0, 0.0]
    assert bucket.take() == pytest.approx(0.25)
    clock.advance(0.1)
    assert bucket.take() == pytest.approx(0.15)  # a refusal takes nothing
    clock.advance(0.15)
    assert bucket.take() == 0.0
    clock.advance(60)  # an idle bucket fills to its capacity, no further
    assert bucket.tokens == 2
    assert [bucket.take() for _ in range(3)][:2] == [0.0, 0.0]
    assert (bucket.admitted, bucket.refused) == (5, 3)


def test_waiting_exactly_the_advertised_time_is_enough_despite_float_rounding() -> None:
    clock = FakeClock()
    bucket = TokenBucket(Quota(3, burst=1), clock)
    for _ in range(1000):
        assert bucket.take() == 0.0
        wait = bucket.take()
        assert wait > 0
        clock.advance(wait)
    assert bucket.refused == 1000


def test_retry_after_headers_round_up_to_whole_seconds_and_milliseconds() -> None:
    assert retry_after_headers(0.25) == {"retry-after": "1", "retry-after-ms": "250"}
    assert retry_after_headers(0.0001) == {"retry-after": "1", "retry-after-ms": "1"}
    assert retry_after_headers(1.0005) == {"retry-after": "2", "retry-after-ms": "1001"}
    assert retry_after_headers(3.0) == {"retry-after": "3", "retry-after-ms": "3000"}


# -- over HTTP ------------------------------------------------------------------------


def test_burst_then_429_with_an_openai_error_and_an_honest_retry_after(client) -> None:
    clock = FakeClock()
    with chaos_server("quota", quota=Quota(2, burst=3), clock=clock) as server:
        url = server.api_base + "/chat/completions"
        assert [client.post(url, json=chat(7)).status_code for _ in range(3)] == [200] * 3
        refused = client.post(url, json=chat(7))
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1"
        assert refused.headers["retry-after-ms"] == "500"  # 1 token at 2/s: 0.5 s
        error = refused.json()["error"]
        assert (error["type"], error["code"]) == ("requests", "rate_limit_exceeded")
        assert "Limit 2, burst 3" in error["message"] and "agent 7" in error["message"]
        clock.advance(0.375)  # binary-exact times: exact header values
        again = client.post(url, json=chat(7))
        assert (again.status_code, again.headers["retry-after-ms"]) == (429, "125")
        clock.advance(0.125)
        assert client.post(url, json=chat(7)).status_code == 200
        stats = server.stats()
    assert stats["requests"] == 6
    assert (stats["rate_limited"], stats["quota_exceeded"]) == (2, 2)
    assert stats["status"] == {"200": 4, "429": 2}
    assert stats["quota"] == {
        "rate": 2.0,
        "burst": 3,
        "tokens": 0.0,
        "admitted": 4,
        "refused": 2,
    }


def test_refused_requests_use_no_plan_call_so_the_plan_still_applies(client) -> None:
    # Agent 1's first planned call is a 500; the quota refusing it first must not skip it.
    clock = FakeClock()
    scenario = Scenario(
        name="one-500",
        agents=2,
        latency=0.0,
        rules=(FaultRule(FaultKind.SERVER_ERROR, agents=(1,), calls=(1,)),),
    )
    with chaos_server(scenario, quota=Quota(1, burst=1), clock=clock) as server:
        url = server.api_base + "/chat/completions"
        assert client.post(url, json=chat(2)).status_code == 200
        assert client.post(url, json=chat(1)).status_code == 429
        clock.advance(1.0)
        assert client.post(url, json=chat(1)).status_code == 500
        clock.advance(1.0)
        assert client.post(url, json=chat(1)).status_code == 200
        records = server.records()
    assert [(r.agent, r.call, r.planned, r.fault, r.status) for r in records] == [
        (2, 1, "ok", "ok", 200),
        (1, 1, "quota_exceeded", "quota_exceeded", 429),
        (1, 1, "server_error", "server_error", 500),
        (1, 2, "ok", "ok", 200),
    ]
    assert records[1].retry_after == pytest.approx(1.0)


def test_the_stats_endpoint_counts_quota_and_planned_429s_apart(client) -> None:
    clock = FakeClock()
    storm = SERVER_SCENARIOS["rate-limit-storm"]
    with chaos_server(storm, seed=3, quota=Quota(1, burst=4), clock=clock) as server:
        url = server.api_base + "/chat/completions"
        codes = [client.post(url, json=chat(n)).status_code for n in range(1, 7)]
        stats = client.get(server.base_url + "/_chaos/stats?wait_idle=5").json()
    planned_429 = sum(r.fault == "rate_limit" for r in server.log.records())
    assert codes.count(429) == 2 + planned_429  # 4 admitted, 2 over the quota
    assert (stats["scenario"], stats["seed"], stats["idle"]) == ("rate-limit-storm", 3, True)
    assert stats["requests"] == 6 and stats["quota_exceeded"] == 2
    assert stats["rate_limited"] == codes.count(429)
    assert stats["quota"]["admitted"] == 4 and stats["quota"]["refused"] == 2


def test_without_a_quota_stats_say_so(client) -> None:
    with chaos_server("clean") as server:
        assert server.quota is None
        client.post(server.api_base + "/chat/completions", json=chat(1))
        stats = client.get(server.base_url + "/_chaos/stats?wait_idle=5").json()
    assert stats["quota"] is None
    assert (stats["requests"], stats["quota_exceeded"], stats["faults"]) == (1, 0, {"ok": 1})


def test_the_quota_scenario_is_a_clean_provider_at_50_per_second() -> None:
    scenario = SERVER_SCENARIOS["quota"]
    assert not scenario.faults and not scenario.rules
    assert SERVER_QUOTAS["quota"] == Quota(50)
    with chaos_server("quota", quota=5) as server:  # an explicit quota wins
        assert server.quota == Quota(5.0)


@pytest.mark.chaos_server("quota")
def test_the_pytest_marker_serves_the_quota_scenario(chaos_llm_server, client) -> None:
    assert chaos_llm_server.quota == Quota(50)
    url = chaos_llm_server.api_base + "/chat/completions"
    codes = [client.post(url, json=chat(1)).status_code for _ in range(3)]
    assert codes == [200] * 3  # well within a burst of 50


def test_the_real_openai_client_gets_through_by_honouring_retry_after() -> None:
    # Real clock. The openai SDK prefers retry-after-ms; without it, its own first backoff
    # (0.5 s less up to 25% jitter) would come back before a 1/s bucket has a token again,
    # and with max_retries=1 the call would fail.
    openai = pytest.importorskip("openai")
    with chaos_server("quota", quota=Quota(1, burst=1)) as server:
        assert httpx.post(server.api_base + "/chat/completions", json=chat(1)).status_code == 200
        sdk = openai.OpenAI(base_url=server.api_base, api_key="sk-chaos", max_retries=1)
        reply = sdk.chat.completions.create(model="chaos", messages=chat(1)["messages"])
        stats = server.stats()
        sdk.close()
    assert "agent_unique_id: 1" in reply.choices[0].message.content
    assert stats["quota_exceeded"] == 1 and stats["status"] == {"200": 2, "429": 1}


def test_the_bucket_is_safe_to_share_between_threads() -> None:
    bucket = TokenBucket(Quota(1, burst=500), FakeClock())
    results: list[float] = []
    lock = threading.Lock()

    def take_100() -> None:
        got = [bucket.take() for _ in range(100)]
        with lock:
            results.extend(got)

    threads = [threading.Thread(target=take_100) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(0.0) == 500 and (bucket.admitted, bucket.refused) == (500, 300)


# -- python -m fault_injection serve --------------------------------------------------


def test_serve_quota_flags_enforce_the_quota_and_report_it() -> None:
    from test_chaos_cli import CHAT, get, post, serve

    # rate 0.01/s: no second token comes while the test runs, whatever the machine.
    with serve("--scenario", "quota", "--quota", "0.01", "--quota-burst", "2") as (proc, url):
        codes = [post(url + "/v1/chat/completions", CHAT)[0] for _ in range(3)]
        stats = get(url + "/_chaos/stats?wait_idle=5")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        err = proc.stderr.read()
    assert codes == [200, 200, 429]
    assert stats["quota"]["rate"] == 0.01 and stats["quota"]["burst"] == 2
    assert "quota 0.01 requests/s, burst 2" in err
    assert "stopped after 3 requests, 1 faults, 1 over the quota" in err


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (
            ["--quota", "0"],
            "Quota.rate must be a positive finite number of requests per second, not 0.0",
        ),
        (["--quota", "5", "--quota-burst", "0"], "Quota.burst must be a positive integer"),
        (["--quota-burst", "3"], "--quota-burst needs --quota (scenario 'clean' has none)"),
    ],
)
def test_serve_rejects_bad_quota_flags_with_status_2(args, words) -> None:
    from test_chaos_cli import serve

    with serve(*args) as (proc, first):
        assert first == ""
        assert proc.wait(timeout=30) == 2
        assert words in proc.stderr.read()


def test_serve_quota_burst_alone_uses_the_quota_scenarios_rate() -> None:
    from test_chaos_cli import get, serve

    with serve("--scenario", "quota", "--quota-burst", "7") as (proc, url):
        stats = get(url + "/_chaos/stats")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    assert (stats["quota"]["rate"], stats["quota"]["burst"]) == (50.0, 7)


# -- a token quota (tokens per second: a TPM enforced per second) ----------------------


def test_the_token_bucket_admits_prompts_it_holds_and_charges_completions() -> None:
    clock = FakeClock()
    bucket = TokenBucket(Quota(100, tokens=10, token_burst=20), clock)
    assert bucket.take(15) == 0.0  # 5 left
    assert bucket.take(10) == 0.5  # 5 more at 10 a second
    bucket.charge(5)  # the first one's completion: the bucket is empty
    assert bucket.take(10) == 1.0
    clock.advance(1.0)
    assert bucket.take(10) == 0.0
    assert bucket.take(40) == 2.0  # more than the bucket holds: wait for a full bucket
    stats = bucket.stats()
    assert (stats["llm_tokens_charged"], stats["refused_for_tokens"]) == (30, 3)
    assert (stats["llm_tokens_per_s"], stats["llm_token_burst"]) == (10.0, 20)
    assert Quota(5, tokens=7.5).token_capacity == 8
    assert Quota(5, tokens=7.5).describe() == "5 requests/s, burst 5; 7.5 tokens/s, burst 8"
    with pytest.raises(ValueError, match=r"token_burst needs Quota\.tokens"):
        Quota(5, token_burst=3)


def test_a_token_quota_refuses_a_prompt_it_has_no_room_for(client) -> None:
    clock = FakeClock()
    body = {"model": "chaos", "messages": [{"role": "user", "content": "one two three four"}]}
    with chaos_server("clean", quota=Quota(100, tokens=4, token_burst=6), clock=clock) as s:
        url = s.api_base + "/chat/completions"
        first = client.post(url, json=body)
        assert first.status_code == 200
        assert first.json()["usage"]["prompt_tokens"] == 4
        refused = client.post(url, json=body)  # 6 - 4 - its completion: in debt
        assert refused.status_code == 429
        error = refused.json()["error"]
        assert "on tokens per second (TPS): Limit 4, burst 6, Requested 4" in error["message"]
        stats = s.stats()
    completion = first.json()["usage"]["completion_tokens"]
    assert stats["quota"]["llm_tokens_charged"] == 4 + completion
    assert refused.headers["retry-after-ms"] == str(math.ceil((4 + completion - 2) / 4 * 1000))


def test_trio_mesa_paces_requests_and_tokens_to_the_servers_quota() -> None:
    """End to end over loopback: trio agents through the seam, a per-request RateLimit
    written as the server's quota (20 requests and 800 tokens a second), with
    request retries: every agent gets through, the tokens were reserved and settled."""
    from mesa import Agent, Model

    import trio_mesa

    client = trio_mesa.async_http_client()

    class Caller(Agent):
        @trio_mesa.trio_native
        async def astep(self) -> None:
            for n in range(2):
                content = "word " * 30 + f"turn {n}"
                body = {"model": "chaos", "messages": [{"role": "user", "content": content}]}
                r = await client.post(self.model.url, json=body)
                r.raise_for_status()

    model = Model(rng=1)
    for _ in range(20):
        Caller(model)
    limit = trio_mesa.RateLimit(requests=20, tokens=800)
    with chaos_server("clean", quota=Quota(20, tokens=800)) as server:
        model.url = server.api_base + "/chat/completions"
        report = trio_mesa.run_step(
            model.agents, rate_limit=limit, request_retry=trio_mesa.Retry(attempts=5)
        )
        stats = server.stats()
    assert report.all_ok, str(report)
    assert report.usage.calls == 40
    # One reservation per request sent; a 429's hold-off voids the slots given out
    # behind it, and their holders reserve again (how many depends on the machine's load).
    if stats["quota_exceeded"]:
        assert limit.reservations >= stats["requests"]
    else:
        assert limit.reservations == stats["requests"]
    assert limit.tokens_used == report.usage.total_tokens == stats["quota"]["llm_tokens_charged"]
    # The estimate (characters / 4) misses the completion; the limit learned it.
    assert limit.expected_ratio > 1.0
    # 429s: what in-flight requests' misses cost (no timing bound here: see workload 8).
    assert stats["quota_exceeded"] == report.usage.request_retries
