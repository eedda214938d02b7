"""Benchmark the llama.cpp backend: batched vs sequential drafting, scoring with vs without prefix cache.

Run with the project venv::

    .venv/bin/python bench/bench_llm.py [--drafts 5] [--max-tokens 96] [--threads N]

Uses the default drafter and verifier from the settings (packaged models, assembled on first use).
Run it on an otherwise idle machine: anything else on the CPU changes the numbers a lot.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from app.llm.llamacpp import LlamaCppModel
from app.llm.protocol import ChatPrompt, Generation, Message, ScoreRequest, ScoreResult
from app.models import resolve_model
from app.settings import LLMSettings, get_settings
from graphs import prompting
from graphs.drafting import format_passages, parse_reply
from graphs.state import Passage

T = TypeVar("T")

# Five questions, two evidence passages of ~120 words each.
CASES: list[tuple[str, str, str]] = [
    (
        "Which river flows through both Vienna and Budapest?",
        "The Danube is the second-longest river in Europe after the Volga. It rises in the Black Forest "
        "in Germany and flows for about 2,850 kilometres towards the south-east, passing through or "
        "touching the borders of ten countries before it empties into the Black Sea through a wide delta "
        "in Romania and Ukraine. Four national capitals lie on its banks: Vienna, Bratislava, Budapest and "
        "Belgrade. For centuries the river was an important trade route and a frontier of the Roman "
        "Empire, and many fortresses and towns were built along it. Today it is connected to the Rhine "
        "by the Main-Danube Canal, which lets barges travel from the North Sea to the Black Sea, and it "
        "is used for shipping, hydroelectric power, irrigation and tourism.",
        "Budapest, the capital of Hungary, was formed in 1873 by the union of Buda and Óbuda on the "
        "west bank of the river with Pest on the east bank. The city is famous for its bridges, the "
        "oldest of which, the Széchenyi Chain Bridge, opened in 1849. Vienna, the capital of Austria, "
        "lies about 240 kilometres upstream. Although the historic centre of Vienna is a short distance "
        "from the main channel, the city has several arms of the river, including the Donaukanal, and "
        "the Danube Island, a long artificial island built for flood protection that is now a popular "
        "recreation area. Passenger boats and hydrofoils link the two cities in the summer season, and "
        "the journey takes roughly five to six hours downstream.",
    ),
    (
        "Who developed the theory of general relativity?",
        "Albert Einstein was a German-born theoretical physicist who is widely regarded as one of the "
        "greatest physicists of all time. He is best known for developing the theory of relativity. In "
        "1905, his so-called miracle year, he published four groundbreaking papers on the photoelectric "
        "effect, Brownian motion, special relativity and the equivalence of mass and energy. Ten years "
        "later, in November 1915, he presented the field equations of general relativity to the "
        "Prussian Academy of Sciences in Berlin. The theory describes gravity not as a force but as a "
        "consequence of the curvature of spacetime caused by mass and energy. He received the 1921 Nobel "
        "Prize in Physics for his services to theoretical physics and his explanation of the "
        "photoelectric effect.",
        "General relativity made several predictions that were later confirmed by observation. The "
        "first was the bending of starlight by the Sun, measured during the total solar eclipse of 29 May "
        "1919 by expeditions led by Arthur Eddington and Frank Dyson to Príncipe and Sobral. The theory "
        "also explained the anomalous precession of the perihelion of Mercury, which Newtonian gravity "
        "could not account for. Later tests included the gravitational redshift of light, the time delay "
        "of radar signals passing near the Sun, and the direct detection of gravitational waves by the "
        "LIGO observatories in September 2015, exactly a century after the theory was completed. "
        "Satellite navigation systems must also correct for relativistic effects on their clocks.",
    ),
    (
        "What is the largest ocean on Earth?",
        "The Pacific Ocean is the largest and deepest of Earth's five oceanic divisions. It extends from "
        "the Arctic Ocean in the north to the Southern Ocean in the south and is bounded by Asia and "
        "Australia in the west and the Americas in the east. It covers about 165 million square "
        "kilometres, roughly one third of the surface of the planet, which is more than all of the land "
        "area of Earth combined. The Mariana Trench in its western part contains the deepest known point "
        "in the oceans, the Challenger Deep, at almost 11,000 metres below sea level. The name of the "
        "ocean comes from the Portuguese explorer Ferdinand Magellan, who called it the peaceful sea in "
        "1521.",
        "The Atlantic Ocean is the second-largest ocean, with an area of about 106 million square "
        "kilometres. It separates the Americas from Europe and Africa and is connected to the Pacific "
        "through the Drake Passage and the Panama Canal. The Indian Ocean, the third-largest, lies "
        "between Africa, Asia and Australia and is the warmest ocean. The Southern Ocean surrounds "
        "Antarctica, and the Arctic Ocean, the smallest and shallowest, is covered by sea ice for much of "
        "the year. Ocean currents such as the Gulf Stream move heat from the tropics towards the poles "
        "and strongly influence the climate of the surrounding continents, especially western Europe, "
        "which is milder than other regions at the same latitude.",
    ),
    (
        "In which year did the first human land on the Moon?",
        "Apollo 11 was the American spaceflight that first landed humans on the Moon. Commander Neil "
        "Armstrong and lunar module pilot Buzz Aldrin landed the lunar module Eagle on 20 July 1969 in "
        "the Sea of Tranquility, while Michael Collins remained in lunar orbit aboard the command module "
        "Columbia. Armstrong became the first person to step onto the lunar surface six hours later and "
        "was followed by Aldrin about twenty minutes after. The two astronauts spent about two and a "
        "quarter hours outside the spacecraft and collected 21.5 kilograms of lunar material. The crew "
        "returned to Earth and splashed down in the Pacific Ocean on 24 July 1969, fulfilling the goal set "
        "by President John F. Kennedy in 1961.",
        "The Apollo programme was carried out by NASA between 1961 and 1972. It used the Saturn V "
        "rocket, which remains one of the most powerful rockets ever flown. After Apollo 11, five more "
        "missions landed on the Moon: Apollo 12, 14, 15, 16 and 17, while Apollo 13 had to abort its "
        "landing after an oxygen tank exploded on the way to the Moon. In total twelve astronauts walked "
        "on the lunar surface. The later missions carried the Lunar Roving Vehicle, which allowed the "
        "crews to travel several kilometres from the landing site. Apollo 17 in December 1972 was the "
        "last crewed mission to the Moon, and no human has left low Earth orbit since then.",
    ),
    (
        "What gas do plants absorb from the atmosphere for photosynthesis?",
        "Photosynthesis is the process by which green plants, algae and some bacteria convert light "
        "energy into chemical energy. In plants it takes place mainly in the chloroplasts of leaf cells, "
        "which contain the green pigment chlorophyll. During the light-dependent reactions, water "
        "molecules are split and oxygen is released as a by-product. In the Calvin cycle, the plant takes "
        "in carbon dioxide from the air through small pores called stomata and fixes it into sugars using "
        "the enzyme RuBisCO, which is probably the most abundant protein on Earth. The overall reaction "
        "turns six molecules of carbon dioxide and six molecules of water into one molecule of glucose "
        "and six molecules of oxygen.",
        "The opening and closing of stomata is controlled by guard cells and depends on light, "
        "humidity and the concentration of carbon dioxide inside the leaf. When the stomata are open, "
        "the plant can take up the gas it needs, but it also loses water vapour through transpiration. "
        "Plants in hot, dry climates have evolved special pathways to reduce this loss: C4 plants such as "
        "maize and sugar cane concentrate carbon dioxide in specialised cells, while CAM plants such as "
        "cacti open their stomata only at night. Rising atmospheric carbon dioxide levels can increase "
        "the growth of some crops, an effect known as carbon fertilisation, although higher temperatures "
        "may offset the gains.",
    ),
]


def _passages() -> list[Passage]:
    """The ten evidence passages of CASES as retrieved passages (one pool, as retrieval would return)."""
    texts = [(i, t) for i, (_, *ps) in enumerate(CASES) for t in ps]
    return [
        Passage(id=f"p{j}", doc_id=f"d{i}", title=f"Document {j + 1}", text=t, score=1.0, round=0)
        for j, (i, t) in enumerate(texts)
    ]


@dataclass
class Row:
    """One line of the results table."""

    label: str
    seconds: float
    tokens: int
    unit: str

    def render(self) -> str:
        rate = self.tokens / self.seconds if self.seconds > 0 else float("nan")
        return f"| {self.label:48s} | {self.seconds:8.2f} | {self.tokens:7d} | {rate:8.1f} {self.unit:9s} |"


REPEAT = 2  # each measurement is repeated (interleaved) and the fastest kept: the CPU is shared


def _timed(fn: Callable[[], T]) -> tuple[T, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _best_of(fns: Sequence[Callable[[], T]], repeat: int) -> list[tuple[T, float]]:
    """Run the functions in turn ``repeat`` times; keep each one's last output and fastest time."""
    best: list[tuple[T, float] | None] = [None] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            out, seconds = _timed(fn)
            prev = best[i]
            best[i] = (out, seconds if prev is None else min(seconds, prev[1]))
    return [b for b in best if b is not None]


