"""``RecommendFamily``: what the fit pipeline and a finished run ask of interaction logs (see ``families.base``)."""

from __future__ import annotations

from pathlib import Path

from deepstrata.families.base import Family

TASK = "recommendation"
MODELS = ("sasrec", "mf")
LOG_NAMES = ("u.data", "ratings.dat", "ratings.csv")  # MovieLens interaction logs


class RecommendFamily(Family):
    name = "recommend"
    task = TASK
    models = MODELS
    expects = "the run's own interaction log"

    def claims(self, data) -> bool:
        """A MovieLens log by its name, or a data object that says it is an interaction log."""
        if data is not None and not isinstance(data, (str, Path)):
            return getattr(data, "task", None) == "recommend"
        return isinstance(data, (str, Path)) and Path(data).name.lower() in LOG_NAMES

    # --- a finished run -----------------------------------------------------------------
    def evaluate(self, run, data, data_dir):
        from deepstrata.families.recommend.recommendation import evaluate_recommender

        return evaluate_recommender(run, data)

    def recommend(self, run, user, k: int):
        from deepstrata.families.recommend.recommendation import recommend

        return recommend(run, user, k)

    def similar(self, run, item, k: int):
        from deepstrata.families.recommend.recommendation import similar

        return similar(run, item, k)

    def update(self, run, data, out, epochs, quiet):
        from deepstrata.families.recommend.recommendation import update_run

        return update_run(run, data, out=out, epochs=epochs, quiet=quiet)[0].path

    def inspect_sample(self, run, data, *, samples: int, seed: int, data_dir):
        from deepstrata.families.recommend.inspect import load_user_sample

        return load_user_sample(run, data, samples=samples, seed=seed)

    def inspect_views(self, result, model, control, sample, names, *, maximize: bool, seed: int, token,
                      batch_size: int) -> None:
        from deepstrata.families.recommend.inspect import item_views

        item_views(result, model, control, sample, seed=seed)

    def features(self, run, x, layer: str, *, data_dir, batch_size: int):
        """A user layer for users (``x`` ids, or the run's source for every user); ``item_embedding`` is the
        item table, one row per item."""
        from deepstrata.families.recommend.inspect import item_table, user_ids, user_inputs
        from deepstrata.inspect.taps import extract

        if layer == "item_embedding":
            return item_table(run, x)
        ids = user_ids(run, x)
        x, mask = user_inputs(run, x)
        return extract(run.model, x, [layer], mask=mask, trim=False, batch_size=batch_size).pooled[layer], ids
