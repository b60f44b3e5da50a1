"""``RecommendFamily``: what the fit pipeline and a finished run ask of interaction logs (see ``families.base``)."""

from __future__ import annotations

from pathlib import Path

from deepstrata.errors import ConfigError
from deepstrata.families.base import Built, Family, FitContext, Prepared
from deepstrata.model_names import RECOMMEND_MODELS

TASK = "recommendation"
MODELS = RECOMMEND_MODELS
LOG_NAMES = ("u.data", "ratings.dat", "ratings.csv")  # MovieLens interaction logs


class RecommendFamily(Family):
    name = "recommend"
    task = TASK
    models = MODELS
    expects = "the run's own interaction log"
    # bf16 under ``--precision auto`` where native, as images and texts: BENCHMARKS.md "bf16 against fp32"
    # (MovieLens 100K, SASRec 5 epochs: NDCG@10 0.0752 in bf16, 0.0718 in fp32, within a seed's spread).

    def claims(self, data) -> bool:
        """A MovieLens log by its name, or a data object that says it is an interaction log."""
        if data is not None and not isinstance(data, (str, Path)):
            return getattr(data, "task", None) == "recommend"
        return isinstance(data, (str, Path)) and Path(data).name.lower() in LOG_NAMES

    # --- fit (families.recommend.fit) ---------------------------------------------------
    def resolve_config(self, data, model, config, overrides: dict):
        from deepstrata.families.recommend.config import resolve_recommend_config

        return resolve_recommend_config(config, data, model, overrides)

    def read(self, cfg, data) -> Prepared:
        from deepstrata.families.recommend import fit

        return fit.read(cfg)

    def describe(self, cfg, prepared: Prepared, load_seconds: float) -> list[str]:
        from deepstrata.families.recommend import fit

        return fit.describe(prepared, load_seconds)

    def build(self, cfg, prepared: Prepared, fit: FitContext) -> Built:
        from deepstrata.families.recommend.fit import build

        return build(cfg, prepared, fit)

    def write_records(self, cfg, prepared: Prepared, built: Built, fit: FitContext) -> None:
        from deepstrata.families.recommend.fit import write_records

        write_records(cfg, prepared, built, fit)

    def score(self, cfg, prepared: Prepared, built: Built, result, fit: FitContext) -> list[dict]:
        from deepstrata.families.recommend.fit import score

        return score(cfg, prepared, built, result, fit)

    def baselines(self, cfg, prepared: Prepared, built: Built, fit: FitContext) -> tuple[list[dict], dict]:
        from deepstrata.families.recommend.fit import baselines

        return baselines(cfg, prepared, fit.quiet), {}

    def comparison(self, cfg, prepared: Prepared, rows: list[dict]) -> dict:
        from deepstrata.families.recommend.fit import comparison

        return comparison(cfg, prepared, rows)

    def report_sections(self, cfg, prepared: Prepared, built: Built, rows: list[dict]) -> list[tuple[str, str]]:
        from deepstrata.families.recommend.fit import report_sections

        return report_sections(prepared)

    # --- a finished run (families.recommend.serve, .update) -----------------------------
    def export(self, run):
        from deepstrata.families.recommend.export import export_plan

        return export_plan(run)

    def evaluate(self, run, data, data_dir):
        from deepstrata.families.recommend.serve import evaluate_recommender

        return evaluate_recommender(run, data)

    def recommend(self, run, user, k: int):
        from deepstrata.families.recommend.serve import recommend

        return recommend(run, user, k)

    def similar(self, run, item, k: int):
        from deepstrata.families.recommend.serve import similar

        return similar(run, item, k)

    def update(self, run, data, out, epochs, quiet, replay=None):
        from deepstrata.families.recommend.update import update_run

        if replay is not None:
            raise ConfigError(f"--replay: {run.path} is {run.kind}, whose update keeps every old interaction; "
                              "replay is for image and text runs")

        path, _ = update_run(run, data, out=out, epochs=epochs, quiet=quiet)
        return path

    def update_summary(self, record: dict) -> list[str]:
        lines = [f"added {record['new_events']} events ({record['new_users']} new users, {record['new_items']} new "
                 f"items) in {record['seconds']:.1f}s, {record['epochs']} epochs"]
        for when in ("before", "after"):
            metrics = "  ".join(f"{k}={v:.4f}" for k, v in record[when].items())
            lines.append(f"{when:>6}: {metrics}")
        return lines

    def inspect_sample(self, run, data, *, samples: int, seed: int, data_dir):
        from deepstrata.families.recommend.inspect import load_user_sample

        return load_user_sample(run, data, samples=samples, seed=seed)

    def inspect_views(self, result, model, control, sample, names, *, maximize: bool, seed: int, token,
                      batch_size: int) -> None:
        from deepstrata.families.recommend.inspect import item_views

        item_views(result, model, control, sample, seed=seed)

    def embed_source(self, run, data, layer: str, *, rows, column, data_dir, batch_size: int):
        from deepstrata.families.recommend.embed import embed_source

        return embed_source(run, data, layer, rows=rows, column=column, data_dir=data_dir, batch_size=batch_size)

    def embed_query(self, run, query, layer: str, *, rows: str, batch_size: int):
        from deepstrata.families.recommend.embed import embed_query

        return embed_query(run, query, layer, rows=rows, batch_size=batch_size)

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