def _load(settings: LLMSettings, threads: int, n_seq_max: int) -> LlamaCppModel:
    path = resolve_model(settings.model, get_settings().model_cache)
    return LlamaCppModel(path, n_ctx=settings.n_ctx, n_seq_max=n_seq_max, n_batch=settings.n_batch, n_threads=threads)


def draft_prompts(n: int) -> list[ChatPrompt]:
    """The product's drafter prompts (prompts/drafter.md) for ONE question, each with a different pair of
    passages from the pool, exactly as the graph builds them: question of CASES[0], subsets (0,1), (0,2), ..."""
    pool = _passages()
    question = CASES[0][0]
    pairs = [(0, j) for j in range(1, len(pool))]
    template = prompting.load("drafter")
    return [template.chat(passages=format_passages([pool[a], pool[b]]), question=question) for a, b in pairs[:n]]


def bench_drafter(
    n: int, max_tokens: int, threads: int, repeat: int = REPEAT
) -> tuple[list[Row], list[Generation], float]:
    """Batched vs sequential generation on the same prompts; returns rows, drafts and the speed-up."""
    settings = get_settings().drafter
    model = _load(settings, threads, max(settings.n_seq_max, n))
    try:
        prompts = draft_prompts(n)
        model.generate(prompts[:1], max_tokens=4)  # warm-up
        n_prompt = sum(model.count_tokens(p) for p in prompts)
        (batched, t_batched), (sequential, t_seq) = _best_of(
            [
                lambda: model.generate(prompts, max_tokens=max_tokens),
                lambda: model.generate_sequential(prompts, max_tokens=max_tokens),
            ],
            repeat,
        )
        same = sum(b.text == s.text for b, s in zip(batched, sequential, strict=True))
        gen_tokens = sum(g.n_tokens for g in batched)
        rows = [
            Row(f"drafter {model.name[:22]}: batched x{n}", t_batched, gen_tokens, "gen tok/s"),
            Row(f"drafter {model.name[:22]}: sequential x{n}", t_seq, gen_tokens, "gen tok/s"),
            Row("drafter: prompt tokens per run", t_batched, n_prompt, "(info)"),
        ]
        sys.stdout.write(f"drafter: {same}/{n} drafts identical batched vs sequential\n")
        return rows, batched, t_seq / t_batched
    finally:
        model.close()


