"""Retention as bucket lifecycle rules: which prefixes expire after how many days.

The rules are ours by their id prefix; rules an operator added to the bucket by hand
(any other id) are kept when ours are replaced.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from minio.commonconfig import ENABLED, Filter
from minio.lifecycleconfig import AbortIncompleteMultipartUpload, Expiration, Rule

from lumiku_bgremover.settings import RetentionSettings
from lumiku_bgremover.storage.base import ENGINE_INPUTS_PREFIX

__all__ = [
    "ENGINE_INPUTS_DAYS",
    "RULE_ID_PREFIX",
    "ExpiryRule",
    "expiry_rules",
    "lifecycle_rules",
    "merge_rules",
]

#: Id prefix of the lifecycle rules this service owns.
RULE_ID_PREFIX: Final = "lumiku-bgremover-"
#: Days after which an unfinished multipart upload (a ZIP cut short) is aborted.
ABORT_UPLOADS_DAYS: Final = 1
#: Days after which a lent engine input expires: a backstop, each is deleted after its call
#: (one day is the shortest expiry S3 lifecycle rules know).
ENGINE_INPUTS_DAYS: Final = 1


@dataclass(frozen=True, slots=True)
class ExpiryRule:
    """Objects under `prefix` expire `days` days after they were written."""

    prefix: str
    days: int

    @property
    def rule_id(self) -> str:
        """The rule's id on the bucket: `lumiku-bgremover-expire-results`."""
        return f"{RULE_ID_PREFIX}expire-{self.prefix.strip('/')}"


def expiry_rules(retention: RetentionSettings) -> tuple[ExpiryRule, ...]:
    """One rule per prefix with a retention (0 days keeps the prefix forever), and always
    the engine inputs' rule (`ENGINE_INPUTS_PREFIX`, whatever SEGMIND_IMAGE_TRANSPORT says:
    copies left by an earlier configuration or a crash expire too)."""
    pairs = (
        ("originals/", retention.originals_days),
        ("results/", retention.results_days),
        ("archives/", retention.archives_days),
    )
    kept = tuple(ExpiryRule(prefix, days) for prefix, days in pairs if days > 0)
    return (*kept, ExpiryRule(ENGINE_INPUTS_PREFIX, ENGINE_INPUTS_DAYS))


def lifecycle_rules(rules: Sequence[ExpiryRule]) -> list[Rule]:
    """Our rules as S3 lifecycle rules, plus one aborting stale multipart uploads."""
    expiring = [
        Rule(
            ENABLED,
            rule_filter=Filter(prefix=rule.prefix),
            rule_id=rule.rule_id,
            expiration=Expiration(days=rule.days),
        )
        for rule in rules
    ]
    if not expiring:
        return []
    abort = Rule(
        ENABLED,
        rule_filter=Filter(prefix=""),
        rule_id=f"{RULE_ID_PREFIX}abort-uploads",
        abort_incomplete_multipart_upload=AbortIncompleteMultipartUpload(ABORT_UPLOADS_DAYS),
    )
    return [*expiring, abort]


def merge_rules(live: Sequence[Rule], ours: Sequence[Rule]) -> list[Rule]:
    """The bucket's rules that are not ours, followed by ours."""
    kept = [rule for rule in live if not (rule.rule_id or "").startswith(RULE_ID_PREFIX)]
    return [*kept, *ours]
