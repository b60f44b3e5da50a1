"""What a fit sets going before torch is imported: the scikit-learn helper of its baselines.

Kept apart from ``deepstrata.api`` because importing the API imports torch, and the point is
to start the helper first (``deepstrata.baselines.helper``: scikit-learn's import then runs
beside torch's, on another core). The program (``cli.run``) calls ``before_fit`` first thing in
``fit`` and ``transfer``; nothing else needs it, and a fit without it runs its baselines in its
own process.
"""

from __future__ import annotations

import os


def before_fit(baselines: bool | None, devices: int | None) -> None:
    """Start the baselines' helper unless the fit skips baselines or is not the process that fits them.

    ``--devices N`` (N > 1) launches worker processes that fit in this one's place, and under
    torchrun only rank 0 fits the baselines; neither starts a helper here.
    """
    if baselines is False or (devices or 1) > 1 or os.environ.get("RANK", "0") != "0":
        return
    from deepstrata.baselines import helper

    helper.start()
