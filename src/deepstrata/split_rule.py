"""The split rule in words: recorded by the data split and by the baselines that choose their C without one.

Its own module, free of torch, because the baselines run in a helper process that imports no
torch (``deepstrata.baselines.helper``): reading the rule from ``deepstrata.data.split`` there
imported torch (~2 s) inside the baseline's timed fit.
"""

RULE = ("each class gives round(test_fraction x its examples) to test (unless the data has an official test "
        "split), then round(val_fraction x the rest) to validation, and keeps at least one for training")
