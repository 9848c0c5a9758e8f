"""One benchmark measurement in a fresh process; prints a JSON object on its last line.

    python bench/worker.py PATH MODEL --threads 2 [--n-prompt 512 --n-gen 128]

PATH is one of:
  core         a Python decode loop on llamabind._core (decode_tokens + SamplerChain.sample)
  llama        llamabind.Llama.create_completion, greedy
  llama-sample llamabind.Llama.create_completion, default sampler chain (seeded)
  llama-stream llamabind.Llama.create_completion(stream=True), greedy
  lcp, lcp-sample, lcp-stream   the same through llama-cpp-python (run with its venv)
  embed / lcp-embed             embeddings of a batch of sentences
Reported: pp_tps (prompt processing), tg_tps (generation, excluding the prompt), ttft_ms
(time to first token of an n_prompt-token prompt), load_ms, maxrss_mb, base_rss_mb (resident
memory after importing the library, before loading the model: the interpreter's share), n_gen
(tokens actually generated).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Callable
from typing import Any

# Random-looking but fixed text: pp/ttft prompts are cut from it to exactly n tokens.
FILLER = (
    "The history of astronomy spans many civilizations, from Babylonian tablets recording the motions of "
    "planets to Greek models of nested spheres, Islamic observatories refining star catalogues, and the "
    "telescopes of early modern Europe that revealed moons around Jupiter and phases of Venus. "
)
# Counting keeps a greedy generation going for the whole tg run.
COUNTING = "1, 2, 3, 4, 5, 6, 7, 8,"


def sentences(n: int) -> list[str]:
    words = FILLER.split()
    return [" ".join(words[(i * 7) % 40:(i * 7) % 40 + 12]) for i in range(n)]


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def rss_now_mb() -> float:
    """Resident memory now (the interpreter and imported modules, before any model is loaded)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def timed_load(load: Callable[[], Any]) -> tuple[Any, dict[str, float]]:
    """load()'s result, with its load_ms and the resident memory before it (base_rss_mb)."""
    base = rss_now_mb()
    t = time.perf_counter()
    loaded = load()
    return loaded, {"load_ms": (time.perf_counter() - t) * 1e3, "base_rss_mb": base}


def run_llama(llama_class: Any, args: argparse.Namespace) -> dict[str, Any]:
    """A high-level path (llama, lcp, their -sample, -stream and embed variants) through
    llama_class: llamabind.Llama or llama_cpp.Llama, which take the same keywords."""
    llm, load = timed_load(lambda: llama_class(
        args.model, n_ctx=args.n_prompt + args.n_gen + 64, n_batch=512, n_ubatch=512, n_threads=args.threads,
        n_threads_batch=args.threads, verbose=False,
        flash_attn=None if args.flash_attn < 0 else bool(args.flash_attn),
        embedding=args.path.endswith("embed")))
    return high_level(llm, args, sample=args.path.endswith("-sample"), stream=args.path.endswith("-stream")) | load


def run_llamabind(args: argparse.Namespace) -> dict[str, Any]:
    import llamabind as lb

    if args.path == "core":
        model, load = timed_load(lambda: lb.Model(args.model))
        return core_loop(lb, model, args) | load
    return run_llama(lb.Llama, args)


def run_lcp(args: argparse.Namespace) -> dict[str, Any]:
    import llama_cpp

    return run_llama(llama_cpp.Llama, args)


def prompt_of(tokenize: Any, n: int) -> list[int]:
    """Exactly n tokens of FILLER text (tokenize: bytes -> token ids)."""
    tokens: list[int] = []
    text = FILLER
    while len(tokens) < n:
        tokens = tokenize(text.encode())
        text += FILLER
    return tokens[:n]


def perf_hooks(llm: Any) -> tuple[Any, Any]:
    """(reset, read) for llama.cpp's perf counters of llm's context, in either library."""
    if hasattr(llm, "_ctx") and hasattr(llm._ctx, "ctx"):  # llama-cpp-python: a ctypes context pointer
        import llama_cpp

        ptr = llm._ctx.ctx

        def read() -> dict[str, float]:
            d = llama_cpp.llama_perf_context(ptr)
            return {"t_eval_ms": d.t_eval_ms, "t_p_eval_ms": d.t_p_eval_ms, "n_eval": d.n_eval}

        return (lambda: llama_cpp.llama_perf_context_reset(ptr)), read
    return llm.ctx.perf_reset, llm.ctx.perf


