"""Routing policy at every capability x context boundary, with pools down and saturated."""

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gemma_fleet.catalog import Modality, load_catalog
from gemma_fleet.routing import SATURATED, PoolView, RequestNeeds, RoutingError, route
from gemma_fleet.vram import text_params

CATALOG = load_catalog()
TEXT, IMAGE, AUDIO, VIDEO = Modality.TEXT, Modality.IMAGE, Modality.AUDIO, Modality.VIDEO


def view(name: str, model: str, max_model_len: int, *, text_only: bool = False) -> PoolView:
    spec = CATALOG.model(model)
    modalities = frozenset({TEXT}) if text_only else frozenset(spec.modalities)
    return PoolView(name, model, max_model_len, modalities,
                    size_rank=text_params(spec, CATALOG.family.vocab_size))  # fmt: skip


FLEET = [
    view("e2b", "gemma-4-E2B", 131_072),
    view("e4b", "gemma-4-E4B", 131_072),
    view("moe", "gemma-4-26B-A4B", 262_144),
    view("dense-32k", "gemma-4-31B", 32_768, text_only=True),
    view("dense-256k", "gemma-4-31B", 262_144),
]
ALIASES = {"gemma-4": [p.name for p in FLEET]}


def needs(prompt: int, out: int = 0, *media: Modality) -> RequestNeeds:
    return RequestNeeds(prompt, out, frozenset({TEXT, *media}))


def pick(n: RequestNeeds, requested: str = "gemma-4", pools: list[PoolView] = FLEET) -> str:
    return route(n, requested, pools, aliases=ALIASES).pool


def test_alias_picks_the_smallest_capable_model() -> None:
    assert pick(needs(100, 100)) == "e2b"


@pytest.mark.parametrize(
    ("total", "expected"),
    [(131_072, "e2b"), (131_073, "moe"), (262_144, "moe")],
)
def test_context_boundary_of_the_small_models(total: int, expected: str) -> None:
    assert pick(needs(total - 10, 10)) == expected


def test_beyond_every_pool_is_a_400_naming_the_need() -> None:
    with pytest.raises(RoutingError) as err:
        pick(needs(262_100, 45))
    assert err.value.status == 400
    assert "262,145" in err.value.message


def test_exact_fit_is_served_and_one_more_token_is_refused() -> None:
    assert pick(needs(32_000, 768), "dense-32k") == "dense-32k"
    with pytest.raises(RoutingError, match="holds 32,768 tokens"):
        pick(needs(32_000, 769), "dense-32k")


@pytest.mark.parametrize("model", ["gemma-4-26B-A4B", "gemma-4-31B", "moe", "dense-256k"])
def test_audio_never_reaches_the_big_models(model: str) -> None:
    with pytest.raises(RoutingError) as err:
        pick(needs(100, 10, AUDIO), model)
    assert err.value.status == 400
    assert "does not take audio" in err.value.message
    assert err.value.capable_models == ["e2b", "e4b"]


def test_audio_through_the_alias_goes_to_a_small_model() -> None:
    assert pick(needs(100, 10, AUDIO)) == "e2b"
    assert pick(needs(100, 10, AUDIO), pools=[replace(FLEET[0], healthy=False), *FLEET[1:]]) == (
        "e4b"
    )


def test_audio_with_long_context_has_no_pool() -> None:
    with pytest.raises(RoutingError) as err:
        pick(needs(140_000, 10, AUDIO))
    assert err.value.status == 400


def test_text_only_pool_takes_no_images() -> None:
    with pytest.raises(RoutingError, match=r"dense-32k .* does not take image"):
        pick(needs(100, 10, IMAGE), "dense-32k")
    assert pick(needs(100, 10, IMAGE), "gemma-4-31B") == "dense-256k"
    assert pick(needs(100, 10, VIDEO)) == "e2b"


def test_concrete_model_is_honoured_even_when_a_smaller_one_could_serve() -> None:
    assert pick(needs(100, 10), "gemma-4-31B") == "dense-32k"


