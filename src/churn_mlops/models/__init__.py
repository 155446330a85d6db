"""The model layer: training, evaluation, plots and the model card."""
