"""The per-app pages of `contracts/README.md`: what each Lumiku app publishes, what it
listens for, how it correlates, which codes it meets. Text only (pure)."""

from __future__ import annotations

from typing import Final

_COMMON: Final = """\
Every event below is published on JetStream under the deployment prefix; set
`Nats-Msg-Id` to your `event_id` so a retried publish is stored once. The same
`event_id` delivered again is the same request (`<app>:<event_id>`): one batch,
one charge. Unknown fields are ignored. A malformed event is answered with
`bgremove.request.rejected` (`invalid_request`, `path` names the field) and never
charges; an event that asks for nothing is acknowledged and logged with a code
(`setting_off`: no `removal` block and the user's setting is off;
`empty_project`; `not_addressed_to_us`: a `then` step for another service), and
publishes and charges nothing. Either way the next event is served.

Results: store `item.done.result` (`{bucket, key}`), not `url`: presigned URLs
expire (`url_expires_at`). `item.done.source_id` and `item.failed.source_id` echo
your id of the image.
Where the events of your app live is configuration on our side
(`<APP>_STREAM`, `<APP>_DURABLE`, `INTEGRATION_APPS`).
"""

_AVATAR: Final = """\
### Avatar Creator

- Publish `avatar.project.completed` ([schema](schemas/AvatarProjectCompleted.json),
  [example](examples/AvatarProjectCompleted.json)) when a project is finished.
  Add a `removal` block (`tier`, `options`, `then_upscale`, `notify_email`) when
  the user pressed "remove backgrounds"; without one, the user's `avatar-creator`
  setting decides (`bgremove.settings.*`).
- The avatars become one batch, paid in credits up front with the volume
  discount (20 avatars or more: 5 % off). Listen for `bgremove.batch.accepted`
  (or `bgremove.request.rejected`: `insufficient_credits`, `forbidden_source`,
  `no_runnable_images`, ...), one `bgremove.item.done` or `bgremove.item.failed`
  per avatar, and one `bgremove.batch.completed`.
- Correlation: `{app: "avatar-creator", ref: <project_id>}` unless the event
  carries its own `correlation`; each `item.done` and `item.failed` names the avatar
  in `source_id`.
"""

_POSE: Final = """\
### Pose Generator

- Publish `pose.generated` ([schema](schemas/PoseGenerated.json),
  [example](examples/PoseGenerated.json)); a `removal` block asks for it, else
  the user's `pose-generator` setting decides.
- One image: the subscription's daily quota pays when the plan covers the tier
  and quota is left, else credits (`batch.accepted.pricing_type`).
- Correlation: `{app: "pose-generator", ref: <generation_id or pose_id>}`; fill
  your `background_removed` reference from `item.done.result` (and show
  `item.done.url` while it is valid).
"""

_UPSCALER: Final = """\
### Upscaler

- Remove-then-upscale: `then_upscale: {scale}` on a `bgremove.batch.requested`
  or `bgremove.image.requested`, in a `removal` block or in the user's setting
  makes us publish one `upscaler.requested`
  ([schema](schemas/UpscalerRequested.json),
  [example](examples/UpscalerRequested.json)) for each finished image, right
  after its `item.done`: `image` is `item.done.result` (`{bucket, key}`), `url`,
  `url_expires_at`, `content_type`, `filename` and `item_id` are the
  `item.done`'s, `scale` is the factor asked for, `tier` and `correlation` the
  original request's. `request_id` (`<item_id>.upscale`) is stable per image:
  your idempotency key. A failed image is handed nothing; the same request
  delivered again hands nothing over again.
- Upscale-then-remove: publish `upscaler.completed`
  ([schema](schemas/UpscalerCompleted.json),
  [example](examples/UpscalerCompleted.json)) with
  `then: {service: "bgremove", tier, options}`; the upscaled `result` becomes a
  single image (quota first), correlated with the event's `correlation` or
  `{app: "upscaler", ref: <job_id>}`, `item.done.source_id` = `job_id`. A `then`
  for another service is ignored. We never hand a result of this pipeline back
  to the Upscaler (no loops).
"""

_SETTINGS: Final = """\
### Settings and e-mail

- `bgremove.settings.get` / `bgremove.settings.set` (request-reply, owner only):
  per user and app (`avatar-creator`, `pose-generator`, `upscaler`): `enabled`,
  `tier`, `options`, `then_upscale`. An app never set reads as off. Operators:
  `lumiku-bgremover settings set|show`.
- `notify_email` on a batch or image request (or a `removal` block) e-mails the
  user once when the batch is final: counts, credits charged and refunded, the
  ZIP link (the optional `lumiku-bgremover notifier` role sends it).
"""

#: The section of `contracts/README.md` for the other Lumiku apps.
_SECTIONS: Final = ("## For each Lumiku app\n", _COMMON, _AVATAR, _POSE, _UPSCALER, _SETTINGS)
APPS_TEXT: Final = "\n".join(_SECTIONS)
