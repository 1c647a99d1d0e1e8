"""The command line without servers: arguments, contract checks and readable output."""

from __future__ import annotations

import re
import time
from datetime import UTC, date, datetime
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

from lumiku_bgremover.cli import COMMANDS, parser
from lumiku_bgremover.commands.asking import NoService
from lumiku_bgremover.commands.asking import ask as _ask
from lumiku_bgremover.commands.common import error_text, request_of, rows, when
from lumiku_bgremover.commands.credits import format_grant, new_key
from lumiku_bgremover.commands.quote import format_quote
from lumiku_bgremover.commands.subscriptions import format_subscription
from lumiku_bgremover.contracts import (
    ContractError,
    CreditGrantReply,
    CreditGrantRequest,
    ErrorReply,
    GrantReason,
    Plan,
    PricingType,
    QuoteReply,
    RejectCode,
    RequestMode,
    SubscriptionInfo,
    SubscriptionReply,
    Tier,
)

JAKARTA = ZoneInfo("Asia/Jakarta")
NOW = datetime(2025, 1, 31, 8, 15, tzinfo=UTC)


def quote(**changes: object) -> QuoteReply:
    fields: dict[str, object] = {
        "tier": Tier.STANDARD,
        "count": 50,
        "mode": RequestMode.BATCH,
        "credits_per_image": 8,
        "base_total": 400,
        "discount_pct": 5,
        "discount": 20,
        "total": 380,
        "per_image": "7.6",
        "pricing_type": PricingType.CREDITS,
        "quota_used": None,
        "quota_left": None,
        "balance": 1200,
        "sufficient": True,
        "accepted": True,
        "reason": None,
    }
    return QuoteReply(**(fields | changes))  # type: ignore[arg-type]


def test_a_credits_quote_reads_as_aligned_rows() -> None:
    assert format_quote("usr_1", quote()).splitlines() == [
        "quote     50 x standard (batch) for usr_1",
        "price     8 credits x 50 = 400, discount 5% (-20)",
        "total     380 credits (7.6 per image)",
        "paid by   credits",
        "balance   1200 credits (sufficient)",
        "accepted  yes",
    ]


def test_an_insufficient_quote_says_why_and_shows_quota() -> None:
    text = format_quote(
        "u",
        quote(
            balance=10, sufficient=False, accepted=False,
            reason=RejectCode.INSUFFICIENT_CREDITS, quota_used=3, quota_left=47,
        ),
    )  # fmt: skip
    assert "balance      10 credits (insufficient)" in text
    assert "quota today  3 used, 47 left" in text
    assert text.endswith("accepted     no: insufficient_credits")


def test_a_subscription_quote_costs_no_credits() -> None:
    single = quote(
        tier=Tier.BASIC, count=1, mode=RequestMode.SINGLE, credits_per_image=0, base_total=0,
        discount_pct=0, discount=0, total=0, per_image="0",
        pricing_type=PricingType.SUBSCRIPTION, quota_used=0, quota_left=50, balance=0,
    )  # fmt: skip
    text = format_quote("u", single)
    assert "price        0 credits: one unit of today's subscription quota" in text
    assert "paid by      subscription" in text
    assert "total" not in text


def test_grant_output_names_the_key_and_a_replay() -> None:
    reply = CreditGrantReply(
        user_id="u", amount=100, reason=GrantReason.PURCHASE, idempotency_key="k-1",
        entry_id=7, balance_after=100, balance=150, created_at=NOW, replayed=False,
    )  # fmt: skip
    assert format_grant(reply).splitlines() == [
        "granted          100 credits to u (purchase), entry 7",
        "balance          150 credits",
        "idempotency key  k-1 (pass --key to retry safely)",
    ]
    again = CreditGrantReply(**{**_fields(reply), "replayed": True})
    assert format_grant(again).startswith("already granted earlier: nothing added  100 credits")


def _fields(reply: CreditGrantReply) -> dict[str, object]:
    return {f: getattr(reply, f) for f in reply.__struct_fields__}


def test_subscription_output_in_the_business_time_zone() -> None:
    info = SubscriptionInfo(
        plan=Plan.PRO, status="active", started_at=NOW, expires_at=datetime(2025, 3, 2, tzinfo=UTC),
        daily_quota=200, professional_quota=50,
        allowed_tiers=(Tier.BASIC, Tier.STANDARD, Tier.PROFESSIONAL),
    )  # fmt: skip
    reply = SubscriptionReply(
        user_id="u", subscription=info, business_date=date(2025, 1, 31), quota_used=12,
        quota_left=188, professional_used=3, professional_left=47,
    )  # fmt: skip
    assert format_subscription(reply, JAKARTA).splitlines() == [
        "user          u",
        "plan          pro (active)",
        "from          2025-01-31 15:15+07:00 (Asia/Jakarta)",
        "until         2025-03-02 07:00+07:00 (Asia/Jakarta)",
        "tiers         basic, standard, professional",
        "daily quota   200",
        "today         2025-01-31: 12 used, 188 left",
        "professional  50 a day; 3 used, 47 left",
    ]
    none = SubscriptionReply(
        user_id="u", subscription=None, business_date=date(2025, 1, 31), quota_used=None,
        quota_left=None,
    )  # fmt: skip
    assert format_subscription(none, JAKARTA) == "u has no active subscription"


