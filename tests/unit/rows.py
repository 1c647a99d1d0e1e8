"""Typed batch and item rows for tests of the pipeline's decisions."""

import dataclasses
from datetime import UTC, datetime
from typing import Any

from lumiku_bgremover.contracts.common import (
    ImageRef,
    OutputOptions,
    PricingType,
    RequestMode,
    Tier,
)
from lumiku_bgremover.contracts.work import Lane
from lumiku_bgremover.db import batches as repo

T0 = datetime(2025, 1, 31, 8, 0, tzinfo=UTC)


def batch(**changes: Any) -> repo.Batch:
    """A standard batch of 20 at 5 % off (152 credits), processing, changed by `changes`."""
    base = repo.Batch(
        id="b1", request_id="r1", user_id="u1", tier=Tier.STANDARD, mode=RequestMode.BATCH,
        lane=Lane.BULK, status=repo.BatchState.PROCESSING, pricing_type=PricingType.CREDITS,
        total_items=20, succeeded=0, failed=0, cancelled=0, failed_at_intake=0,
        credits_per_image=8, base_total=160, discount_pct=5, discount=8, credits_charged=152,
        credits_refunded=0, options=OutputOptions(), correlation=None, subscription_id=None,
        quota_key=None, archive_bucket=None, archive_key=None, created_at=T0, updated_at=T0,
        completed_at=None, completion_announced_at=None,
    )  # fmt: skip
    return dataclasses.replace(base, **changes)


def item(**changes: Any) -> repo.Item:
    """A pending item of batch b1."""
    base = repo.Item(
        id="b1-000", batch_id="b1", idx=0, filename="a.png",
        source=ImageRef(bucket="bkt", key="originals/u1/a.png"), declared_size=None,
        status=repo.ItemState.PENDING, attempts=0, result_bucket=None, result_key=None,
        result_size=None, width=None, height=None, content_type=None, engine=None, model=None,
        processing_ms=None, cost_idr=None, error_code=None, error_message=None,
        finished_at=None,
    )  # fmt: skip
    return dataclasses.replace(base, **changes)
