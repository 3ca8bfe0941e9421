"""The loop of the fuzz benches: mutated inputs for a while, counting outcomes.

`fuzz(make_case, attempt, own_error, seconds)` calls attempt(make_case()) until `seconds`
have passed; an attempt that returns is "accepted", one that raises `own_error` (the
package's error for that input) is counted by its name, anything else is collected as a
failure (type -> first message). Returns (cases, outcomes, failures, slowest case in s,
total s); `report` prints them with the peak memory.
"""
import resource
import time


def fuzz(make_case, attempt, own_error, seconds):
    outcomes = {"accepted": 0, own_error.__name__: 0}
    failures = {}
    slowest = 0.0
    cases = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        case = make_case()
        cases += 1
        t = time.perf_counter()
        try:
            attempt(case)
            outcomes["accepted"] += 1
        except own_error:
            outcomes[own_error.__name__] += 1
        except Exception as e:                      # noqa: BLE001 - what a fuzz looks for
            failures.setdefault(type(e).__name__, str(e)[:200])
        slowest = max(slowest, time.perf_counter() - t)
    return cases, outcomes, failures, slowest, time.perf_counter() - start


def report(what, result):
    """Print a fuzz result; the exit status (1 when anything but the own error escaped)."""
    cases, outcomes, failures, slowest, seconds = result
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{cases} {what} in {seconds:.0f} s: {outcomes}; slowest {slowest:.2f} s; "
          f"peak {peak:.0f} MB")
    print(f"other exceptions: {failures or 'none'}")
    return 1 if failures else 0
