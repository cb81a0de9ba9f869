"""Time and memory of `suggest` on one long text: the first N documents of the synthetic backlog
(bench.synthetic_backlog, seed 1) joined into a single text, for each N, each in a fresh process.

Reports the text's characters and sentences, the seconds of `suggest_article` on it (the model loaded and
warmed up on one short document first), and the peak resident memory before and after (ru_maxrss), so the
difference is what scoring the long text held at most. Prints JSON.

    python scripts/bench_long_document.py --docs 100 --docs 400
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def one(n: int, model: str | None) -> dict:
    import disarm_tagger
    from disarm_tagger import bench, text

    tagger = disarm_tagger.load(model) if model else disarm_tagger.load()
    docs = [d["text"] for d in bench.synthetic_backlog(n, seed=1)]
    tagger.suggest_article(docs[0])  # warm up: encoder session, spaCy
    long_text = "\n\n".join(docs)
    sentences = len(text.prepare(long_text).units)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    started = time.perf_counter()
    article = tagger.suggest_article(long_text)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    return {"documents": n, "characters": len(article.text), "sentences": sentences, "seconds": round(seconds, 2),
            "peak_mib_before": before, "peak_mib_after": after, "top": article.suggestions[0].technique_id}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, action="append", help="documents joined into one text (repeatable)")
    parser.add_argument("--model", help="model folder (default: the default model)")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the child process: one size
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.model)))
        return
    runs = []
    for n in args.docs or [100, 400]:
        child = [sys.executable, __file__, "--one", str(n)] + (["--model", args.model] if args.model else [])
        runs.append(json.loads(subprocess.run(child, check=True, capture_output=True, text=True).stdout))
    print(json.dumps({"command": " ".join(["scripts/bench_long_document.py", *sys.argv[1:]]), "runs": runs},
                     indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
