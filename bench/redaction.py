"""Redaction cost: `secrets.redact` over 1 MB of text, next to a plain `str.replace` of one secret over the
same text in the same run (the floor any redaction pays: one pass over the text). Texts: log-like lines
without any secret; the same with registered secrets, URL passwords and key=value passwords sprinkled in;
and the shapes that made the old patterns quadratic (a long run of letters, "x://" before one, many
unclosed "pwd={"). Redaction must stay linear: the ratio does not grow with the size.

    python -m bench.redaction [--mb 1] [--secrets 20] [--repeat 3]
"""

from __future__ import annotations

import argparse
import random
import string
import time

from bench.common import emit, table

from agent.secrets import Redactor  # noqa: E402


def best_of(repeat: int, fn) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def log_text(size: int, rng: random.Random, inserts: list[str]) -> str:
    words = ["POST", "https://crm.example/hook", "HTTP", "503", "retrying", "target", "crm", "position",
             "00000000016B3748:00000003", "customer", "order", "status", "changed", "host=db.local", "user=cdc"]
    out, n = [], 0
    while n < size:
        line = " ".join(rng.choice(words) for _ in range(12))
        if inserts and rng.random() < 0.2:
            line += " " + rng.choice(inserts)
        out.append(line)
        n += len(line) + 1
    return "\n".join(out)[:size]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=1.0)
    ap.add_argument("--secrets", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    size = int(args.mb * 1_000_000)
    rng = random.Random(7)
    red = Redactor()
    values = ["".join(rng.choices(string.ascii_letters + string.digits, k=rng.randint(8, 40)))
              for _ in range(args.secrets)]
    for v in values:
        red.register(v)
    red.register_url(f"https://hooks.example/in?token={values[0]}&sig={values[1]}")
    leaks = values + [f"postgresql://cdc:{values[2]}@db/erp", f"password={values[3]}", f"PWD={{{values[4]}}}",
                      f"GET /in?token={values[0]}"]
    texts = {
        "log lines, no secret": log_text(size, rng, []),
        "log lines with secrets": log_text(size, rng, leaks),
        "one run of letters": "a" * size,
        "x:// then letters": "x://" + "a" * (size - 4),
        "unclosed pwd={ repeated": "pwd={" * (size // 5),
    }
    rows = []
    for name, text in texts.items():
        ref = best_of(args.repeat, lambda text=text: text.replace(values[0], "***"))
        took = best_of(args.repeat, lambda text=text: red.redact(text))
        out = red.redact(text)
        assert not any(v in out for v in values), f"{name}: a secret survived"
        fig = {"scenario": "redaction", "text": name, "bytes": len(text.encode()), "redact_seconds": round(took, 4),
               "str_replace_seconds": round(ref, 5), "ratio": round(took / ref, 1) if ref else None}
        emit(fig)
        rows.append((name, fig["bytes"], f"{took * 1000:.1f} ms", f"{ref * 1000:.2f} ms", fig["ratio"]))
    table(rows, ("text", "bytes", "redact", "str.replace (same run)", "ratio"))


if __name__ == "__main__":
    main()
