"""Classical pipelines on hand-engineered features, evaluated on the same split as the learned models."""
