"""atelier's engine: Optuna searches over Keras image classifiers, recorded in MLflow."""
