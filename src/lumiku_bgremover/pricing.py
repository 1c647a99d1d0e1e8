"""Pure business rules: tiers, volume discounts, plans, quotes and refunds.

Nothing here does I/O. Credits are whole numbers and all money-relevant maths
is integer maths (``floor`` of exact products), so every caller that applies
the same inputs gets the same numbers.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from types import MappingProxyType
from typing import TYPE_CHECKING, Final, Protocol

from lumiku_bgremover.contracts.common import Plan, PricingType, Tier

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import date, datetime
    from zoneinfo import ZoneInfo

__all__ = [
    "DISCOUNT_BANDS",
    "MAX_IMAGES_PER_BATCH",
    "PLANS",
    "TIERS",
    "BatchCharge",
    "BatchQuote",
    "ChargedBatch",
    "CoverageReason",
    "InvalidCount",
    "PlanRules",
    "PricingError",
    "PricingType",
    "QuotaUsage",
    "RefundError",
    "SinglePricing",
    "SubscriptionSnapshot",
    "SubscriptionStatus",
    "TierPricing",
    "UnknownTier",
    "business_date",
    "cost_of_successes",
    "decide_single",
    "discount_pct",
    "parse_tier",
    "quota_usage",
    "quote_batch",
    "refund_due",
    "refund_single",
    "refund_total",
]

#: Most images one batch may hold, unless a caller passes another limit.
MAX_IMAGES_PER_BATCH: Final = 500

#: Volume discount bands: (highest image count of the band, discount %), ascending.
#: Counts above the last bound (only possible with a raised limit) get the last %.
DISCOUNT_BANDS: Final = ((19, 0), (50, 5), (100, 10), (200, 15), (500, 20))

_PERCENT: Final = 100
_STR_PLACES: Final = Decimal("0.0001")


class PricingError(ValueError):
    """A pricing input broke a business rule."""


class UnknownTier(PricingError):  # noqa: N818 (name fixed by the API brief)
    """The value names no tier."""

    def __init__(self, value: object) -> None:
        self.value = value
        names = ", ".join(t.value for t in Tier)
        super().__init__(f"unknown tier {value!r}; expected one of: {names}")


class InvalidCount(PricingError):  # noqa: N818 (name fixed by the API brief)
    """An image count outside ``1..max_images``."""

    def __init__(self, count: object, max_images: int) -> None:
        self.count = count
        self.max_images = max_images
        super().__init__(f"image count {count!r} is outside 1..{max_images}")


class RefundError(PricingError):
    """A failed-item count or prior refund that does not fit the batch."""


@dataclass(frozen=True, slots=True)
class TierPricing:
    """Price, cost and default hosted model of one tier."""

    tier: Tier
    credits_per_image: int
    model: str
    provider: str
    price_idr: int
    cost_idr: Decimal

    @property
    def margin_idr(self) -> Decimal:
        """Price minus cost (HPP), in IDR."""
        return Decimal(self.price_idr) - self.cost_idr

    @property
    def margin_pct(self) -> Decimal:
        """Margin as a percentage of the price, rounded half-up to 2 places."""
        pct = self.margin_idr * _PERCENT / Decimal(self.price_idr)
        return pct.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


#: The per-tier business table (read-only).
TIERS: Final[Mapping[Tier, TierPricing]] = MappingProxyType(
    {
        t.tier: t
        for t in (
            TierPricing(Tier.BASIC, 3, "briaai/RMBG-1.4", "huggingface", 300, Decimal("17.5")),
            TierPricing(Tier.STANDARD, 8, "briaai/RMBG-2.0", "huggingface", 800, Decimal("51.75")),
            TierPricing(
                Tier.PROFESSIONAL, 15, "birefnet-general", "segmind", 1500, Decimal("86.25")
            ),
            TierPricing(Tier.INDUSTRY, 25, "birefnet-portrait", "segmind", 2500, Decimal(138)),
        )
    }
)


def parse_tier(value: str) -> Tier:
    """Return the tier named exactly by ``value``, else raise :class:`UnknownTier`."""
    try:
        return Tier(value)
    except ValueError:
        raise UnknownTier(value) from None


def _check_count(count: int, max_images: int) -> None:
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= max_images:
        raise InvalidCount(count, max_images)


def discount_pct(count: int, *, max_images: int = MAX_IMAGES_PER_BATCH) -> int:
    """Volume discount in whole percent for a batch of ``count`` images."""
    _check_count(count, max_images)
    for upper, pct in DISCOUNT_BANDS:
        if count <= upper:
            return pct
    return DISCOUNT_BANDS[-1][1]


def _fraction_str(value: Fraction) -> str:
    """Exact decimal text of a fraction when it terminates, else 4 places."""
    den = value.denominator
    twos = fives = 0
    while den % 2 == 0:
        den, twos = den // 2, twos + 1
    while den % 5 == 0:
        den, fives = den // 5, fives + 1
    if den != 1:
        rounded = (Decimal(value.numerator) / Decimal(value.denominator)).quantize(
            _STR_PLACES, rounding=ROUND_HALF_UP
        )
        return format(rounded, "f")
    places = max(twos, fives)
    scaled = value.numerator * 10**places // value.denominator
    return format(Decimal(scaled).scaleb(-places).normalize(), "f")


@dataclass(frozen=True, slots=True)
class BatchQuote:
    """Credits for a batch of one tier, after the volume discount."""

    tier: Tier
    count: int
    credits_per_image: int
    base_total: int
    discount_pct: int
    discount: int
    total: int

    @property
    def per_image(self) -> Fraction:
        """Effective credits per image (``total / count``), exact."""
        return Fraction(self.total, self.count)

    @property
    def per_image_str(self) -> str:
        """``per_image`` as exact decimal text when finite, else rounded to 4 places."""
        return _fraction_str(self.per_image)


def quote_batch(tier: Tier, count: int, *, max_images: int = MAX_IMAGES_PER_BATCH) -> BatchQuote:
    """Price ``count`` images of ``tier``; raise :class:`InvalidCount` outside 1..max."""
    pct = discount_pct(count, max_images=max_images)
    per_image = TIERS[tier].credits_per_image
    base = per_image * count
    discount = base * pct // _PERCENT
    return BatchQuote(
        tier=tier,
        count=count,
        credits_per_image=per_image,
        base_total=base,
        discount_pct=pct,
        discount=discount,
        total=base - discount,
    )


@dataclass(frozen=True, slots=True)
class PlanRules:
    """What a subscription plan costs and covers."""

    plan: Plan
    monthly_price_idr: int
    daily_quota: int
    allowed_tiers: frozenset[Tier]
    professional_daily_cap: int | None

    def __post_init__(self) -> None:
        if Tier.INDUSTRY in self.allowed_tiers:
            raise ValueError("industry is always paid in credits")


#: Subscription plans (read-only).
PLANS: Final[Mapping[Plan, PlanRules]] = MappingProxyType(
    {
        Plan.STARTER: PlanRules(
            Plan.STARTER, 99_000, 50, frozenset({Tier.BASIC, Tier.STANDARD}), None
        ),
        Plan.PRO: PlanRules(
            Plan.PRO, 299_000, 200, frozenset({Tier.BASIC, Tier.STANDARD, Tier.PROFESSIONAL}), 50
        ),
    }
)


class SubscriptionStatus(enum.StrEnum):
    """Lifecycle state of a subscription."""

    ACTIVE = "active"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


def _require_aware(value: datetime, name: str) -> None:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got {value!r}")


@dataclass(frozen=True, slots=True)
class SubscriptionSnapshot:
    """A user's subscription and today's usage, as read by the billing layer."""

    plan: Plan
    status: SubscriptionStatus
    expires_at: datetime
    allowed_tiers: frozenset[Tier]
    daily_quota: int
    professional_quota: int | None
    used_today_total: int = 0
    used_today_by_tier: Mapping[Tier, int] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        _require_aware(self.expires_at, "expires_at")

    @classmethod
    def from_plan(
        cls,
        plan: Plan,
        *,
        status: SubscriptionStatus,
        expires_at: datetime,
        used_today_by_tier: Mapping[Tier, int] | None = None,
    ) -> SubscriptionSnapshot:
        """Build a snapshot with the plan's default rules and the given usage."""
        rules = PLANS[plan]
        used = MappingProxyType(dict(used_today_by_tier or {}))
        return cls(
            plan=plan,
            status=status,
            expires_at=expires_at,
            allowed_tiers=rules.allowed_tiers,
            daily_quota=rules.daily_quota,
            professional_quota=rules.professional_daily_cap,
            used_today_total=sum(used.values()),
            used_today_by_tier=used,
        )


