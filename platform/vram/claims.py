"""Check the sizing claims of the original brief against the VRAM model."""

from __future__ import annotations

from dataclasses import dataclass

from gemma_fleet.catalog import Catalog, GpuSpec
from gemma_fleet.catalog.schema import BriefClaim
from gemma_fleet.vram.profile import VramProfile, compute_profile

# A claim is judged at a short context, the most generous reading of "runs on".
CLAIM_CONTEXT = 4096


@dataclass(frozen=True)
class ClaimVerdict:
    claim: BriefClaim
    profile: VramProfile  # the configuration on a GPU of exactly the claimed size

    @property
    def holds(self) -> bool:
        return self.profile.fits

    @property
    def verdict(self) -> str:
        needed = self.profile.min_gpu_memory_bytes / 1e9
        if self.holds:
            return f"holds: needs {needed:.1f} GB"
        weights = self.profile.weight_bytes / 1e9
        return (
            f"does not hold: weights alone are {weights:.1f} GB; serving one "
            f"{CLAIM_CONTEXT:,}-token sequence needs a {needed:.1f} GB GPU"
        )


def check_claims(catalog: Catalog) -> list[ClaimVerdict]:
    verdicts = []
    for claim in catalog.claims:
        model = catalog.model(claim.model)
        gpu = GpuSpec(
            name=f"{claim.gpu_memory_gb:g} GB GPU",
            memory_gb=claim.gpu_memory_gb,
            bandwidth_gbs=1,  # irrelevant to memory
            bf16_tflops=1,
            interconnect="pcie",
        )
        prof = compute_profile(
            model,
            gpu,
            catalog.quant(claim.quant),
            vocab_size=catalog.family.vocab_size,
            max_model_len=CLAIM_CONTEXT,
        )
        verdicts.append(ClaimVerdict(claim=claim, profile=prof))
    return verdicts
