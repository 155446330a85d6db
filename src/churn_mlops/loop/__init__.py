"""The closed loop: from monitoring results to a retrained, gated and promoted model.

`rules.decide` says whether to retrain (pure); `data.training_rows` builds what to train on;
`job.run_loop` runs it all under a lock; `schedule` runs it, or any job, on a cron expression.
"""
