"""The hosted-fake scenario: both fake providers, keys, routing and scripted faults.

`lumiku-bgremover demo --engine hosted-fake` (and tests) use it to show the hosted
engines' routing, retries and circuit breaker without real keys: every tier routes as
in production (basic/standard to Hugging Face, professional/industry to Segmind), each
tier's fallback is the other provider, and the tier's own provider is scripted to
answer a 503 "model loading", then a 429 (rate limited), then once normally (the
retries rode them out), then a burst of 500s that
opens its breaker, so the fallback serves the rest.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, replace
from typing import Final

from lumiku_bgremover.contracts.common import Tier
from lumiku_bgremover.engine_settings import DEFAULT_ROUTES, EngineSettings, Resilience, Route
from lumiku_bgremover.engines.fakes.providers import FakeHuggingFace, FakeSegmind
from lumiku_bgremover.engines.fakes.server import FakeServer, Fault

__all__ = ["DEMO_RESILIENCE", "HostedFakes", "hosted_fakes"]

#: Quick retries and a breaker that opens after three failures (the demo's, and tests').
DEMO_RESILIENCE: Final = Resilience(
    attempts=3, backoff_base_s=0.05, backoff_cap_s=0.2, max_wait_s=5.0,
    breaker_failures=3, breaker_cooldown_s=60.0,
)  # fmt: skip
#: Each tier's fallback: the other provider.
FALLBACKS: Final = {
    Tier.BASIC: Route(engine="segmind", model="birefnet-general"),
    Tier.STANDARD: Route(engine="segmind", model="birefnet-general"),
    Tier.PROFESSIONAL: Route(engine="huggingface", model="briaai/RMBG-1.4"),
    Tier.INDUSTRY: Route(engine="huggingface", model="briaai/RMBG-1.4"),
}
#: How many 500s the burst holds (more than the breaker needs: it opens first).
BURST: Final = 9


@dataclass(frozen=True, slots=True)
class HostedFakes:
    """The two running fake providers."""

    huggingface: FakeHuggingFace
    segmind: FakeSegmind

    def settings(self, base: EngineSettings) -> EngineSettings:
        """`base` with keys, endpoints, the production routes, fallbacks and quick retries."""
        hf, sg = self.huggingface, self.segmind
        return replace(
            base, hf_token=hf.token, hf_endpoint=f"{hf.url}/hf-inference", hf_router=hf.url,
            segmind_api_key=sg.api_key, segmind_endpoint=sg.url, routes=dict(DEFAULT_ROUTES),
            fallbacks=dict(FALLBACKS), resilience=DEMO_RESILIENCE, keyless="error",
        )  # fmt: skip

    def primary(self, tier: Tier) -> FakeServer:
        """The fake server of the tier's own provider."""
        return self.huggingface if DEFAULT_ROUTES[tier].engine == "huggingface" else self.segmind

    def script(self, tier: Tier, *, delay_s: float = 0.3) -> list[str]:
        """Queue the faults on the tier's provider; what was queued, in words."""
        faults = [Fault("loading", seconds=delay_s), Fault("rate_limited", seconds=delay_s)]
        faults += [Fault("slow", seconds=0.0)]  # answered normally: the retries paid off
        faults += [Fault.http(500)] * BURST
        self.primary(tier).push(*faults)
        engine = DEFAULT_ROUTES[tier].engine
        return [
            (
                f"scripted on {engine}: 503 model loading ({delay_s:g} s), 429 rate limited "
                f"({delay_s:g} s), one normal answer, then {BURST} x 500"
            ),
            (
                f"expect: retries ride out the 503 and 429; the 500s open {engine}'s breaker after "
                f"{DEMO_RESILIENCE.breaker_failures} failures and {FALLBACKS[tier].engine} serves"
            ),
        ]

    def summary(self) -> list[str]:
        """One line per fake provider: requests it served, by path."""
        lines = []
        for name, server in (("huggingface", self.huggingface), ("segmind", self.segmind)):
            paths: dict[str, int] = {}
            for request in server.requests:
                key = f"{request.method} {request.path}"
                paths[key] = paths.get(key, 0) + 1
            shown = ", ".join(f"{path} x{count}" for path, count in sorted(paths.items()))
            lines.append(f"fake {name}: {len(server.requests)} requests ({shown or 'none'})")
        return lines


@contextmanager
def hosted_fakes() -> Iterator[HostedFakes]:
    """Both fake providers, serving on 127.0.0.1 until the block ends."""
    with ExitStack() as stack:
        hf = stack.enter_context(FakeHuggingFace(models=("briaai/RMBG-1.4",), polls_before_done=1))
        sg = stack.enter_context(FakeSegmind())
        yield HostedFakes(hf, sg)
