"""Generation with interventions held on: "inject feature X and the model now says Y", as text.

Generation runs unconstrained (attention, norms and MLPs respond at every new token); an
intervention at "all" positions or at a slice such as `slice(5, None)` also acts on the tokens
generated so far.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from tl_clt.errors import InputError
from tl_clt.interventions import Intervention, check_interventions, run_interventions
from tl_clt.replacement import ReplacementModel, check_call
from tl_clt.targets import token_id
from tl_clt.tokenization import visible


@dataclass
class Generation:
    """A continuation of `prompt` without and with the interventions."""

    prompt: str
    interventions: tuple[Intervention, ...]
    before: list[str]  # generated tokens without interventions (decoded text of each)
    after: list[str]  # generated tokens with them
    text_before: str = ""  # the continuation without interventions, as running text
    text_after: str = ""

    def __str__(self) -> str:
        show = lambda t: visible(t, spaces=False)  # noqa: E731
        return (
            f"{show(self.prompt)}\n  without: {show(self.text_before)}\n  "
            f"with:    {show(self.text_after)}"
        )


def continue_text(
    rm: ReplacementModel,
    tokens: torch.Tensor,
    interventions: Sequence[Intervention],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
    stop: Sequence[str | int] = (),
    error: bool = True,
) -> list[int]:
    """Token ids generated after `tokens` [1, pos], one full forward pass per token, stopping
    after any token of `stop` (each one token's text or id, as `attribute`'s targets)."""
    n_prompt = tokens.shape[-1]
    if isinstance(stop, str | int):
        stop = [stop]
    stop_ids = {token_id(rm.lens, t) for t in stop}
    out: list[int] = []
    for _ in tqdm(
        range(max_new_tokens), desc="generating", leave=False, disable=max_new_tokens < 32
    ):
        if tokens.shape[-1] >= rm.lens.n_ctx:
            break
        logits, _ = run_interventions(
            rm, tokens, interventions, mode="unconstrained", error=error, n_prompt=n_prompt
        )
        last = logits[0, -1].float()
        if temperature > 0:
            probs = (last / temperature).softmax(-1)
            next_id = int(torch.multinomial(probs.cpu(), 1, generator=generator))
        else:
            next_id = int(last.argmax())
        out.append(next_id)
        tokens = torch.cat([tokens, torch.tensor([[next_id]], device=tokens.device)], dim=-1)
        if next_id in stop_ids:
            break
    return out


def generate(
    rm: ReplacementModel | Any,  # checked in the body: a wrong order is an InputError
    prompt: str | Any,
    interventions: Sequence[Intervention] | Intervention = (),
    *,
    max_new_tokens: int = 8,
    temperature: float = 0.0,
    seed: int = 0,
    stop: Sequence[str | int] = (),
    error: bool = True,
) -> Generation:
    """Greedy (temperature 0) or sampled continuations of `prompt` without and with the
    interventions, stopping early at any token in `stop` (each one token, named by its text or
    id as a target is: text of several tokens is an `InputError`)."""
    check_call("generate", rm, prompt)
    if isinstance(interventions, Intervention):
        interventions = [interventions]
    if max_new_tokens < 1:
        raise InputError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    tokens = rm.lens.tokens(prompt)
    check_interventions(rm, interventions, tokens.shape[-1])
    runs = []
    for ivs in ((), tuple(interventions)):
        gen = torch.Generator().manual_seed(seed)
        runs.append(continue_text(rm, tokens, ivs, max_new_tokens=max_new_tokens,
                                  temperature=temperature, generator=gen, stop=stop, error=error))  # fmt: skip
    lens = rm.lens
    text = prompt if isinstance(prompt, str) else lens.decode(tokens)
    return Generation(text, tuple(interventions), *(lens.token_texts(ids) for ids in runs),
                      *(lens.decode(ids) for ids in runs))  # fmt: skip