def test_helpers() -> None:
    assert rows([("a", "1"), ("long", "2")]) == "a     1\nlong  2"
    assert rows([]) == ""
    assert when(NOW, ZoneInfo("UTC")) == "2025-01-31 08:15+00:00 (UTC)"
    error = ErrorReply(code=RejectCode.UNKNOWN_TIER, message="no", path="$.tier")
    assert error_text(error) == "error unknown_tier: no (at $.tier)"
    assert error_text(ErrorReply(code=RejectCode.INTERNAL_ERROR, message="x")) == (
        "error internal_error: x"
    )
    assert re.fullmatch(r"cli-grant-[0-9a-f]{32}", new_key())
    assert new_key() != new_key()
    assert "bgremove.quote: is `lumiku-bgremover run` up?" in str(NoService("bgremove.quote"))


def test_request_of_validates_like_the_service() -> None:
    good = request_of(CreditGrantRequest, user_id="u", amount=5, idempotency_key="k")
    assert good == CreditGrantRequest(user_id="u", amount=5, idempotency_key="k")
    with pytest.raises(ContractError) as caught:
        request_of(CreditGrantRequest, user_id="u", amount=0, idempotency_key="k")
    assert (caught.value.code, caught.value.path) == (RejectCode.INVALID_REQUEST, "$.amount")
    with pytest.raises(ContractError, match="user_id"):
        request_of(CreditGrantRequest, user_id="no/slash", amount=1, idempotency_key="k")


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ["quote", "--user", "u", "--tier", "basic", "--count", "3"],
            {"user": "u", "tier": "basic", "count": 3, "mode": "batch", "timeout": 5.0},
        ),
        (
            ["quote", "--user", "u", "--tier", "industry", "--count", "1", "--mode", "single",
             "--timeout", "2", "--json"],
            {"mode": "single", "timeout": 2.0, "json": True},
        ),
        (
            ["credits", "grant", "--user", "u", "--amount", "9"],
            {"action": "grant", "amount": 9, "key": None, "reason": "grant"},
        ),
        (
            ["credits", "grant", "--user", "u", "--amount", "9", "--key", "k",
             "--reason", "purchase"],
            {"key": "k", "reason": "purchase"},
        ),
        (["credits", "balance", "--user", "u"], {"action": "balance", "user": "u"}),
        (
            ["subscription", "set", "--user", "u", "--plan", "starter"],
            {"action": "set", "plan": "starter", "days": 30},
        ),
        (["subscription", "show", "--user", "u"], {"action": "show", "json": False}),
    ],
)  # fmt: skip
def test_arguments_parse(argv: list[str], expected: dict[str, object]) -> None:
    args = vars(parser().parse_args(argv))
    assert {key: args[key] for key in expected} == expected


@pytest.mark.parametrize(
    "argv",
    [
        ["quote", "--user", "u", "--tier", "gold", "--count", "1"],
        ["quote", "--user", "u", "--tier", "basic"],
        ["quote", "--user", "u", "--tier", "basic", "--count", "x"],
        ["credits"],
        ["credits", "grant", "--user", "u", "--amount", "1", "--reason", "refund"],
        ["subscription", "set", "--user", "u", "--plan", "gold"],
    ],
)
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        parser().parse_args(argv)
    assert caught.value.code == 2
    assert "usage: lumiku-bgremover" in capsys.readouterr().err


def test_every_command_is_in_the_parser() -> None:
    assert {"run", "migrate", "provision", "quote", "credits", "subscription"} <= set(COMMANDS)


class FakeNats:
    """Answers `request` from a script: an exception to raise or bytes to return."""

    def __init__(self, *script: BaseException | bytes) -> None:
        self.script = list(script)
        self.calls = 0

    async def request(self, subject: str, body: bytes, timeout: float) -> SimpleNamespace:  # noqa: ASYNC109 (the nats-py signature)
        del subject, body
        assert timeout > 0
        self.calls += 1
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(step, BaseException):
            raise step
        return SimpleNamespace(data=step)


async def test_no_responders_is_retried_until_someone_answers() -> None:
    fake = FakeNats(NoRespondersError(), NoRespondersError(), b"answer")
    assert await _ask(fake, "s", b"{}", 2.0) == b"answer"  # type: ignore[arg-type]
    assert fake.calls == 3


async def test_no_responders_until_the_timeout_is_no_service() -> None:
    fake = FakeNats(NoRespondersError())
    started = time.monotonic()
    with pytest.raises(NoService, match="no service answered on s:"):
        await _ask(fake, "s", b"{}", 0.3)  # type: ignore[arg-type]
    assert 0.2 < time.monotonic() - started < 1.0
    assert fake.calls > 2


async def test_a_timeout_is_no_service_at_once() -> None:
    fake = FakeNats(NatsTimeoutError())
    with pytest.raises(NoService):
        await _ask(fake, "s", b"{}", 5.0)  # type: ignore[arg-type]
    assert fake.calls == 1