@dataclass(frozen=True, slots=True)
class QuotaUsage:
    """Today's subscription usage and what is left (never negative)."""

    daily_quota: int
    used_today: int
    left_today: int
    professional_quota: int | None
    professional_used: int
    professional_left: int | None

    def left_for(self, tier: Tier) -> int:
        """Removals of ``tier`` still possible today by quota alone (coverage aside)."""
        if tier is Tier.PROFESSIONAL and self.professional_left is not None:
            return min(self.left_today, self.professional_left)
        return self.left_today


def quota_usage(snapshot: SubscriptionSnapshot) -> QuotaUsage:
    """Quota used and left today, for decisions and the quote reply."""
    pro_used = snapshot.used_today_by_tier.get(Tier.PROFESSIONAL, 0)
    pro_cap = snapshot.professional_quota
    return QuotaUsage(
        daily_quota=snapshot.daily_quota,
        used_today=snapshot.used_today_total,
        left_today=max(0, snapshot.daily_quota - snapshot.used_today_total),
        professional_quota=pro_cap,
        professional_used=pro_used,
        professional_left=None if pro_cap is None else max(0, pro_cap - pro_used),
    )


class CoverageReason(enum.StrEnum):
    """Why a single image is, or is not, covered by the subscription."""

    COVERED = "covered"
    NO_SUBSCRIPTION = "no_subscription"
    INACTIVE = "inactive"
    EXPIRED = "expired"
    TIER_NOT_COVERED = "tier_not_covered"
    QUOTA_EXHAUSTED = "quota_exhausted"
    PROFESSIONAL_QUOTA_EXHAUSTED = "professional_quota_exhausted"


