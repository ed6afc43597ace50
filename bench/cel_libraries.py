"""Why common-expression-language: the cost of one three-clause condition.

    .venv/bin/python bench/cel_libraries.py
    (.venv/bin/pip install cel-python first to compare with the pure-Python one)

Prints microseconds per evaluation for each library found, with the request
data converted once (as routing does) and converted on every call.
"""

from __future__ import annotations

import timeit

EXPRESSION = 'context.amount >= 1000.0 && context.currency == "USD" && action.startsWith("inv")'
DATA = {
    "action": "invoice.discrepancy",
    "context": {"amount": 1240.0, "currency": "USD", "vendor": "Acme"},
    "payload": {"invoice": "INV-1042"},
}
N = 20_000


def rust_backed() -> None:
    import cel

    program = cel.compile(EXPRESSION)
    context = cel.Context()
    for name, value in DATA.items():
        context.add_variable(name, value)
    assert program.execute(context) is True
    once = timeit.timeit(lambda: program.execute(context), number=N) / N * 1e6
    every = timeit.timeit(lambda: program.execute(DATA), number=N) / N * 1e6
    print(f"common-expression-language: {once:.2f} us (converted once), {every:.2f} us (per call)")


def pure_python() -> None:
    try:
        import celpy
    except ImportError:
        print("cel-python: not installed (pip install cel-python to compare)")
        return
    env = celpy.Environment()
    program = env.program(env.compile(EXPRESSION))
    activation = celpy.json_to_cel(DATA)
    assert bool(program.evaluate(activation)) is True
    n = N // 10
    once = timeit.timeit(lambda: program.evaluate(activation), number=n) / n * 1e6
    every = timeit.timeit(lambda: program.evaluate(celpy.json_to_cel(DATA)), number=n) / n * 1e6
    print(f"cel-python:                 {once:.2f} us (converted once), {every:.2f} us (per call)")


if __name__ == "__main__":
    rust_backed()
    pure_python()