def test_down_pool_is_skipped_and_all_down_is_503() -> None:
    down = [replace(p, healthy=False) if p.model == "gemma-4-E2B" else p for p in FLEET]
    assert pick(needs(100, 10), pools=down) == "e4b"
    with pytest.raises(RoutingError) as err:
        pick(needs(100, 10), "gemma-4-E2B", pools=down)
    assert err.value.status == 503 and err.value.retry_after_s


def test_saturated_small_pool_overflows_to_a_bigger_one() -> None:
    busy = [replace(p, load=SATURATED) if p.name == "e2b" else p for p in FLEET]
    decision = route(needs(100, 10), "gemma-4", busy, aliases=ALIASES)
    assert decision.pool == "e4b"
    assert decision.reason == "smaller capable pool saturated"


def test_all_saturated_goes_to_the_smallest_then_least_loaded() -> None:
    busy = [replace(p, load=SATURATED + i / 10) for i, p in enumerate(FLEET)]
    decision = route(needs(100, 10, AUDIO), "gemma-4", busy, aliases=ALIASES)
    assert decision.pool == "e2b"
    assert "saturated" in decision.reason


def test_team_policy_limits_models() -> None:
    allowed = frozenset({"gemma-4-31B"})
    assert route(needs(10, 10), "gemma-4", FLEET, aliases=ALIASES,
                 allowed_models=allowed).pool == "dense-32k"  # fmt: skip
    with pytest.raises(RoutingError) as err:
        route(needs(10, 10, AUDIO), "gemma-4-E2B", FLEET, allowed_models=allowed)
    assert err.value.status == 403


def test_unknown_model_is_404_listing_known_ones() -> None:
    with pytest.raises(RoutingError) as err:
        pick(needs(1, 1), "gpt-5")
    assert err.value.status == 404 and "gemma-4-E2B" in err.value.message


media = st.frozensets(st.sampled_from([IMAGE, AUDIO, VIDEO]), max_size=3)
states = st.lists(st.tuples(st.booleans(), st.floats(0, 2)), min_size=5, max_size=5)


@settings(max_examples=300, deadline=None)
@given(prompt=st.integers(1, 270_000), out=st.integers(0, 8192), extra=media, state=states)
def test_chosen_pool_can_always_serve(
    prompt: int, out: int, extra: frozenset[Modality], state: list[tuple[bool, float]]
) -> None:
    pools = [replace(p, healthy=h, load=load) for p, (h, load) in zip(FLEET, state, strict=True)]
    n = RequestNeeds(prompt, out, frozenset({TEXT}) | extra)
    capable = [
        p for p in pools if n.modalities <= p.modalities and n.total_tokens <= p.max_model_len
    ]
    try:
        chosen = next(p for p in pools if p.name == pick(n, pools=pools))
    except RoutingError as err:
        assert not any(p.healthy for p in capable)
        assert err.status == (400 if not capable else 503)
        return
    assert chosen in capable and chosen.healthy
    if any(p.healthy and p.load < SATURATED for p in capable):
        assert chosen.load < SATURATED


def test_n_sequences_each_hold_the_context_and_are_reserved_in_total() -> None:
    n4 = replace(needs(1_000, 500), sequences=4)
    assert n4.context_tokens == 1_500  # what one sequence holds: routing checks this
    assert n4.total_tokens == 1_000 + 4 * 500  # the prompt once, every sequence's output
    assert pick(replace(needs(131_072 - 500, 500), sequences=4)) == "e2b"  # fits per sequence


def test_n_above_a_pools_batch_is_refused_naming_n() -> None:
    small = [replace(p, max_num_seqs=2) if p.name == "e2b" else p for p in FLEET]
    with pytest.raises(RoutingError) as err:
        pick(replace(needs(100, 10), sequences=3), "e2b", small)
    assert (err.value.status, err.value.param) == (400, "n")
    assert "at most 2 sequences" in err.value.message
    assert pick(replace(needs(100, 10), sequences=3), "gemma-4", small) == "e4b"
    assert pick(replace(needs(100, 10), sequences=2), "e2b", small) == "e2b"
    # Too long for the pool as well: fewer choices would not help, so the refusal is the model's.
    with pytest.raises(RoutingError) as both:
        pick(replace(needs(200_000, 10), sequences=3), "e2b", small)
    assert both.value.param == "model"