@dataclass(frozen=True, slots=True)
class SinglePricing:
    """The decision for one image: subscription (0 credits) or credits."""

    tier: Tier
    pricing_type: PricingType
    credits: int
    reason: CoverageReason

    @property
    def uses_subscription(self) -> bool:
        """True when one unit of daily quota is used instead of credits."""
        return self.pricing_type is PricingType.SUBSCRIPTION


def _subscription_reason(snapshot: SubscriptionSnapshot, now: datetime) -> CoverageReason | None:
    if snapshot.status is SubscriptionStatus.CANCELLED:
        return CoverageReason.INACTIVE
    if snapshot.status is SubscriptionStatus.EXPIRED or snapshot.expires_at <= now:
        return CoverageReason.EXPIRED
    return None


def _tier_reason(tier: Tier, snapshot: SubscriptionSnapshot) -> CoverageReason:
    if tier is Tier.INDUSTRY or tier not in snapshot.allowed_tiers:
        return CoverageReason.TIER_NOT_COVERED
    usage = quota_usage(snapshot)
    if usage.left_today == 0:
        return CoverageReason.QUOTA_EXHAUSTED
    if tier is Tier.PROFESSIONAL and usage.professional_left == 0:
        return CoverageReason.PROFESSIONAL_QUOTA_EXHAUSTED
    return CoverageReason.COVERED


def _coverage(tier: Tier, snapshot: SubscriptionSnapshot | None, now: datetime) -> CoverageReason:
    if snapshot is None:
        return CoverageReason.NO_SUBSCRIPTION
    return _subscription_reason(snapshot, now) or _tier_reason(tier, snapshot)


def decide_single(
    tier: Tier, snapshot: SubscriptionSnapshot | None, now: datetime
) -> SinglePricing:
    """Decide how one image of ``tier`` is paid at ``now`` (an aware datetime)."""
    _require_aware(now, "now")
    reason = _coverage(tier, snapshot, now)
    if reason is CoverageReason.COVERED:
        return SinglePricing(tier, PricingType.SUBSCRIPTION, 0, reason)
    return SinglePricing(tier, PricingType.CREDITS, TIERS[tier].credits_per_image, reason)


def refund_single(pricing: SinglePricing) -> int:
    """Credits to give back when a single image fails: all of them, or 0 on a subscription.

    Returning the quota unit of a subscription use is the billing layer's job
    (see :attr:`SinglePricing.uses_subscription`).
    """
    return pricing.credits


class ChargedBatch(Protocol):
    """What a refund needs to know about a charged batch (a quote or stored row)."""

    @property
    def count(self) -> int: ...
    @property
    def credits_per_image(self) -> int: ...
    @property
    def discount_pct(self) -> int: ...
    @property
    def total(self) -> int: ...


@dataclass(frozen=True, slots=True)
class BatchCharge:
    """The charge of a batch as stored, for refunds computed later."""

    count: int
    credits_per_image: int
    discount_pct: int
    total: int


def cost_of_successes(batch: ChargedBatch, succeeded: int) -> int:
    """Credits ``succeeded`` images cost at the batch's discount %."""
    base_ok = succeeded * batch.credits_per_image
    return base_ok - base_ok * batch.discount_pct // _PERCENT


def refund_total(batch: ChargedBatch, failed: int) -> int:
    """Credits owed back in all when ``failed`` of the batch's images failed (0..total)."""
    if not 0 <= failed <= batch.count:
        raise RefundError(f"failed count {failed} is outside 0..{batch.count}")
    owed = batch.total - cost_of_successes(batch, batch.count - failed)
    return min(max(owed, 0), batch.total)


def refund_due(batch: ChargedBatch, failed: int, already_refunded: int) -> int:
    """Credits still to refund now, given ``already_refunded``; never negative.

    Refunds issued step by step with a growing ``failed`` sum exactly to
    ``refund_total(batch, final_failed)``, never more than the charge.
    """
    if already_refunded < 0:
        raise RefundError(f"already refunded {already_refunded} is negative")
    return max(0, refund_total(batch, failed) - already_refunded)


def business_date(now: datetime, tz: ZoneInfo) -> date:
    """The business "today" of ``now`` (aware) in the time zone ``tz``."""
    _require_aware(now, "now")
    return now.astimezone(tz).date()
