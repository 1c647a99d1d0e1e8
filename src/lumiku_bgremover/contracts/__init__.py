"""The message contracts: msgspec Structs for every message in and out, and their codec.

Pure code, no I/O. Subjects and the registry live in `contracts.subjects`,
CloudEvents headers in `contracts.cloudevents`; `contracts.generate` writes the
JSON Schemas, the AsyncAPI document and the README under `contracts/`.
"""

from lumiku_bgremover.contracts.admin import (
    CreditBalanceReply,
    CreditBalanceRequest,
    CreditGrantReply,
    CreditGrantRequest,
    GrantReason,
    SubscriptionInfo,
    SubscriptionReply,
    SubscriptionSetRequest,
    SubscriptionShowRequest,
)
from lumiku_bgremover.contracts.codec import (
    ContractError,
    Identity,
    classify,
    decode,
    decode_reply,
    encode,
    peek_identity,
)
from lumiku_bgremover.contracts.codes import FailCode, RejectCode
from lumiku_bgremover.contracts.common import (
    BatchStatus,
    Correlation,
    ImageRef,
    ObjectRef,
    OutputFormat,
    OutputOptions,
    Plan,
    PricingType,
    RequestMode,
    Tier,
)
from lumiku_bgremover.contracts.inbound import (
    BatchCancel,
    BatchRequested,
    ImageInput,
    ImageRequested,
    UpscaleStep,
)
from lumiku_bgremover.contracts.integrations import (
    AvatarImage,
    AvatarProjectCompleted,
    PoseGenerated,
    UpscalerCompleted,
)
from lumiku_bgremover.contracts.outbound import (
    BatchAccepted,
    BatchCompleted,
    BatchProgress,
    ItemDone,
    ItemFailed,
    RequestRejected,
    UpscalerRequested,
)
from lumiku_bgremover.contracts.replies import (
    BatchStatusReply,
    BatchStatusRequest,
    ErrorReply,
    QuoteReply,
    QuoteRequest,
)
from lumiku_bgremover.contracts.work import Lane, WorkItem

__all__ = [
    "AvatarImage",
    "AvatarProjectCompleted",
    "BatchAccepted",
    "BatchCancel",
    "BatchCompleted",
    "BatchProgress",
    "BatchRequested",
    "BatchStatus",
    "BatchStatusReply",
    "BatchStatusRequest",
    "ContractError",
    "Correlation",
    "CreditBalanceReply",
    "CreditBalanceRequest",
    "CreditGrantReply",
    "CreditGrantRequest",
    "ErrorReply",
    "FailCode",
    "GrantReason",
    "Identity",
    "ImageInput",
    "ImageRef",
    "ImageRequested",
    "ItemDone",
    "ItemFailed",
    "Lane",
    "ObjectRef",
    "OutputFormat",
    "OutputOptions",
    "Plan",
    "PoseGenerated",
    "PricingType",
    "QuoteReply",
    "QuoteRequest",
    "RejectCode",
    "RequestMode",
    "RequestRejected",
    "SubscriptionInfo",
    "SubscriptionReply",
    "SubscriptionSetRequest",
    "SubscriptionShowRequest",
    "Tier",
    "UpscaleStep",
    "UpscalerCompleted",
    "UpscalerRequested",
    "WorkItem",
    "classify",
    "decode",
    "decode_reply",
    "encode",
    "peek_identity",
]