def _score_requests(question: str, drafts: Sequence[str], context: str) -> list[ScoreRequest]:
    """The product's verifier requests (prompts/verifier.md); ``context`` optionally puts passages in the prefix."""
    template = prompting.load("verifier")
    base = template.chat(question=question)
    prompt = base
    if context:
        user = Message(role="user", content=context + base.messages[-1].content)
        prompt = ChatPrompt(messages=(*base.messages[:-1], user), prefill=base.prefill)
    followup = (Message(role="user", content=template.text("followup")),)
    requests = []
    for d in drafts:
        reply = parse_reply(d)
        continuation = template.text("continuation", answer=reply.answer, rationale=reply.rationale)
        requests.append(
            ScoreRequest(prompt=prompt, continuation=continuation, followup=followup, candidates=("Yes", "No"))
        )
    return requests


def _score_pass(model: LlamaCppModel, requests: Sequence[ScoreRequest], cache: bool) -> list[ScoreResult]:
    model.prefix_cache = cache
    model.reset_prefix_cache()
    return model.score(requests)


def bench_verifier(drafts: Sequence[str], threads: int, repeat: int = REPEAT) -> tuple[list[Row], dict[str, float]]:
    """Scoring the drafts (ρ_sc + ρ_sr in one pass) with and without the prefix cache."""
    settings = get_settings().verifier
    model = _load(settings, threads, 1)
    rows: list[Row] = []
    ratios: dict[str, float] = {}
    question, p1, p2 = CASES[0]
    try:
        model.score(_score_requests("warm-up", ["x"], ""))
        for label, context in (("question only", ""), ("question + 2 passages", f"[1] {p1}\n[2] {p2}\n")):
            requests = _score_requests(question, drafts, context)
            (cold, t_cold), (warm, t_warm) = _best_of(
                [
                    lambda r=requests: _score_pass(model, r, cache=False),  # type: ignore[misc]
                    lambda r=requests: _score_pass(model, r, cache=True),  # type: ignore[misc]
                ],
                repeat,
            )
            max_diff = max(abs(a.logprob - b.logprob) for a, b in zip(cold, warm, strict=True))
            n_tokens = sum(r.prompt_tokens for r in cold)
            cached = sum(r.cached_tokens for r in warm)
            rows.append(Row(f"verifier, {label}: no prefix cache", t_cold, n_tokens, "tok/s"))
            rows.append(Row(f"verifier, {label}: prefix cache", t_warm, n_tokens, "tok/s"))
            sys.stdout.write(f"verifier ({label}): {cached}/{n_tokens} tokens reused, max |Δ logprob| {max_diff:.4f}\n")
            ratios[label] = t_cold / t_warm
    finally:
        model.close()
    return rows, ratios


