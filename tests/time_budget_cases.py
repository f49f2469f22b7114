"""Epoch times and the epochs a 1-minute time budget lets run (`cli.past_budget`).

Shared by the cross-entropy budget (tests/test_faults.py) and the self-critical one
(tests/test_self_critical.py): the two stages stop by the same rule.
"""

# (seconds each epoch takes, epochs run): at most 4 epochs are asked for.
TIME_BUDGET_CASES = [
    # 20 s epochs: after 2 (40 s) a third would end at 60 s, inside the minute.
    ([20, 20, 20, 20], 3),
    # A slower second epoch: after it (50 s), another as long would end at 80 s.
    ([20, 30, 10, 10], 2),
    ([70, 10, 10, 10], 1),  # past the budget already: one epoch, no more
]
