"""Jobs that wire the layers together: training and the end-to-end pipeline."""