def high_level(llm: Any, args: argparse.Namespace, sample: bool, stream: bool) -> dict[str, Any]:
    if args.path.endswith("embed"):
        batch = sentences(args.n_sentences)
        llm.embed(batch[:4])
        t = time.perf_counter()
        llm.embed(batch)
        return {"embed_per_s": len(batch) / (time.perf_counter() - t)}
    greedy = {"temperature": 0.0}
    sampled = {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "seed": 7}
    params = sampled if sample else greedy
    prompt = prompt_of(lambda b: llm.tokenize(b, add_bos=True), args.n_prompt)
    # Warm-up: one prompt and a few tokens.
    llm.create_completion(prompt, max_tokens=4, **greedy)
    # Prompt processing and time to first token: a fresh n_prompt-token prompt.
    llm.reset()
    t = time.perf_counter()
    first_at = None
    for chunk in llm.create_completion(prompt[:-1] + [prompt[-1]], max_tokens=1, stream=True, **greedy):
        first_at = first_at or time.perf_counter()
    pp_s = (first_at or time.perf_counter()) - t
    # Generation: a short counting prompt, n_gen tokens.
    counting = llm.tokenize(COUNTING.encode(), add_bos=True)
    llm.reset()
    t = time.perf_counter()
    llm.create_completion(counting, max_tokens=1, **params)
    t_prompt = time.perf_counter() - t
    llm.reset()
    perf_reset, perf = perf_hooks(llm)
    perf_reset()
    t = time.perf_counter()
    if stream:
        n = sum(1 for _ in llm.create_completion(counting, max_tokens=args.n_gen, stream=True, **params))
        n_gen = args.n_gen if n else 0
        out = None
    else:
        out = llm.create_completion(counting, max_tokens=args.n_gen, **params)
        n_gen = out["usage"]["completion_tokens"]
    total = time.perf_counter() - t
    tg_s = max(total - t_prompt, 1e-9)
    result = {"pp_tps": args.n_prompt / pp_s, "ttft_ms": pp_s * 1e3, "tg_tps": max(n_gen - 1, 1) / tg_s,
              "n_gen": n_gen}
    # In-process overhead, free of run-to-run noise: the wall time of the whole call minus the
    # time llama.cpp itself spent decoding (its own perf counters), per generated token.
    p = perf()
    result["inproc_overhead_us"] = (total * 1e3 - p["t_eval_ms"] - p["t_p_eval_ms"]) / max(p["n_eval"], 1) * 1e3
    return result


def core_loop(lb: Any, model: Any, args: argparse.Namespace) -> dict[str, Any]:
    vocab = model.vocab
    ctx = lb.Context(model, n_ctx=args.n_prompt + args.n_gen + 64, n_batch=512, n_ubatch=512,
                     n_threads=args.threads, n_threads_batch=args.threads,
                     flash_attn_type=lb.FlashAttnType.ENABLED if args.flash_attn else lb.FlashAttnType.DISABLED)
    sampler = lb.SamplerChain().add_greedy()
    prompt = prompt_of(lambda b: vocab.tokenize(b, add_special=True), args.n_prompt)
    ctx.decode_tokens(prompt, pos0=0)
    ctx.memory_clear()
    t = time.perf_counter()
    ctx.decode_tokens(prompt, pos0=0)
    ctx.logits_ith(-1)  # waits for the computation, which RPC devices run asynchronously
    pp_s = time.perf_counter() - t
    ctx.memory_clear()
    counting = vocab.tokenize(COUNTING, add_special=True)
    ctx.decode_tokens(counting, pos0=0)
    pos = len(counting)
    t = time.perf_counter()
    for _ in range(args.n_gen):
        token = sampler.sample(ctx)
        ctx.decode_tokens([token], pos0=pos)
        pos += 1
    tg_s = time.perf_counter() - t
    return {"pp_tps": args.n_prompt / pp_s, "tg_tps": args.n_gen / tg_s, "n_gen": args.n_gen}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("path")
    parser.add_argument("model")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-prompt", type=int, default=512)
    parser.add_argument("--n-gen", type=int, default=128)
    parser.add_argument("--n-sentences", type=int, default=64)
    parser.add_argument("--flash-attn", type=int, default=0)
    args = parser.parse_args()
    result = run_lcp(args) if args.path.startswith("lcp") else run_llamabind(args)
    result["maxrss_mb"] = maxrss_mb()
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