def main(argv: Sequence[str] | None = None) -> int:
    """Run both benchmarks and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drafts", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--threads", type=int, default=get_settings().llm_threads)
    parser.add_argument("--repeat", type=int, default=REPEAT, help="Runs per measurement (fastest kept).")
    args = parser.parse_args(argv)
    repeat = max(1, args.repeat)

    draft_rows, drafts, speedup = bench_drafter(args.drafts, args.max_tokens, args.threads, repeat)
    # Score the drafts as the verifier would see them: "Rationale: ..." as written by the drafter.
    verify_rows, ratios = bench_verifier([f"Rationale:{g.text}" for g in drafts], args.threads, repeat)

    out = sys.stdout
    out.write(
        f"\nthreads={args.threads}, drafts={args.drafts}, max_tokens={args.max_tokens}, "
        f"best of {repeat} (interleaved)\n"
    )
    out.write(f"| {'run':48s} | {'seconds':>8s} | {'tokens':>7s} | {'rate':>18s} |\n")
    out.write(f"|{'-' * 50}|{'-' * 10}|{'-' * 9}|{'-' * 20}|\n")
    for row in (*draft_rows, *verify_rows):
        out.write(row.render() + "\n")
    out.write(f"\nbatched generation speed-up over sequential: {speedup:.2f}x\n")
    for label, ratio in ratios.items():
        out.write(f"prefix cache speed-up when scoring ({label}): {ratio:.2f}x\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
